import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import {
  type CertificateInventory,
  type CertificateRecord,
  InvalidCursorError,
  InventoryUnavailableError,
  type IssuedRecord,
  type ListPage,
  type ListQuery,
  REVOCATION_REASONS,
  type Revocation,
  type RevocationReason,
  type StoredCrl,
} from '../CertificateInventory.js';

export interface SqliteInventoryOptions {
  /** The database file; its directory is created if missing. */
  readonly path: string;
  /**
   * How long a write waits for another connection's write to finish (every cluster worker and the
   * admin CLI may hold the same file). better-sqlite3 is synchronous: the wait blocks this event loop,
   * so it stays short (default 1000 ms); SQLite writes here take milliseconds, a longer wait is a fault.
   */
  readonly busyTimeoutMs?: number;
}

/** Each entry moves the schema from user_version = index to index + 1. */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE certificates (
     seq INTEGER PRIMARY KEY AUTOINCREMENT,
     issuer_key_name TEXT NOT NULL,
     issuer_key_version INTEGER NOT NULL,
     serial_number TEXT NOT NULL,
     subject TEXT NOT NULL,
     subject_alt_names TEXT NOT NULL,
     profile TEXT NOT NULL,
     not_before INTEGER NOT NULL,
     not_after INTEGER NOT NULL,
     sha256 TEXT NOT NULL,
     certificate_der BLOB NOT NULL,
     client_id TEXT,
     request_id TEXT,
     issued_at INTEGER NOT NULL,
     revoked_at INTEGER,
     revocation_reason TEXT,
     UNIQUE (issuer_key_name, serial_number)
   );
   CREATE INDEX certificates_by_key ON certificates (issuer_key_name, seq);
   CREATE INDEX certificates_revoked ON certificates (issuer_key_name, issuer_key_version, revoked_at) WHERE revoked_at IS NOT NULL;
   CREATE TABLE crls (
     issuer_key_name TEXT NOT NULL,
     issuer_key_version INTEGER NOT NULL,
     crl_number INTEGER NOT NULL,
     this_update INTEGER NOT NULL,
     next_update INTEGER NOT NULL,
     revoked_count INTEGER NOT NULL,
     der BLOB NOT NULL,
     PRIMARY KEY (issuer_key_name, issuer_key_version, crl_number)
   );`,
];

interface CertificateRow {
  seq: number;
  issuer_key_name: string;
  issuer_key_version: number;
  serial_number: string;
  subject: string;
  subject_alt_names: string;
  profile: string;
  not_before: number;
  not_after: number;
  sha256: string;
  certificate_der: Buffer;
  client_id: string | null;
  request_id: string | null;
  issued_at: number;
  revoked_at: number | null;
  revocation_reason: string | null;
}

interface CrlRow {
  issuer_key_name: string;
  issuer_key_version: number;
  crl_number: bigint;
  this_update: number;
  next_update: number;
  revoked_count: number;
  der: Buffer;
}

function toRecord(r: CertificateRow): CertificateRecord {
  return {
    issuerKeyName: r.issuer_key_name,
    issuerKeyVersion: r.issuer_key_version,
    serialNumber: r.serial_number,
    subject: r.subject,
    subjectAltNames: JSON.parse(r.subject_alt_names) as string[],
    profile: r.profile,
    notBefore: new Date(r.not_before),
    notAfter: new Date(r.not_after),
    sha256: r.sha256,
    certificateDer: Buffer.from(r.certificate_der),
    ...(r.client_id !== null ? { clientId: r.client_id } : {}),
    ...(r.request_id !== null ? { requestId: r.request_id } : {}),
    issuedAt: new Date(r.issued_at),
    ...(r.revoked_at !== null && r.revocation_reason !== null
      ? { revocation: { revokedAt: new Date(r.revoked_at), reason: r.revocation_reason as RevocationReason } }
      : {}),
  };
}

// A cursor is the position (seq) of the last row of the page, base64url so that callers treat it as opaque.
const encodeCursor = (seq: number): string => Buffer.from(`s${seq}`).toString('base64url');
function decodeCursor(cursor: string): number {
  const text = /^[A-Za-z0-9_-]{1,40}$/.test(cursor) ? Buffer.from(cursor, 'base64url').toString('latin1') : '';
  const m = /^s([1-9][0-9]{0,15})$/.exec(text);
  if (!m?.[1]) throw new InvalidCursorError('cursor is not one this service handed out');
  return Number(m[1]);
}

/** SQLite file store (better-sqlite3): WAL, so that readers never wait for a writer and several processes share the file. */
export class SqliteInventory implements CertificateInventory {
  private db: Database.Database | undefined;

  constructor(private readonly options: SqliteInventoryOptions) {}

  /** Runs `fn` on the open database; any SQLite failure becomes InventoryUnavailableError (the caller answers 503). */
  private run<T>(what: string, fn: (db: Database.Database) => T): Promise<T> {
    try {
      if (!this.db?.open) throw new Error('the inventory is not open');
      return Promise.resolve(fn(this.db));
    } catch (e) {
      if (e instanceof InvalidCursorError || e instanceof InventoryUnavailableError) return Promise.reject(e);
      // SqliteError messages name the failure (database is locked, readonly, disk I/O), never data.
      const reason = e instanceof Error ? `${(e as { code?: string }).code ?? e.name}: ${e.message}` : String(e);
      return Promise.reject(new InventoryUnavailableError(`certificate inventory (SQLite) ${what} failed: ${reason}`, { cause: e }));
    }
  }

  async open(): Promise<void> {
    if (this.db?.open) return;
    let db: Database.Database | undefined;
    try {
      mkdirSync(dirname(this.options.path), { recursive: true });
      db = new Database(this.options.path);
      // The busy handler first: switching to WAL and migrating take locks another process may hold.
      db.pragma(`busy_timeout = ${Math.max(0, Math.trunc(this.options.busyTimeoutMs ?? 1000))}`);
      db.pragma('journal_mode = WAL');
      // FULL: a commit is on disk before record() resolves, as "recorded before returned" promises.
      db.pragma('synchronous = FULL');
      db.pragma('foreign_keys = ON');
      migrate(db);
      this.db = db;
    } catch (e) {
      db?.close();
      const reason = e instanceof Error ? `${(e as { code?: string }).code ?? e.name}: ${e.message}` : String(e);
      throw new InventoryUnavailableError(`certificate inventory (SQLite) cannot be opened: ${reason}`, { cause: e });
    }
  }

  record(r: IssuedRecord): Promise<void> {
    return this.run('record', (db) => {
      db.prepare(
        `INSERT INTO certificates (issuer_key_name, issuer_key_version, serial_number, subject, subject_alt_names, profile,
           not_before, not_after, sha256, certificate_der, client_id, request_id, issued_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ).run(
        r.issuerKeyName,
        r.issuerKeyVersion,
        r.serialNumber,
        r.subject,
        JSON.stringify(r.subjectAltNames),
        r.profile,
        r.notBefore.getTime(),
        r.notAfter.getTime(),
        r.sha256,
        r.certificateDer,
        r.clientId ?? null,
        r.requestId ?? null,
        Date.now(),
      );
    });
  }

  get(issuerKeyName: string, serialNumber: string): Promise<CertificateRecord | undefined> {
    return this.run('get', (db) => {
      const row = db.prepare('SELECT * FROM certificates WHERE issuer_key_name = ? AND serial_number = ?').get(issuerKeyName, serialNumber) as
        | CertificateRow
        | undefined;
      return row ? toRecord(row) : undefined;
    });
  }

  list(q: ListQuery): Promise<ListPage> {
    return this.run('list', (db) => {
      const after = q.cursor !== undefined ? decodeCursor(q.cursor) : 0;
      const where = ['issuer_key_name = ?', 'seq > ?'];
      const params: (string | number)[] = [q.issuerKeyName, after];
      const now = q.now.getTime();
      const filter = (clause: string, ...values: number[]): void => {
        where.push(clause);
        params.push(...values);
      };
      if (q.status === 'revoked') filter('revoked_at IS NOT NULL');
      else if (q.status === 'expired') filter('revoked_at IS NULL AND not_after < ?', now);
      else if (q.status === 'valid') filter('revoked_at IS NULL AND not_after >= ?', now);
      if (q.expiresBefore !== undefined) filter('not_after < ?', q.expiresBefore.getTime());
      const limit = Math.min(1000, Math.max(1, Math.trunc(q.limit)));
      const rows = db.prepare(`SELECT * FROM certificates WHERE ${where.join(' AND ')} ORDER BY seq LIMIT ?`).all(...params, limit + 1) as CertificateRow[];
      const page = rows.slice(0, limit);
      const last = page[page.length - 1];
      return { items: page.map(toRecord), ...(rows.length > limit && last ? { nextCursor: encodeCursor(last.seq) } : {}) };
    });
  }

  revoke(issuerKeyName: string, serialNumber: string, revocation: Revocation): Promise<{ record: CertificateRecord; revokedNow: boolean } | undefined> {
    if (!(revocation.reason in REVOCATION_REASONS)) return Promise.reject(new TypeError(`unknown revocation reason '${revocation.reason}'`));
    return this.run('revoke', (db) =>
      db
        .transaction(() => {
          const changed = db
            .prepare(
              `UPDATE certificates SET revoked_at = ?, revocation_reason = ?
               WHERE issuer_key_name = ? AND serial_number = ? AND revoked_at IS NULL`,
            )
            .run(revocation.revokedAt.getTime(), revocation.reason, issuerKeyName, serialNumber).changes;
          const row = db.prepare('SELECT * FROM certificates WHERE issuer_key_name = ? AND serial_number = ?').get(issuerKeyName, serialNumber) as
            | CertificateRow
            | undefined;
          return row ? { record: toRecord(row), revokedNow: changed === 1 } : undefined;
        })
        .immediate(),
    );
  }

  revoked(issuerKeyName: string, issuerKeyVersion: number): Promise<readonly CertificateRecord[]> {
    return this.run('revoked', (db) =>
      (
        db
          .prepare(
            `SELECT * FROM certificates WHERE issuer_key_name = ? AND issuer_key_version = ? AND revoked_at IS NOT NULL
             ORDER BY revoked_at, seq`,
          )
          .all(issuerKeyName, issuerKeyVersion) as CertificateRow[]
      ).map(toRecord),
    );
  }

  issuingVersions(issuerKeyName: string): Promise<readonly number[]> {
    return this.run('issuingVersions', (db) =>
      (
        db.prepare('SELECT DISTINCT issuer_key_version AS v FROM certificates WHERE issuer_key_name = ? ORDER BY v').all(issuerKeyName) as {
          v: number;
        }[]
      ).map((r) => r.v),
    );
  }

  latestCrl(issuerKeyName: string, issuerKeyVersion: number): Promise<StoredCrl | undefined> {
    return this.run('latestCrl', (db) => {
      const row = db
        .prepare('SELECT * FROM crls WHERE issuer_key_name = ? AND issuer_key_version = ? ORDER BY crl_number DESC LIMIT 1')
        .safeIntegers(true)
        .get(issuerKeyName, issuerKeyVersion) as CrlRow | undefined;
      if (!row) return undefined;
      return {
        issuerKeyName: row.issuer_key_name,
        issuerKeyVersion: Number(row.issuer_key_version),
        crlNumber: BigInt(row.crl_number),
        thisUpdate: new Date(Number(row.this_update)),
        nextUpdate: new Date(Number(row.next_update)),
        revokedCount: Number(row.revoked_count),
        der: Buffer.from(row.der),
      };
    });
  }

  saveCrl(crl: StoredCrl): Promise<boolean> {
    return this.run('saveCrl', (db) =>
      db
        .transaction(() => {
          const row = db
            .prepare('SELECT MAX(crl_number) AS n FROM crls WHERE issuer_key_name = ? AND issuer_key_version = ?')
            .safeIntegers(true)
            .get(crl.issuerKeyName, crl.issuerKeyVersion) as { n: bigint | null };
          if (crl.crlNumber !== (row.n ?? 0n) + 1n) return false;
          db.prepare(
            `INSERT INTO crls (issuer_key_name, issuer_key_version, crl_number, this_update, next_update, revoked_count, der)
             VALUES (?, ?, ?, ?, ?, ?, ?)`,
          ).run(crl.issuerKeyName, crl.issuerKeyVersion, crl.crlNumber, crl.thisUpdate.getTime(), crl.nextUpdate.getTime(), crl.revokedCount, crl.der);
          return true;
        })
        // IMMEDIATE takes the write lock before the read, so two processes cannot both see the same latest number.
        .immediate(),
    );
  }

  async close(): Promise<void> {
    const db = this.db;
    this.db = undefined;
    if (db?.open) db.close();
  }
}

/** Brings the schema to the latest version in one IMMEDIATE transaction: a second process starting at once waits, then finds nothing to do. */
function migrate(db: Database.Database): void {
  db.transaction(() => {
    const current = db.pragma('user_version', { simple: true }) as number;
    if (current > MIGRATIONS.length) {
      throw new Error(`the database schema (version ${current}) is newer than this build knows (${MIGRATIONS.length})`);
    }
    for (let v = current; v < MIGRATIONS.length; v++) db.exec(MIGRATIONS[v] as string);
    db.pragma(`user_version = ${MIGRATIONS.length}`);
  }).immediate();
}
