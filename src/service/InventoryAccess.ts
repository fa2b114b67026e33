import { invalid, ServiceError } from '../errors.js';
import { type CertificateInventory, InvalidCursorError } from '../inventory/CertificateInventory.js';

export interface InventoryAccessOptions {
  /** Opens the inventory (openInventory with ISSUANCE_DB); undefined when ISSUANCE_DB is not set. */
  readonly open?: () => Promise<CertificateInventory>;
  /** After a failed open, requests within this time fail at once instead of trying again. Default 1000 ms. */
  readonly retryMs?: number;
  /**
   * Why opening or an operation failed (already free of secrets), for the operator's log; `operation`
   * is `open` or the name given to run() (a fixed set: a metric's label).
   */
  readonly onFailure?: (message: string, operation: string) => void;
  readonly onOpened?: () => void;
}

const RETRY_AFTER_SECONDS = 1;

/**
 * The worker's certificate inventory, opened at start and, if that failed (a database down),
 * opened again by the next request that needs it: signing never waits for the database, and
 * issuing answers 503 until it is back.
 */
/** What the last open or operation of this worker's inventory did: `ok`, or `unavailable` (it failed). */
export type InventoryStatus = 'ok' | 'unavailable' | 'not configured';

export class InventoryAccess {
  private inventory: CertificateInventory | undefined;
  private lastOutcome: 'ok' | 'unavailable' = 'unavailable';
  private opening: Promise<CertificateInventory> | undefined;
  private failedAt = Number.NEGATIVE_INFINITY;
  private closed = false;

  constructor(private readonly options: InventoryAccessOptions) {}

  get configured(): boolean {
    return this.options.open !== undefined;
  }

  /**
   * As of the last open or operation of this worker (no database call of its own: /readyz asks
   * often, and must not wait for a database that hangs). Not yet opened counts as unavailable.
   */
  status(): InventoryStatus {
    return this.configured ? this.lastOutcome : 'not configured';
  }

  /** At start: opens (runs migrations) if configured; a failure is reported, not thrown. */
  async start(): Promise<boolean> {
    if (!this.configured) return false;
    try {
      await this.get();
      return true;
    } catch {
      return false;
    }
  }

  /** The open inventory; a 503 ServiceError when there is none (not configured, or cannot be opened now). */
  async get(): Promise<CertificateInventory> {
    const open = this.options.open;
    if (!open) throw notConfigured();
    if (this.inventory) return this.inventory;
    if (this.closed) throw unavailable('the service is stopping');
    if (!this.opening) {
      if (Date.now() - this.failedAt < (this.options.retryMs ?? 1000)) throw unavailable('it could not be opened a moment ago');
      this.opening = open().then(
        (inv) => {
          this.opening = undefined;
          if (this.closed) {
            void inv.close();
            throw unavailable('the service is stopping');
          }
          this.inventory = inv;
          this.lastOutcome = 'ok';
          this.options.onOpened?.();
          return inv;
        },
        (e: unknown) => {
          this.opening = undefined;
          this.failedAt = Date.now();
          this.lastOutcome = 'unavailable';
          this.options.onFailure?.(`certificate inventory cannot be opened: ${(e as Error).message}`, 'open');
          throw unavailable('it cannot be opened');
        },
      );
    }
    return this.opening;
  }

  /** An operation on the inventory; any failure of it is a 503 (reported to onFailure), never a partial answer. */
  async run<T>(what: string, op: (inv: CertificateInventory) => Promise<T>): Promise<T> {
    const inv = await this.get();
    try {
      const out = await op(inv);
      this.lastOutcome = 'ok';
      return out;
    } catch (e) {
      // The caller's mistake (a ServiceError of the operation, a cursor not ours): the database answered.
      if (e instanceof ServiceError || e instanceof InvalidCursorError) this.lastOutcome = 'ok';
      if (e instanceof ServiceError) throw e;
      if (e instanceof InvalidCursorError) throw invalid('cursor: not a cursor this service handed out; start again without it');
      this.lastOutcome = 'unavailable';
      this.options.onFailure?.(`certificate inventory ${what} failed: ${(e as Error).message}`, what);
      throw unavailable(`${what} failed`);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    const inv = this.inventory ?? (await this.opening?.catch(() => undefined));
    this.inventory = undefined;
    await inv?.close();
  }
}

const notConfigured = (): ServiceError =>
  new ServiceError('INVENTORY_NOT_CONFIGURED', 'no certificate inventory: set ISSUANCE_DB (sqlite:<file> or postgres://...) to issue and list certificates');

const unavailable = (why: string): ServiceError =>
  new ServiceError('INVENTORY_UNAVAILABLE', `the certificate inventory (ISSUANCE_DB) is unavailable: ${why}; retry later`, RETRY_AFTER_SECONDS);
