/**
 * Issue 18: the PostgreSQL inventory against a real local server (Debian's postgresql package,
 * test/support/postgresServer.ts): what only a shared database has - migrations from instances
 * starting together, constraints that decide races between instances, the password kept out of
 * errors, an outage answered quickly and a pool that recovers after it.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { inspect } from 'node:util';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { type IssuedRecord, InventoryUnavailableError } from '../../src/inventory/CertificateInventory.js';
import { PostgresInventory } from '../../src/inventory/postgres/PostgresInventory.js';
import { inventoryContract } from '../support/inventoryContract.js';
import { type PostgresServer, POSTGRES_USER, startPostgresServer } from '../support/postgresServer.js';

let server: PostgresServer;
const opened: PostgresInventory[] = [];

async function inventory(
  url: string,
  o: { poolSize?: number; open?: boolean; connectTimeoutMs?: number; queryTimeoutMs?: number } = {},
): Promise<PostgresInventory> {
  const inv = new PostgresInventory({ url, poolSize: o.poolSize ?? 2, ...o });
  opened.push(inv);
  if (o.open !== false) await inv.open();
  return inv;
}

let serialCounter = 0;
function issued(issuerKeyName: string, serialNumber = `${(0x1000 + ++serialCounter).toString(16).toUpperCase()}`): IssuedRecord {
  const der = randomBytes(64);
  return {
    issuerKeyName,
    issuerKeyVersion: 1,
    serialNumber,
    subject: 'CN=pg.example',
    subjectAltNames: ['dns:pg.example'],
    profile: 'tls-server',
    notBefore: new Date('2026-01-01T00:00:00.000Z'),
    notAfter: new Date('2027-01-01T00:00:00.000Z'),
    sha256: createHash('sha256').update(der).digest('hex'),
    certificateDer: der,
  };
}

/** Rejects with the error, or fails when `p` resolves. */
async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  assert.fail('expected a rejection');
}

before(async () => {
  server = await startPostgresServer();
  console.log(`# PostgreSQL server: initdb + start in ${Math.round(server.startupMs)} ms on port ${server.port}`);
});

after(async () => {
  // The server first: a pool's close waits for its connections, which a frozen server never answers.
  server?.dispose();
  await Promise.allSettled(opened.map((i) => i.close()));
});

// The shared contract, each test on a database of its own; a second pool on it is the second instance.
let latestUrl: string | undefined;
inventoryContract(
  'PostgreSQL',
  async () => {
    latestUrl = await server.createDatabase('contract');
    return inventory(latestUrl);
  },
  {
    openSameStore: () => {
      if (!latestUrl) throw new Error('make() first');
      return inventory(latestUrl);
    },
  },
);

describe('PostgreSQL inventory: several instances on one database', () => {
  test('three instances opening a fresh database at once migrate it exactly once, and all work', async () => {
    const url = await server.createDatabase('migrate');
    const instances = await Promise.all([1, 2, 3].map(() => inventory(url, { open: false })));
    const results = await Promise.allSettled(instances.map((i) => i.open()));
    assert.deepEqual(
      results.map((r) => r.status),
      ['fulfilled', 'fulfilled', 'fulfilled'],
      inspect(results.filter((r) => r.status === 'rejected')),
    );
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      const versions = await c.query<{ version: number }>('SELECT version FROM inventory_migrations ORDER BY version');
      assert.deepEqual(
        versions.rows.map((r) => r.version),
        [1],
      );
    } finally {
      await c.end();
    }
    // Each instance writes, and each sees the others' records.
    const records = instances.map(() => issued('migrate-key'));
    await Promise.all(instances.map((inv, i) => inv.record(records[i] as IssuedRecord)));
    for (const inv of instances) {
      for (const r of records) assert.equal((await inv.get('migrate-key', r.serialNumber))?.sha256, r.sha256);
    }
    // A later open() finds nothing to do.
    await (instances[0] as PostgresInventory).open();
  });

  test('a serial recorded by two instances at once: one succeeds, the other is InventoryUnavailableError', async () => {
    const url = await server.createDatabase('serial');
    const [a, b] = await Promise.all([inventory(url), inventory(url)]);
    const r = issued('serial-key', 'ABCDEF01');
    const results = await Promise.allSettled([(a as PostgresInventory).record(r), (b as PostgresInventory).record({ ...r, sha256: '00'.repeat(32) })]);
    assert.equal(results.filter((x) => x.status === 'fulfilled').length, 1);
    const failed = results.find((x) => x.status === 'rejected');
    assert.ok(failed && failed.reason instanceof InventoryUnavailableError, inspect(failed));
    // The same serial under another issuer key is another certificate.
    await (a as PostgresInventory).record({ ...r, issuerKeyName: 'serial-key-2' });
  });

  test('CRL number N+1 stored by several instances at once: exactly one wins, and numbers never skip', async () => {
    const url = await server.createDatabase('crl');
    const instances = await Promise.all([1, 2, 3].map(() => inventory(url)));
    for (const number of [1n, 2n, 3n]) {
      const results = await Promise.all(
        instances.flatMap((inv) =>
          [0, 1].map((k) =>
            inv.saveCrl({
              issuerKeyName: 'crl-key',
              issuerKeyVersion: 1,
              crlNumber: number,
              thisUpdate: new Date(),
              nextUpdate: new Date(Date.now() + 3_600_000),
              revokedCount: k,
              der: randomBytes(32),
            }),
          ),
        ),
      );
      assert.equal(results.filter(Boolean).length, 1, `CRL ${number}: ${results}`);
      assert.equal((await (instances[2] as PostgresInventory).latestCrl('crl-key', 1))?.crlNumber, number);
    }
    const skip = await (instances[0] as PostgresInventory).saveCrl({
      issuerKeyName: 'crl-key',
      issuerKeyVersion: 1,
      crlNumber: 5n,
      thisUpdate: new Date(),
      nextUpdate: new Date(),
      revokedCount: 0,
      der: randomBytes(8),
    });
    assert.equal(skip, false);
  });
  test('paging while three instances record: no certificate is skipped (ids become visible in order)', async () => {
    const url = await server.createDatabase('paging');
    const writers = await Promise.all([1, 2, 3].map(() => inventory(url, { poolSize: 10 })));
    const reader = await inventory(url, { poolSize: 1 });
    const total = 1500;
    const recorded: string[] = [];
    let started = 0;
    let writing = true;
    const writes = Promise.all(
      writers.flatMap((w) =>
        Array.from({ length: 10 }, async () => {
          while (started < total) {
            started++;
            const r = issued('paging-key', randomBytes(8).toString('hex').toUpperCase().replace(/^0+/, ''));
            await w.record(r);
            recorded.push(r.serialNumber);
          }
        }),
      ),
    ).finally(() => {
      writing = false;
    });
    // Small pages, following nextCursor as far as it goes, then asking again from the last cursor
    // (a client polling for new certificates); the one pass after the writers finish ends it.
    const seen = new Set<string>();
    let cursor: string | undefined;
    for (let lastPass = false; ; ) {
      const page = await reader.list({ issuerKeyName: 'paging-key', limit: 2, now: new Date(), ...(cursor !== undefined ? { cursor } : {}) });
      for (const r of page.items) seen.add(r.serialNumber);
      if (page.nextCursor !== undefined) {
        cursor = page.nextCursor;
        continue;
      }
      if (lastPass) break;
      lastPass = !writing;
    }
    await writes;
    const missing = recorded.filter((s) => !seen.has(s));
    assert.equal(recorded.length, total);
    assert.deepEqual(missing, [], `${missing.length} of ${total} never listed`);
  });
});

describe('PostgreSQL inventory: failures', () => {
  test('a wrong password: open() is InventoryUnavailableError, and neither password is in it', async () => {
    const url = await server.createDatabase('auth');
    const wrong = `Wr0ng-${randomBytes(9).toString('base64url')}`;
    const inv = await inventory(url.replace(`:${server.passwordInUrl}@`, `:${wrong}@`), { open: false });
    const e = await rejection(inv.open());
    assert.ok(e instanceof InventoryUnavailableError, inspect(e));
    assert.match(e.message, /password authentication failed/);
    const shown = `${inspect(e)} ${JSON.stringify(e)} ${e.stack}`;
    assert.ok(!shown.includes(wrong) && !shown.includes(server.password) && !shown.includes(server.passwordInUrl), shown);
  });

  test('a server message that quotes the password (a database named like it) is redacted', async () => {
    const url = `postgres://${POSTGRES_USER}:${server.passwordInUrl}@127.0.0.1:${server.port}/${server.passwordInUrl}`;
    const e = await rejection((await inventory(url, { open: false })).open());
    assert.ok(e instanceof InventoryUnavailableError, inspect(e));
    assert.match(e.message, /\(3D000\): database "\*\*\*" does not exist/);
    assert.ok(!`${inspect(e)} ${e.stack}`.includes(server.password));
  });

  test('a URL the driver cannot parse: the error does not echo the password', async () => {
    const inv = await inventory(`postgres://${POSTGRES_USER}:${server.passwordInUrl}@127.0.0.1:99999/x`, { open: false });
    const e = await rejection(inv.record(issued('k')));
    assert.ok(e instanceof InventoryUnavailableError, inspect(e));
    assert.ok(!`${inspect(e)} ${e.stack}`.includes(server.password) && !`${inspect(e)} ${e.stack}`.includes(server.passwordInUrl));
  });

  test('server stopped: record() is InventoryUnavailableError within seconds; after restart the same pool works again', { timeout: 60_000 }, async () => {
    const url = await server.createDatabase('outage');
    const inv = await inventory(url, { poolSize: 2 });
    // Connections in the pool, so that the outage breaks live ones, not only new ones.
    await Promise.all([inv.record(issued('outage-key')), inv.record(issued('outage-key'))]);
    server.stop();
    try {
      for (const attempt of [1, 2, 3]) {
        const r = issued('outage-key');
        const t0 = performance.now();
        const e = await rejection(inv.record(r));
        const ms = performance.now() - t0;
        console.log(`# outage, record() attempt ${attempt}: ${e.name} after ${Math.round(ms)} ms: ${e.message}`);
        assert.ok(e instanceof InventoryUnavailableError, inspect(e));
        assert.ok(!`${inspect(e)} ${e.stack}`.includes(server.password));
        assert.ok(ms < 10_000, `answered after ${ms} ms`);
      }
    } finally {
      server.start();
    }
    const r = issued('outage-key');
    await inv.record(r);
    assert.equal((await inv.get('outage-key', r.serialNumber))?.serialNumber, r.serialNumber);
    const page = await inv.list({ issuerKeyName: 'outage-key', limit: 100, now: new Date() });
    assert.equal(page.items.length, 3);
  });

  // The timeout ends the test (and runs after()) if a call never answers.
  test('server frozen (accepts, never answers): record() fails after the query or connect timeout, not never', { timeout: 60_000 }, async () => {
    const url = await server.createDatabase('frozen');
    const inv = await inventory(url, { poolSize: 2, connectTimeoutMs: 1000, queryTimeoutMs: 1000 });
    await inv.record(issued('frozen-key'));
    server.freeze(true);
    try {
      // The first on a pooled connection (query timeout), the others on new ones once it is dropped (connect timeout).
      const outcomes = await Promise.all(
        [1, 2, 3].map(async () => {
          const t0 = performance.now();
          const e = await rejection(inv.record(issued('frozen-key')));
          return { e, ms: performance.now() - t0 };
        }),
      );
      for (const { e, ms } of outcomes) {
        console.log(`# frozen server, record(): ${e.name} after ${Math.round(ms)} ms: ${e.message}`);
        assert.ok(e instanceof InventoryUnavailableError, inspect(e));
        assert.ok(ms < 10_000, `answered after ${ms} ms`);
      }
    } finally {
      server.freeze(false);
    }
    await inv.record(issued('frozen-key'));
  });
});
