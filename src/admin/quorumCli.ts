import { readFileSync } from 'node:fs';
import {
  ApprovalState,
  approve,
  canonical,
  checkApprovals,
  loadApprovers,
  MAX_REQUEST_TTL_S,
  newRequest,
  QuorumError,
  readRequest,
  sha256Hex,
  type Approvers,
  type RequestFacts,
} from './quorum.js';

export type QuorumOperation = 'create' | 'rotate' | 'retire';

export interface QuorumOptions {
  readonly approvals?: readonly string[];
  readonly request?: string;
  readonly expiresIn?: string;
}

/**
 * The admin CLI's quorum gate: configured by HSM_APPROVERS_FILE (retire always needs approvals) and
 * HSM_QUORUM_OPERATIONS (a comma-separated list that may add create and rotate).
 */
export class QuorumGate {
  private constructor(
    private readonly set: Approvers,
    private readonly stateFile: string,
    private readonly operations: ReadonlySet<string>,
  ) {}

  static fromEnv(env: NodeJS.ProcessEnv, allowSmallQuorum: boolean): QuorumGate | undefined {
    const file = env.HSM_APPROVERS_FILE;
    if (!file) return undefined;
    const operations = new Set(['retire']);
    for (const op of (env.HSM_QUORUM_OPERATIONS ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean)) {
      if (op !== 'create' && op !== 'rotate' && op !== 'retire') throw new QuorumError('HSM_QUORUM_OPERATIONS: must list only create, rotate and retire');
      operations.add(op);
    }
    const set = loadApprovers(file, allowSmallQuorum, (line) => process.stderr.write(`${line}\n`));
    return new QuorumGate(set, ApprovalState.fileFor(file, env), operations);
  }

  needs(operation: QuorumOperation): boolean {
    return this.operations.has(operation);
  }

  /**
   * Without --approvals: prints a new approval request (stdout: its canonical bytes; stderr: its
   * SHA-256 and what to do) and returns undefined. With them: checks the request and approvals,
   * records the request's nonce as used, and returns the approvers' names.
   */
  authorize(facts: RequestFacts, o: QuorumOptions): string[] | undefined {
    if (!o.approvals || o.approvals.length === 0) {
      let ttl = MAX_REQUEST_TTL_S;
      if (o.expiresIn !== undefined) {
        if (!/^[1-9][0-9]{0,5}$/.test(o.expiresIn) || Number(o.expiresIn) > MAX_REQUEST_TTL_S)
          throw new QuorumError(`--expires-in: must be 1 to ${MAX_REQUEST_TTL_S} seconds`);
        ttl = Number(o.expiresIn);
      }
      const text = canonical(newRequest(facts, ttl));
      process.stdout.write(text);
      process.stderr.write(
        `approval request printed (SHA-256 ${sha256Hex(text)}): ${this.set.quorum} of ${this.set.approvers.length} approvers must sign it; ` +
          'save it byte for byte, have each approver run `hsm-signer-admin approve --key their.pem request.json > approval.json`, ' +
          'then run this command again with --request request.json --approvals approval.json...\n',
      );
      return undefined;
    }
    if (!o.request) throw new QuorumError('--request: the approval request file is needed with --approvals');
    const req = readRequest(o.request);
    // Read under the AdminLock (the CLI calls this after taking it): two commands cannot both use one request.
    const state = ApprovalState.load(this.stateFile);
    const names = checkApprovals(this.set, req, facts, o.approvals, state.usedNonces());
    state.markUsed(req.request);
    return names;
  }
}

/** `hsm-signer-admin approve --key my.pem request.json`: the approval file on stdout. */
export function approveCommand(keyFile: string | undefined, requestFile: string | undefined): number {
  if (!keyFile || !requestFile) throw new QuorumError('usage: hsm-signer-admin approve --key my.pem request.json');
  let pem: string;
  try {
    pem = readFileSync(keyFile, 'utf8');
  } catch (e) {
    throw new QuorumError(`--key: cannot read the file (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  const { request, text } = readRequest(requestFile);
  let approval: { approver: string; signature: string };
  try {
    approval = approve(pem, text);
  } catch (e) {
    if (e instanceof QuorumError) throw e;
    throw new QuorumError('--key: not a PEM private key');
  }
  process.stderr.write(
    `approving ${request.operation} of ${request.keyName}${request.keyVersion === null ? '' : ` version ${request.keyVersion}`} on token ${request.tokenLabel}, ` +
      `valid until ${request.expiresAt} (request SHA-256 ${sha256Hex(text)})\n`,
  );
  process.stdout.write(`${JSON.stringify(approval)}\n`);
  return 0;
}
