import type { InventoryTarget } from '../config/config.js';
import { type CertificateInventory, InventoryUnavailableError } from './CertificateInventory.js';
import { SqliteInventory } from './sqlite/SqliteInventory.js';

/**
 * The adapter ISSUANCE_DB names, opened (migrations run): SQLite (one host: every worker and
 * process shares the file) or PostgreSQL (several instances). Throws InventoryUnavailableError when
 * it cannot be opened; its message never holds the connection string's password.
 */
export async function openInventory(target: InventoryTarget): Promise<CertificateInventory> {
  const inventory = await createInventory(target);
  try {
    await inventory.open();
  } catch (e) {
    await inventory.close().catch(() => undefined);
    throw new InventoryUnavailableError(redactIn(errorText(e), target), { cause: e });
  }
  return inventory;
}

async function createInventory(target: InventoryTarget): Promise<CertificateInventory> {
  if (target.kind === 'sqlite') return new SqliteInventory({ path: target.path });
  // Loaded only when ISSUANCE_DB names PostgreSQL.
  const { PostgresInventory } = await import('./postgres/PostgresInventory.js');
  return new PostgresInventory({ url: target.url, ...(target.poolSize !== undefined ? { poolSize: target.poolSize } : {}) });
}

const errorText = (e: unknown): string => (e instanceof Error ? e.message : String(e));

/** `text` with the connection string's password (if any) replaced, wherever a driver may have quoted it. */
export function redactIn(text: string, target: InventoryTarget): string {
  if (target.kind !== 'postgres') return text;
  let out = text.replaceAll(target.url, target.redacted);
  try {
    const password = decodeURIComponent(new URL(target.url).password);
    if (password.length > 0) out = out.replaceAll(password, '***');
  } catch {
    // config.ts accepted only parsable URLs.
  }
  return out;
}
