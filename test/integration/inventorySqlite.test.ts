import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { SqliteInventory } from '../../src/inventory/sqlite/SqliteInventory.js';
import { inventoryContract } from '../support/inventoryContract.js';

const dir = mkdtempSync(join(tmpdir(), 'inventory-sqlite-'));
after(() => rmSync(dir, { recursive: true, force: true }));

let last = '';
inventoryContract(
  'SQLite',
  async () => {
    last = join(dir, `${randomBytes(6).toString('hex')}`, 'inventory.db');
    const inv = new SqliteInventory({ path: last });
    await inv.open();
    return inv;
  },
  {
    openSameStore: async () => {
      const inv = new SqliteInventory({ path: last });
      await inv.open();
      return inv;
    },
  },
);

// Separate processes, as cluster workers are: they migrate one fresh file at once, then race for each CRL number.
const racer = `
import { randomBytes } from 'node:crypto';
import { SqliteInventory } from ${JSON.stringify(fileURLToPath(new URL('../../src/inventory/sqlite/SqliteInventory.ts', import.meta.url)))};
const inv = new SqliteInventory({ path: process.argv[1] });
await inv.open();
let wins = 0;
for (let n = 1n; n <= 15n; n++) {
  const latest = (await inv.latestCrl('ca', 1))?.crlNumber ?? 0n;
  if (latest >= n) continue;
  const ok = await inv.saveCrl({ issuerKeyName: 'ca', issuerKeyVersion: 1, crlNumber: n, thisUpdate: new Date(), nextUpdate: new Date(), revokedCount: 0, der: randomBytes(32) });
  if (ok) wins++;
}
await inv.close();
process.stdout.write(String(wins));
`;

test('four processes open one new file at once (migrations) and race for CRL numbers: each number stored once, none skipped', async () => {
  const path = join(dir, 'race', 'inventory.db');
  const run = promisify(execFile);
  const outs = await Promise.all(
    Array.from({ length: 4 }, () => run(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', racer, path], { timeout: 60_000 })),
  );
  const wins = outs.map((o) => Number(o.stdout));
  assert.equal(
    wins.reduce((a, b) => a + b, 0),
    15,
    `wins per process: ${wins.join(',')}`,
  );
  const inv = new SqliteInventory({ path });
  await inv.open();
  try {
    assert.equal((await inv.latestCrl('ca', 1))?.crlNumber, 15n);
  } finally {
    await inv.close();
  }
});
