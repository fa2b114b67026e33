import type { Request, Response } from 'express';
import type { AuditLog } from '../audit/AuditLog.js';
import type { AuditRecord } from '../audit/auditRecord.js';
import { ServiceError } from '../errors.js';
import type { Client } from './auth.js';

export type AuditedOperation = 'sign' | 'verify' | 'csr' | 'certificate' | 'issue' | 'revoke';

/** What a route learns about an operation as it goes; whatever is known when it ends goes into the record. */
export type AuditFacts = {
  -readonly [K in 'keyName' | 'keyVersion' | 'algorithm' | 'digest' | 'valid' | 'serialNumber' | 'subject' | 'profile' | 'reason']?: AuditRecord[K];
};

const outcomeOf = (e: unknown): string => (e instanceof ServiceError ? e.code : 'INTERNAL');

/**
 * The audit trail of one request. `run` starts the operation only if the log can be written, and
 * returns its result only after its record is written: a signature (or a CSR, or a certificate)
 * never leaves without its record. If the record cannot be written the request fails with 503
 * AUDIT_UNAVAILABLE, whatever the operation's own outcome. With AUDIT_LOG unset it is a pass-through.
 */
export class RequestAudit {
  constructor(
    private readonly log: AuditLog,
    private readonly req: Request,
    private readonly res: Response,
  ) {}

  record(operation: AuditedOperation, facts: AuditFacts, outcome: string, batchItem?: number): AuditRecord {
    return {
      time: new Date().toISOString(),
      requestId: this.res.locals.requestId as string,
      // Development mode has no identities: every caller is `dev`.
      client: (this.res.locals.client as Client | undefined)?.name ?? 'dev',
      source: this.req.socket.remoteAddress ?? 'unknown',
      operation,
      ...facts,
      outcome,
      ...(batchItem !== undefined ? { batchItem } : {}),
    };
  }

  async run<T>(operation: AuditedOperation, work: (facts: AuditFacts) => Promise<T>): Promise<T> {
    this.log.assertAvailable();
    const facts: AuditFacts = {};
    let result: T;
    try {
      result = await work(facts);
    } catch (e) {
      await this.log.record(this.record(operation, facts, outcomeOf(e)));
      throw e;
    }
    await this.log.record(this.record(operation, facts, 'ok'));
    return result;
  }

  /** A batch: one record per item, all in one write. `outcomes[i]` is the item's error, or undefined if it was signed. */
  async writeItems(items: readonly AuditFacts[], outcomes: readonly (ServiceError | undefined)[]): Promise<void> {
    await this.log.recordAll(items.map((facts, i) => this.record('sign', facts, outcomes[i] ? outcomes[i].code : 'ok', i)));
  }

  /** The whole batch request failed (a malformed body, a bug): one record per item if they were parsed, else one. */
  async writeFailure(items: readonly AuditFacts[] | undefined, e: unknown): Promise<void> {
    const outcome = outcomeOf(e);
    if (!items || items.length === 0) await this.log.record(this.record('sign', {}, outcome));
    else await this.log.recordAll(items.map((facts, i) => this.record('sign', facts, outcome, i)));
  }

  assertAvailable(): void {
    this.log.assertAvailable();
  }
}

/** With AUDIT_LOG unset: the operation runs as it would without an audit trail. */
export const NO_AUDIT = {
  run: <T>(_operation: AuditedOperation, work: (facts: AuditFacts) => Promise<T>): Promise<T> => work({}),
  writeItems: (): Promise<void> => Promise.resolve(),
  writeFailure: (): Promise<void> => Promise.resolve(),
  assertAvailable: (): void => undefined,
};

export type Auditor = Pick<RequestAudit, 'run' | 'writeItems' | 'writeFailure' | 'assertAvailable'>;

/** The request's auditor: the log's, or the pass-through when there is no log. */
export const auditorFor = (log: AuditLog | undefined, req: Request, res: Response): Auditor => (log ? new RequestAudit(log, req, res) : NO_AUDIT);
