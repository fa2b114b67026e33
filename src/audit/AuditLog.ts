import { closeSync } from 'node:fs';
import { ServiceError } from '../errors.js';
import { appendLines, REMOVED } from './appendLines.js';
import { auditLine, type AuditRecord } from './auditRecord.js';
import { AUDIT_STDOUT, AuditOpenError, errnoOf, isRegularFile, openAuditTarget } from './auditTarget.js';

export { AUDIT_STDOUT, AuditOpenError, openAuditTarget } from './auditTarget.js';

export type AuditEvent =
  | { readonly type: 'unavailable'; readonly reason: string }
  | { readonly type: 'available'; readonly refused: number; readonly since: string }
  | { readonly type: 'reopened' }
  | { readonly type: 'reopen-failed'; readonly reason: string };

export interface AuditLogOptions {
  /** A write that has not completed after this long makes the log unavailable (default 2000 ms). */
  readonly stallMs?: number;
  /** How often an unavailable log tries again: reopen, then write an `audit.resumed` record (default 1000 ms). */
  readonly retryMs?: number;
  /** State changes, for the service's own log. Reasons are error codes, never record contents. */
  readonly onEvent?: (e: AuditEvent) => void;
}

interface Batch {
  readonly lines: string[];
  readonly promise: Promise<void>;
  resolve(): void;
  reject(e: unknown): void;
}

function newBatch(): Batch {
  let resolve!: () => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<void>((a, b) => {
    resolve = a;
    reject = b;
  });
  return { lines: [], promise, resolve, reject };
}

/**
 * The audit trail of one process: records are queued, and everything queued in one turn of the
 * event loop goes out in one write(2) (on a pipe: in whole-line writes of at most PIPE_BUF). The
 * promise of a record settles when the write that carries it has completed, so a caller that
 * awaits it answers only after its record is with the kernel; it rejects with AUDIT_UNAVAILABLE
 * when the record could not be written. One write is in flight at a time: records that arrive
 * meanwhile make the next batch, so the writes per second fall as the load rises.
 *
 * Unavailable (a write failed, stalled, or went to a removed file that could not be created
 * again): every record is refused at once, and every `retryMs` the log reopens its path and
 * writes an `audit.resumed` record that says since when and how many were refused; when that
 * write succeeds, the log is available again.
 */
export class AuditLog {
  private fd: number;
  private regularFile: boolean;
  /** Opened by reopen() while a write was in flight on the old descriptor; swapped in after it. */
  private nextFd: number | undefined;
  private pending: Batch | undefined;
  private scheduled = false;
  private writing: { readonly startedAt: number; readonly batch?: Batch; stalled: boolean } | undefined;
  private failure: { readonly since: Date; reason: string; refused: number; lastAttempt: number } | undefined;
  private closed = false;
  private readonly stallMs: number;
  private readonly retryMs: number;
  private readonly timer: NodeJS.Timeout;

  private constructor(
    readonly target: string,
    fd: number,
    private readonly o: AuditLogOptions,
  ) {
    this.fd = fd;
    this.regularFile = isRegularFile(fd);
    this.stallMs = o.stallMs ?? 2000;
    this.retryMs = o.retryMs ?? 1000;
    this.timer = setInterval(() => this.tick(), Math.min(250, Math.max(10, Math.floor(this.stallMs / 4)))).unref();
  }

  /** Opens `target` (a path, or `stdout`) for appending; throws AuditOpenError naming AUDIT_LOG and the errno code. */
  static open(target: string, o: AuditLogOptions = {}): AuditLog {
    return new AuditLog(target, openAuditTarget(target), o);
  }

  /** Whether records are being written, and if not, why (an errno code or a short sentence). */
  status(): { readonly available: boolean; readonly reason?: string } {
    return this.failure ? { available: false, reason: this.failure.reason } : { available: true };
  }

  /** Throws AUDIT_UNAVAILABLE while the log cannot be written: checked before an operation is started at all. */
  assertAvailable(): void {
    if (this.failure) throw this.refuse(1);
  }

  /** Resolves once the record is written; rejects with AUDIT_UNAVAILABLE if it cannot be. */
  record(r: AuditRecord): Promise<void> {
    if (this.failure) return Promise.reject(this.refuse(1));
    return this.enqueue([auditLine(r)]);
  }

  /** Several records (a batch request's items), written in the same write. */
  recordAll(rs: readonly AuditRecord[]): Promise<void> {
    if (this.failure) return Promise.reject(this.refuse(rs.length));
    return this.enqueue(rs.map(auditLine));
  }

  /**
   * Log rotation (SIGUSR2, SIGHUP): the path is opened again, so records go to the new file once
   * logrotate has moved the old one. If it cannot be opened, records keep going to the old file
   * (moved, not lost) and the failure is reported.
   */
  reopen(): void {
    if (this.target === AUDIT_STDOUT || this.closed) return;
    let fd: number;
    try {
      fd = openAuditTarget(this.target);
    } catch (e) {
      this.o.onEvent?.({ type: 'reopen-failed', reason: (e as Error).message });
      return;
    }
    if (this.writing) {
      if (this.nextFd !== undefined) closeSync(this.nextFd);
      this.nextFd = fd;
    } else {
      this.swap(fd);
    }
    this.o.onEvent?.({ type: 'reopened' });
  }

  /** Waits (up to the stall time) for queued records to be written, then closes the file. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    const end = Date.now() + this.stallMs;
    while ((this.pending || this.writing || this.scheduled) && !this.failure && Date.now() < end) {
      await new Promise((r) => setTimeout(r, 5));
    }
    if (this.nextFd !== undefined) closeSync(this.nextFd);
    if (this.fd !== 1 && !this.writing) closeSync(this.fd);
  }

  private refuse(n: number): ServiceError {
    if (this.failure) this.failure.refused += n;
    return new ServiceError(
      'AUDIT_UNAVAILABLE',
      `the audit log cannot be written (${this.failure?.reason ?? 'unavailable'}); no audited operation is answered until it can`,
      1,
    );
  }

  private enqueue(lines: readonly string[]): Promise<void> {
    let b = this.pending;
    if (!b) {
      b = newBatch();
      this.pending = b;
    }
    for (const l of lines) b.lines.push(l);
    if (!this.scheduled && !this.writing) {
      this.scheduled = true;
      setImmediate(this.flush);
    }
    return b.promise;
  }

  private readonly flush = (): void => {
    this.scheduled = false;
    const batch = this.pending;
    if (!batch || this.writing) return;
    this.pending = undefined;
    this.writeBatch(batch, true);
  };

  private writeBatch(batch: Batch, mayReopen: boolean): void {
    const writing = { startedAt: Date.now(), batch, stalled: false };
    this.writing = writing;
    appendLines(this.fd, this.regularFile, batch.lines, writing, (written) => {
      let reason = written;
      // The file was removed (not moved): its records are out of reach. Create it again and write the batch there.
      if (reason === REMOVED && mayReopen && !writing.stalled) {
        const cannot = this.reopenAfterRemoval();
        if (cannot === undefined) return this.writeBatch(batch, false);
        reason = `file removed, cannot create it again: ${cannot}`;
      }
      this.writing = undefined;
      if (reason !== undefined) {
        if (!writing.stalled) this.fail(reason, batch.lines.length);
        batch.reject(this.refuse(0));
      } else {
        batch.resolve();
      }
      this.afterWrite();
    });
  }

  private afterWrite(): void {
    if (this.nextFd !== undefined) {
      this.swap(this.nextFd);
      this.nextFd = undefined;
    }
    if (this.pending && !this.failure && !this.scheduled) {
      this.scheduled = true;
      setImmediate(this.flush);
    }
  }

  /** Undefined once reopened, else the errno code. */
  private reopenAfterRemoval(): string | undefined {
    try {
      this.swap(openAuditTarget(this.target));
      this.o.onEvent?.({ type: 'reopened' });
      return undefined;
    } catch (e) {
      return e instanceof AuditOpenError ? e.code : errnoOf(e);
    }
  }

  private swap(fd: number): void {
    const old = this.fd;
    this.fd = fd;
    this.regularFile = isRegularFile(fd);
    if (old !== 1 && old !== fd) closeSync(old);
  }

  private fail(reason: string, refused: number): void {
    if (this.failure) {
      this.failure.reason = reason;
      this.failure.refused += refused;
    } else {
      this.failure = { since: new Date(), reason, refused, lastAttempt: Date.now() };
      this.o.onEvent?.({ type: 'unavailable', reason });
    }
    const p = this.pending;
    this.pending = undefined;
    if (p) p.reject(this.refuse(p.lines.length));
  }

  private tick(): void {
    const w = this.writing;
    if (w && !w.stalled && Date.now() - w.startedAt > this.stallMs) {
      w.stalled = true;
      this.fail(`a write has not completed in ${this.stallMs} ms`, w.batch?.lines.length ?? 0);
      w.batch?.reject(this.refuse(0));
    }
    const f = this.failure;
    if (f && !this.writing && !this.closed && Date.now() - f.lastAttempt >= this.retryMs) this.tryRecover(f);
  }

  /** Reopens the path and writes the record of the gap; the log is available again once that is written. */
  private tryRecover(f: NonNullable<AuditLog['failure']>): void {
    f.lastAttempt = Date.now();
    if (this.target !== AUDIT_STDOUT) {
      try {
        this.swap(openAuditTarget(this.target));
      } catch (e) {
        f.reason = `cannot open: ${e instanceof AuditOpenError ? e.code : errnoOf(e)}`;
        return;
      }
    }
    const line = auditLine({
      time: new Date().toISOString(),
      client: 'hsm-signer',
      operation: 'audit.resumed',
      outcome: 'ok',
      pid: process.pid,
      unavailableSince: f.since.toISOString(),
      reason: f.reason,
      refused: f.refused,
    });
    const writing = { startedAt: Date.now(), stalled: false };
    this.writing = writing;
    appendLines(this.fd, this.regularFile, [line], writing, (reason) => {
      this.writing = undefined;
      if (reason !== undefined) {
        if (!writing.stalled) f.reason = reason;
      } else if (this.failure === f) {
        this.failure = undefined;
        this.o.onEvent?.({ type: 'available', refused: f.refused, since: f.since.toISOString() });
      }
      this.afterWrite();
    });
  }
}
