import { join } from 'node:path';
import { SqliteInventory } from '../../../src/inventory/sqlite/SqliteInventory.js';
import { revocationServiceSuite } from '../../support/revocationServiceSuite.js';

revocationServiceSuite('SQLite', async (dir) => {
  const inv = new SqliteInventory({ path: join(dir, 'inventory.db') });
  await inv.open();
  return inv;
});
