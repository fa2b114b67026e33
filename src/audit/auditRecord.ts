import { createHash } from 'node:crypto';

/**
 * One line of the audit trail (README, "The audit trail"): who did what with which key, and how it
 * ended. It never holds a message, a signature, a token or a PIN: what was signed is identified by
 * the SHA-256 of the digest the HSM signed, which the caller can compute and nobody can invert.
 */
export interface AuditRecord {
  /** ISO 8601 UTC with milliseconds, when the operation ended. */
  readonly time: string;
  /** The request's X-Request-Id (service records). */
  readonly requestId?: string;
  /** The client's name from CLIENTS_FILE; `dev` in development mode; `hsm-signer-admin` for the admin CLI. */
  readonly client: string;
  /** The caller's address as the socket saw it (service records). */
  readonly source?: string;
  readonly operation: string;
  readonly keyName?: string;
  readonly keyVersion?: number;
  readonly algorithm?: string;
  /** The digest the HSM signed (or that was verified); written as its SHA-256, computed only when the line is written. */
  readonly digest?: Buffer | (() => Buffer);
  /** `ok`, or the error code the caller got. */
  readonly outcome: string;
  /** The item's position in a batch request. */
  readonly batchItem?: number;
  /** verify: the answer (a wrong signature is a `valid: false` answer, not an error). */
  readonly valid?: boolean;
  /** issue and certificate: the certificate's serial number (hex) and subject (RFC 4514). */
  readonly serialNumber?: string;
  readonly subject?: string;
  /** issue: the certificate profile. */
  readonly profile?: string;
  /** Admin records: the key spec, and who ran the command where. */
  readonly keySpec?: string;
  readonly osUser?: string;
  readonly sudoUser?: string;
  readonly host?: string;
  readonly pid?: number;
  /** Admin records of an operation that needed a quorum: the approvers' names (HSM_APPROVERS_FILE). */
  readonly approvers?: readonly string[];
  /** backups.prune records: the AWS region, the cluster (or the copies' source cluster), the backups deleted and those that failed. */
  readonly region?: string;
  readonly clusterId?: string;
  readonly sourceClusterId?: string;
  readonly deleted?: readonly string[];
  readonly failed?: readonly string[];
  /** audit.resumed records: the gap they close. */
  readonly unavailableSince?: string;
  readonly reason?: string;
  readonly refused?: number;
}

/** A subject comes from a caller's CSR: bounded, so one line stays one reasonable write. */
export const MAX_SUBJECT_CHARS = 1024;

const digestSha256 = (d: AuditRecord['digest']): string | undefined =>
  d === undefined
    ? undefined
    : createHash('sha256')
        .update(typeof d === 'function' ? d() : d)
        .digest('hex');

/** The record as one JSON line (with its newline), fields in the documented order; absent fields are left out. */
export function auditLine(r: AuditRecord): string {
  const subject = r.subject !== undefined && r.subject.length > MAX_SUBJECT_CHARS ? `${r.subject.slice(0, MAX_SUBJECT_CHARS)}...(truncated)` : r.subject;
  return `${JSON.stringify({
    time: r.time,
    requestId: r.requestId,
    client: r.client,
    source: r.source,
    operation: r.operation,
    keyName: r.keyName,
    keyVersion: r.keyVersion,
    algorithm: r.algorithm,
    digestSha256: digestSha256(r.digest),
    outcome: r.outcome,
    batchItem: r.batchItem,
    valid: r.valid,
    serialNumber: r.serialNumber,
    subject,
    profile: r.profile,
    keySpec: r.keySpec,
    osUser: r.osUser,
    sudoUser: r.sudoUser,
    host: r.host,
    pid: r.pid,
    approvers: r.approvers,
    region: r.region,
    clusterId: r.clusterId,
    sourceClusterId: r.sourceClusterId,
    deleted: r.deleted,
    failed: r.failed,
    unavailableSince: r.unavailableSince,
    reason: r.reason,
    refused: r.refused,
  })}\n`;
}
