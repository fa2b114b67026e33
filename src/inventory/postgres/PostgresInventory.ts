/**
 * The certificate inventory in PostgreSQL (the `pg` driver): for production and for several
 * instances sharing one database. Migrations run in open() under an advisory lock, so instances
 * starting together apply each exactly once; uniqueness and CRL numbering are the database's
 * constraints, not read-then-write checks. Every failure is an InventoryUnavailableError whose
 * message never contains the password of the connection string.
 */
import { createHash } from 'node:crypto';
import pg from 'pg';
import {
  type CertificateInventory,
  type CertificateRecord,
  type IssuedRecord,
  type ListPage,
  type ListQuery,
  type Revocation,
  type RevocationReason,
  type StoredCrl,
  InvalidCursorError,
  InventoryUnavailableError,
  REVOCATION_REASONS,
} from '../CertificateInventory.js';

export interface PostgresInventoryOptions {
  /** postgres://user:password@host:port/database (libpq's URL form, `?sslmode=` and the like included). */
  readonly url: string;
  /** Connections per instance (each service worker has its own pool). */
  readonly poolSize?: number;
  /** How long getting a connection may take before the call fails (an unreachable server). */
  readonly connectTimeoutMs?: number;
  /** Server-side statement_timeout and the client-side query timeout. */
  readonly queryTimeoutMs?: number;
}

export const POSTGRES_DEFAULTS = { poolSize: 4, connectTimeoutMs: 3000, queryTimeoutMs: 5000 } as const;

/** Taken (per database) while migrating: one instance migrates, the others wait, then find nothing to do. */
const MIGRATION_LOCK = 0x4853_4d31; // 'HSM1'

/** Applied in order, each once, recorded in inventory_migrations. Append only. */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE inventory_certificates (
     id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
     issuer_key_name TEXT NOT NULL,
     issuer_key_version INTEGER NOT NULL,
     serial_number TEXT NOT NULL,
     subject TEXT NOT NULL,
     subject_alt_names TEXT[] NOT NULL,
     profile TEXT NOT NULL,
     not_before TIMESTAMPTZ NOT NULL,
     not_after TIMESTAMPTZ NOT NULL,
     sha256 TEXT NOT NULL,
     certificate_der BYTEA NOT NULL,
     client_id TEXT,
     request_id TEXT,
     issued_at TIMESTAMPTZ NOT NULL,
     revoked_at TIMESTAMPTZ,
     revocation_reason TEXT,
     revocation_seq BIGINT,
     CONSTRAINT inventory_certificates_serial_unique UNIQUE (issuer_key_name, serial_number)
   );
   CREATE INDEX inventory_certificates_version ON inventory_certificates (issuer_key_name, issuer_key_version);
   CREATE INDEX inventory_certificates_list ON inventory_certificates (issuer_key_name, id);
   CREATE SEQUENCE inventory_revocation_seq;
   CREATE TABLE inventory_crls (
     issuer_key_name TEXT NOT NULL,
     issuer_key_version INTEGER NOT NULL,
     crl_number BIGINT NOT NULL CHECK (crl_number >= 1),
     this_update TIMESTAMPTZ NOT NULL,
     next_update TIMESTAMPTZ NOT NULL,
     revoked_count INTEGER NOT NULL,
     der BYTEA NOT NULL,
     PRIMARY KEY (issuer_key_name, issuer_key_version, crl_number)
   );`,
];

const CERTIFICATE_COLUMNS = `id, issuer_key_name, issuer_key_version, serial_number, subject, subject_alt_names, profile, not_before, not_after,
  sha256, certificate_der, client_id, request_id, issued_at, revoked_at, revocation_reason`;

interface CertificateRow {
  id: string;
  issuer_key_name: string;
  issuer_key_version: number;
  serial_number: string;
  subject: string;
  subject_alt_names: string[];
  profile: string;
  not_before: Date;
  not_after: Date;
  sha256: string;
  certificate_der: Buffer;
  client_id: string | null;
  request_id: string | null;
  issued_at: Date;
  revoked_at: Date | null;
  revocation_reason: string | null;
}

interface CrlRow {
  issuer_key_name: string;
  issuer_key_version: number;
  crl_number: string;
  this_update: Date;
  next_update: Date;
  revoked_count: number;
  der: Buffer;
}

const UNIQUE_VIOLATION = '23505';

/** The first key of the per-issuer-key lock record() takes (two-key advisory locks do not meet the migration lock's one-key ones). */
const RECORD_LOCK_CLASS = 0x4853_4d32; // 'HSM2'
/** The second: 32 bits of the key name's SHA-256, the same in every instance; a collision only serializes two keys' inserts. */
const recordLockKey = (issuerKeyName: string): number => createHash('sha256').update(issuerKeyName).digest().readInt32BE(0);

export class PostgresInventory implements CertificateInventory {
  readonly #pool: pg.Pool;
  readonly #secrets: readonly string[];
  #closed = false;

  constructor(options: PostgresInventoryOptions) {
    const queryTimeoutMs = options.queryTimeoutMs ?? POSTGRES_DEFAULTS.queryTimeoutMs;
    this.#secrets = secretsOf(options.url);
    this.#pool = new pg.Pool({
      connectionString: options.url,
      max: options.poolSize ?? POSTGRES_DEFAULTS.poolSize,
      connectionTimeoutMillis: options.connectTimeoutMs ?? POSTGRES_DEFAULTS.connectTimeoutMs,
      // The server ends a statement that runs too long; the client stops waiting for one that never answers.
      statement_timeout: queryTimeoutMs,
      query_timeout: queryTimeoutMs + 1000,
      idleTimeoutMillis: 30_000,
      keepAlive: true,
      application_name: 'hsm-signer',
    });
    // An idle connection the server dropped (restart, failover) is reported here and removed from
    // the pool; unhandled, the event would end the process.
    this.#pool.on('error', () => undefined);
  }

  async open(): Promise<void> {
    await this.#transaction('migrate', async (c) => {
      await c.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
      await c.query('CREATE TABLE IF NOT EXISTS inventory_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())');
      const applied = await c.query<{ version: number }>('SELECT version FROM inventory_migrations');
      const done = new Set(applied.rows.map((r) => r.version));
      for (const [i, sql] of MIGRATIONS.entries()) {
        const version = i + 1;
        if (done.has(version)) continue;
        await c.query(sql);
        await c.query('INSERT INTO inventory_migrations (version) VALUES ($1)', [version]);
      }
    });
  }

  async record(r: IssuedRecord): Promise<void> {
    try {
      // Listing pages by id. Ids are drawn at insert but become visible at commit, which concurrent
      // inserts may reach out of order: a page could show id 10 while 9 is uncommitted, and the
      // cursor after 10 would skip 9 for good. One statement (its own transaction) that first takes
      // a lock per issuer key, held until its commit, makes ids of one key visible in their order.
      await this.#pool.query(
        `WITH serialized AS (SELECT pg_advisory_xact_lock($14::integer, $15::integer))
         INSERT INTO inventory_certificates (issuer_key_name, issuer_key_version, serial_number, subject, subject_alt_names, profile,
           not_before, not_after, sha256, certificate_der, client_id, request_id, issued_at)
         SELECT $1::text, $2::integer, $3::text, $4::text, $5::text[], $6::text, $7::timestamptz, $8::timestamptz, $9::text, $10::bytea,
           $11::text, $12::text, $13::timestamptz FROM serialized`,
        [
          r.issuerKeyName,
          r.issuerKeyVersion,
          r.serialNumber,
          r.subject,
          [...r.subjectAltNames],
          r.profile,
          r.notBefore,
          r.notAfter,
          r.sha256,
          r.certificateDer,
          r.clientId ?? null,
          r.requestId ?? null,
          new Date(),
          RECORD_LOCK_CLASS,
          recordLockKey(r.issuerKeyName),
        ],
      );
    } catch (e) {
      if (sqlState(e) === UNIQUE_VIOLATION) {
        throw new InventoryUnavailableError(`serial ${r.serialNumber} is already recorded for key ${r.issuerKeyName}`);
      }
      throw this.#unavailable('record', e);
    }
  }

  async get(issuerKeyName: string, serialNumber: string): Promise<CertificateRecord | undefined> {
    const rows = await this.#query<CertificateRow>(
      'get',
      `SELECT ${CERTIFICATE_COLUMNS} FROM inventory_certificates WHERE issuer_key_name = $1 AND serial_number = $2`,
      [issuerKeyName, serialNumber],
    );
    const row = rows[0];
    return row && toRecord(row);
  }

  async list(q: ListQuery): Promise<ListPage> {
    const after = q.cursor === undefined ? 0n : decodeCursor(q.cursor);
    const where = ['issuer_key_name = $1', 'id > $2'];
    const params: unknown[] = [q.issuerKeyName, after.toString()];
    if (q.status === 'revoked') where.push('revoked_at IS NOT NULL');
    if (q.status === 'expired' || q.status === 'valid') {
      params.push(q.now);
      where.push('revoked_at IS NULL', q.status === 'expired' ? `not_after < $${params.length}` : `not_after >= $${params.length}`);
    }
    if (q.expiresBefore !== undefined) {
      params.push(q.expiresBefore);
      where.push(`not_after < $${params.length}`);
    }
    // One more than asked: whether there is a next page, without a count.
    params.push(q.limit + 1);
    const rows = await this.#query<CertificateRow>(
      'list',
      `SELECT ${CERTIFICATE_COLUMNS} FROM inventory_certificates WHERE ${where.join(' AND ')} ORDER BY id LIMIT $${params.length}`,
      params,
    );
    const page = rows.slice(0, q.limit);
    const last = page[page.length - 1];
    return rows.length > q.limit && last ? { items: page.map(toRecord), nextCursor: encodeCursor(BigInt(last.id)) } : { items: page.map(toRecord) };
  }

  async revoke(issuerKeyName: string, serialNumber: string, revocation: Revocation): Promise<{ record: CertificateRecord; revokedNow: boolean } | undefined> {
    // The row lock makes concurrent revocations of one certificate wait: only the first sets it.
    const updated = await this.#query<CertificateRow>(
      'revoke',
      `UPDATE inventory_certificates SET revoked_at = $3, revocation_reason = $4, revocation_seq = nextval('inventory_revocation_seq')
       WHERE issuer_key_name = $1 AND serial_number = $2 AND revoked_at IS NULL RETURNING ${CERTIFICATE_COLUMNS}`,
      [issuerKeyName, serialNumber, revocation.revokedAt, revocation.reason],
    );
    const row = updated[0];
    if (row) return { record: toRecord(row), revokedNow: true };
    const existing = await this.get(issuerKeyName, serialNumber);
    return existing && { record: existing, revokedNow: false };
  }

  async revoked(issuerKeyName: string, issuerKeyVersion: number): Promise<readonly CertificateRecord[]> {
    const rows = await this.#query<CertificateRow>(
      'revoked',
      `SELECT ${CERTIFICATE_COLUMNS} FROM inventory_certificates
       WHERE issuer_key_name = $1 AND issuer_key_version = $2 AND revoked_at IS NOT NULL ORDER BY revocation_seq`,
      [issuerKeyName, issuerKeyVersion],
    );
    return rows.map(toRecord);
  }

  async issuingVersions(issuerKeyName: string): Promise<readonly number[]> {
    const rows = await this.#query<{ v: number }>(
      'issuingVersions',
      'SELECT DISTINCT issuer_key_version AS v FROM inventory_certificates WHERE issuer_key_name = $1 ORDER BY v',
      [issuerKeyName],
    );
    return rows.map((r) => r.v);
  }

  async latestCrl(issuerKeyName: string, issuerKeyVersion: number): Promise<StoredCrl | undefined> {
    const rows = await this.#query<CrlRow>(
      'latestCrl',
      `SELECT issuer_key_name, issuer_key_version, crl_number, this_update, next_update, revoked_count, der FROM inventory_crls
       WHERE issuer_key_name = $1 AND issuer_key_version = $2 ORDER BY crl_number DESC LIMIT 1`,
      [issuerKeyName, issuerKeyVersion],
    );
    const row = rows[0];
    return (
      row && {
        issuerKeyName: row.issuer_key_name,
        issuerKeyVersion: row.issuer_key_version,
        crlNumber: BigInt(row.crl_number),
        thisUpdate: row.this_update,
        nextUpdate: row.next_update,
        revokedCount: row.revoked_count,
        der: row.der,
      }
    );
  }

  async saveCrl(crl: StoredCrl): Promise<boolean> {
    // One statement: inserted only when its number follows the latest stored one; two instances
    // storing the same number meet at the primary key, and the second inserts nothing.
    const result = await this.#run(
      'saveCrl',
      `INSERT INTO inventory_crls (issuer_key_name, issuer_key_version, crl_number, this_update, next_update, revoked_count, der)
       SELECT $1, $2, $3, $4, $5, $6, $7
       WHERE $3::bigint = COALESCE((SELECT max(crl_number) FROM inventory_crls WHERE issuer_key_name = $1 AND issuer_key_version = $2), 0) + 1
       ON CONFLICT DO NOTHING`,
      [crl.issuerKeyName, crl.issuerKeyVersion, crl.crlNumber.toString(), crl.thisUpdate, crl.nextUpdate, crl.revokedCount, crl.der],
    );
    return result.rowCount === 1;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#pool.end();
  }

  async #query<R extends pg.QueryResultRow>(operation: string, sql: string, params: unknown[]): Promise<R[]> {
    return (await this.#run<R>(operation, sql, params)).rows;
  }

  async #run<R extends pg.QueryResultRow>(operation: string, sql: string, params: unknown[]): Promise<pg.QueryResult<R>> {
    try {
      return await this.#pool.query<R>(sql, params);
    } catch (e) {
      throw this.#unavailable(operation, e);
    }
  }

  async #transaction(operation: string, fn: (c: pg.PoolClient) => Promise<void>): Promise<void> {
    let client: pg.PoolClient | undefined;
    try {
      client = await this.#pool.connect();
      await client.query('BEGIN');
      await fn(client);
      await client.query('COMMIT');
      client.release();
    } catch (e) {
      // A failed transaction's connection is not reused: it may be mid-transaction or broken.
      client?.release(true);
      throw this.#unavailable(operation, e);
    }
  }

  /** The driver's message (redacted) and SQLSTATE; not the error itself as `cause`, which carries the connection settings. */
  #unavailable(operation: string, e: unknown): InventoryUnavailableError {
    if (e instanceof InventoryUnavailableError) return e;
    const code = sqlState(e);
    let message = e instanceof Error ? e.message : String(e);
    for (const s of this.#secrets) message = message.split(s).join('***');
    return new InventoryUnavailableError(`PostgreSQL inventory: ${operation} failed${code ? ` (${code})` : ''}: ${message}`);
  }
}

/**
 * The password as it may appear in a message: as written in the URL, decoded, and half-decoded
 * (decodeURI leaves `%40` and the like; the driver decodes a URL's path that way, and a server
 * message may quote a database name).
 */
function secretsOf(url: string): string[] {
  const found = new Set<string>();
  try {
    const u = new URL(url);
    for (const p of [u.password, u.searchParams.get('password') ?? '']) {
      if (p) {
        found.add(p);
        found.add(safeDecode(p, decodeURIComponent));
        found.add(safeDecode(p, decodeURI));
      }
    }
  } catch {
    // Not a URL: nothing to find in it, and pg reports it without echoing it.
  }
  // Longest first, so that a part of one is not replaced before the whole.
  return [...found].filter((s) => s.length > 0).sort((a, b) => b.length - a.length);
}

function safeDecode(s: string, decode: (s: string) => string): string {
  try {
    return decode(s);
  } catch {
    return s;
  }
}

function sqlState(e: unknown): string | undefined {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

const CURSOR_PREFIX = 'pg1.';

function encodeCursor(id: bigint): string {
  return Buffer.from(`${CURSOR_PREFIX}${id}`).toString('base64url');
}

function decodeCursor(cursor: string): bigint {
  const text = /^[A-Za-z0-9_-]{1,64}$/.test(cursor) ? Buffer.from(cursor, 'base64url').toString('utf8') : '';
  const id = text.startsWith(CURSOR_PREFIX) ? text.slice(CURSOR_PREFIX.length) : '';
  if (!/^[1-9][0-9]{0,17}$/.test(id) || encodeCursor(BigInt(id)) !== cursor) throw new InvalidCursorError('cursor is not one this inventory handed out');
  return BigInt(id);
}

function isReason(s: string): s is RevocationReason {
  return Object.hasOwn(REVOCATION_REASONS, s);
}

function toRecord(row: CertificateRow): CertificateRecord {
  const reason = row.revocation_reason;
  return {
    issuerKeyName: row.issuer_key_name,
    issuerKeyVersion: row.issuer_key_version,
    serialNumber: row.serial_number,
    subject: row.subject,
    subjectAltNames: row.subject_alt_names,
    profile: row.profile,
    notBefore: row.not_before,
    notAfter: row.not_after,
    sha256: row.sha256,
    certificateDer: row.certificate_der,
    ...(row.client_id !== null ? { clientId: row.client_id } : {}),
    ...(row.request_id !== null ? { requestId: row.request_id } : {}),
    issuedAt: row.issued_at,
    ...(row.revoked_at !== null && reason !== null && isReason(reason) ? { revocation: { revokedAt: row.revoked_at, reason } } : {}),
  };
}
