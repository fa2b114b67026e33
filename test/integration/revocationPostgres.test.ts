/**
 * RevocationService on PostgreSQL: the suite of test/unit/service/RevocationService.test.ts (there on
 * SQLite) against a real local server, two instances each with its own pool on one database.
 */
import { after, before } from 'node:test';
import { PostgresInventory } from '../../src/inventory/postgres/PostgresInventory.js';
import { type PostgresServer, startPostgresServer } from '../support/postgresServer.js';
import { revocationServiceSuite } from '../support/revocationServiceSuite.js';

let server: PostgresServer | undefined;
let url: Promise<string> | undefined;

before(async () => {
  server = await startPostgresServer();
});
after(() => server?.dispose());

revocationServiceSuite('PostgreSQL', async () => {
  if (!server) throw new Error('no PostgreSQL server');
  url ??= server.createDatabase('revocation');
  const inv = new PostgresInventory({ url: await url, poolSize: 2 });
  await inv.open();
  return inv;
});
