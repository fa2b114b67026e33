/**
 * The record of every certificate the service issued, and what revocation needs: the contract.
 * Two adapters implement it, one folder each (src/inventory/sqlite, src/inventory/postgres), and
 * one test suite runs against both. Nothing here knows HTTP or PKCS#11.
 */

/** RFC 5280 CRLReason names, with their codes (7 is unused). */
export const REVOCATION_REASONS = {
  unspecified: 0,
  keyCompromise: 1,
  cACompromise: 2,
  affiliationChanged: 3,
  superseded: 4,
  cessationOfOperation: 5,
  certificateHold: 6,
  removeFromCRL: 8,
  privilegeWithdrawn: 9,
  aACompromise: 10,
} as const;
export type RevocationReason = keyof typeof REVOCATION_REASONS;

/** What is recorded when a certificate is issued, before it is returned to the caller. */
export interface IssuedRecord {
  readonly issuerKeyName: string;
  readonly issuerKeyVersion: number;
  /** canonicalSerial's form (src/pki/serialNumber.ts): one per number; answers show serialForDisplay's. */
  readonly serialNumber: string;
  /** RFC 4514 text of the subject. */
  readonly subject: string;
  /** Each SAN as `type:value` (`dns:example.com`, `ip:10.0.0.1`, `email:...`, `uri:...`). */
  readonly subjectAltNames: readonly string[];
  readonly profile: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** SHA-256 of the certificate's DER, lower-case hex. */
  readonly sha256: string;
  readonly certificateDer: Buffer;
  /** The authenticated client that asked (when auth is on). */
  readonly clientId?: string;
  readonly requestId?: string;
}

export interface Revocation {
  readonly revokedAt: Date;
  readonly reason: RevocationReason;
}

export interface CertificateRecord extends IssuedRecord {
  readonly issuedAt: Date;
  /** Absent while the certificate is not revoked. */
  readonly revocation?: Revocation;
}

/** `expired`: notAfter has passed and not revoked; `valid`: neither revoked nor expired. */
export type CertificateStatus = 'valid' | 'revoked' | 'expired';

export interface ListQuery {
  readonly issuerKeyName: string;
  readonly status?: CertificateStatus;
  /** Only certificates whose notAfter is before this. */
  readonly expiresBefore?: Date;
  /** 1..1000 */
  readonly limit: number;
  /** From the previous page's nextCursor; opaque to callers. */
  readonly cursor?: string;
  /** What `expired` and `valid` are judged against. */
  readonly now: Date;
}

export interface ListPage {
  /** In issue order (stable across pages: a certificate recorded while paging is never listed twice). */
  readonly items: readonly CertificateRecord[];
  /** Absent on the last page. */
  readonly nextCursor?: string;
}

/** A CRL as issued: stored so that every instance serves the same one, and its number never goes back. */
export interface StoredCrl {
  readonly issuerKeyName: string;
  readonly issuerKeyVersion: number;
  /** Starts at 1 for each issuer key version; each stored CRL's number is the previous one's + 1. */
  readonly crlNumber: bigint;
  readonly thisUpdate: Date;
  readonly nextUpdate: Date;
  /** How many revoked certificates of this key version it lists (revocations are never undone). */
  readonly revokedCount: number;
  readonly der: Buffer;
}

/** The store cannot be reached or refused a write: the caller answers 503 and issues nothing. */
export class InventoryUnavailableError extends Error {
  override readonly name = 'InventoryUnavailableError';
}

/** A cursor that this inventory did not hand out (or that is malformed): the caller's error, a 400. */
export class InvalidCursorError extends Error {
  override readonly name = 'InvalidCursorError';
}

export interface CertificateInventory {
  /** Creates the tables (migrations) if needed; safe when several instances start at once. */
  open(): Promise<void>;
  /** Throws InventoryUnavailableError when the record is not durably written. A serial recorded twice for one issuer key is an error too. */
  record(r: IssuedRecord): Promise<void>;
  get(issuerKeyName: string, serialNumber: string): Promise<CertificateRecord | undefined>;
  list(q: ListQuery): Promise<ListPage>;
  /**
   * Idempotent: a certificate already revoked keeps its first time and reason (`revokedNow` false).
   * Undefined when the issuer key did not issue this serial.
   */
  revoke(issuerKeyName: string, serialNumber: string, revocation: Revocation): Promise<{ record: CertificateRecord; revokedNow: boolean } | undefined>;
  /** The revoked certificates one issuer key version issued, in revocation order. */
  revoked(issuerKeyName: string, issuerKeyVersion: number): Promise<readonly CertificateRecord[]>;
  /** The key versions of this issuer key that issued at least one certificate, ascending. */
  issuingVersions(issuerKeyName: string): Promise<readonly number[]>;
  latestCrl(issuerKeyName: string, issuerKeyVersion: number): Promise<StoredCrl | undefined>;
  /**
   * Stores `crl` only if its number is the latest stored one + 1 (1 when there is none), atomically.
   * False when another instance stored that number first: the caller then serves latestCrl().
   */
  saveCrl(crl: StoredCrl): Promise<boolean>;
  close(): Promise<void>;
}
