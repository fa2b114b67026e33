/**
 * M-of-N approval of admin operations (README, "Quorum approval"): an approvers file, approval
 * requests as canonical JSON, approvals (signatures by the approvers' own keys) and the local state
 * file of used request nonces.
 */
import { createHash, createPrivateKey, createPublicKey, randomBytes, sign, verify, type KeyObject } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { z } from 'zod';

/** A refusal that names its reason; the CLI exits 2 with it. */
export class QuorumError extends Error {}

export interface Approver {
  readonly name: string;
  readonly key: KeyObject;
  /** SHA-256 of the public key's SubjectPublicKeyInfo DER, hex. */
  readonly fingerprint: string;
}

export interface Approvers {
  readonly quorum: number;
  readonly approvers: readonly Approver[];
}

const approversSchema = z
  .object({
    quorum: z.number().int().min(1).max(100),
    approvers: z
      .array(z.object({ name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}$/), publicKeyPem: z.string().min(1) }).strict())
      .min(1)
      .max(100),
  })
  .strict();

export const fingerprintOf = (key: KeyObject): string =>
  createHash('sha256')
    .update(key.export({ type: 'spki', format: 'der' }))
    .digest('hex');

function isAllowedKey(key: KeyObject): boolean {
  return key.asymmetricKeyType === 'ed25519' || (key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1');
}

/** Reads and checks HSM_APPROVERS_FILE; `warn` gets the small-quorum warning when it is allowed. */
export function loadApprovers(file: string, allowSmallQuorum: boolean, warn: (line: string) => void): Approvers {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new QuorumError(`HSM_APPROVERS_FILE: cannot read it as JSON (${(e as NodeJS.ErrnoException).code ?? 'invalid JSON'})`);
  }
  const parsed = approversSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new QuorumError(`HSM_APPROVERS_FILE: ${issue?.path.join('.') || '(root)'}: ${issue?.message}`);
  }
  const { quorum } = parsed.data;
  const approvers: Approver[] = [];
  for (const [i, a] of parsed.data.approvers.entries()) {
    let key: KeyObject;
    try {
      key = createPublicKey(a.publicKeyPem);
    } catch {
      throw new QuorumError(`HSM_APPROVERS_FILE: approvers.${i}.publicKeyPem: not a PEM public key`);
    }
    if (!isAllowedKey(key)) throw new QuorumError(`HSM_APPROVERS_FILE: approvers.${i}.publicKeyPem: must be an Ed25519 or ECDSA P-256 key`);
    const fingerprint = fingerprintOf(key);
    const same = approvers.find((o) => o.fingerprint === fingerprint);
    if (same) throw new QuorumError(`HSM_APPROVERS_FILE: approvers.${i} (${a.name}) has the same key as ${same.name}`);
    if (approvers.some((o) => o.name === a.name)) throw new QuorumError(`HSM_APPROVERS_FILE: approvers.${i}: the name ${a.name} is used twice`);
    approvers.push({ name: a.name, key, fingerprint });
  }
  if (approvers.length < quorum) throw new QuorumError(`HSM_APPROVERS_FILE: quorum ${quorum} is more than the ${approvers.length} approver(s)`);
  if (approvers.length < quorum + 2) {
    const text = `${approvers.length} approver(s) for a quorum of ${quorum}: fewer than quorum + 2, so one or two lost keys lock every quorum operation out`;
    if (!allowSmallQuorum) throw new QuorumError(`HSM_APPROVERS_FILE: ${text}; add --allow-small-quorum to accept it`);
    warn(`warning: ${text}`);
  }
  return { quorum, approvers };
}

export interface RequestFacts {
  readonly operation: string;
  readonly keyName: string;
  /** null for create and rotate (the version is not known yet). */
  readonly keyVersion: number | null;
  /** create: the spec of the key to create; null otherwise. */
  readonly keySpec: string | null;
  readonly tokenLabel: string;
}

export interface ApprovalRequest extends RequestFacts {
  readonly type: typeof REQUEST_TYPE;
  readonly nonce: string;
  readonly createdAt: string;
  readonly expiresAt: string;
}

const REQUEST_TYPE = 'hsm-signer approval request v1';
export const MAX_REQUEST_TTL_S = 24 * 3600;

/**
 * The signed bytes: JSON.stringify of the fields in this fixed order (type, operation, keyName,
 * keyVersion, keySpec, tokenLabel, nonce, createdAt, expiresAt), no whitespace, one trailing newline. The
 * request file holds exactly these bytes.
 */
export function canonical(r: ApprovalRequest): string {
  return `${JSON.stringify({
    type: r.type,
    operation: r.operation,
    keyName: r.keyName,
    keyVersion: r.keyVersion,
    keySpec: r.keySpec,
    tokenLabel: r.tokenLabel,
    nonce: r.nonce,
    createdAt: r.createdAt,
    expiresAt: r.expiresAt,
  })}\n`;
}

export function newRequest(facts: RequestFacts, ttlSeconds: number, now = new Date()): ApprovalRequest {
  return {
    type: REQUEST_TYPE,
    ...facts,
    nonce: randomBytes(16).toString('hex'),
    createdAt: now.toISOString(),
    expiresAt: new Date(now.getTime() + ttlSeconds * 1000).toISOString(),
  };
}

export const sha256Hex = (text: string): string => createHash('sha256').update(text).digest('hex');

const requestSchema = z
  .object({
    type: z.literal(REQUEST_TYPE),
    operation: z.string(),
    keyName: z.string(),
    keyVersion: z.number().int().nullable(),
    keySpec: z.string().nullable(),
    tokenLabel: z.string(),
    nonce: z.string().regex(/^[0-9a-f]{32}$/),
    createdAt: z.string().datetime(),
    expiresAt: z.string().datetime(),
  })
  .strict();

/** Reads a request file; refuses one whose bytes are not the canonical form of its content. */
export function readRequest(file: string): { request: ApprovalRequest; text: string } {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new QuorumError(`--request: cannot read the file (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new QuorumError('--request: not an approval request (not JSON)');
  }
  const parsed = requestSchema.safeParse(json);
  if (!parsed.success)
    throw new QuorumError(`--request: not an approval request (${parsed.error.issues[0]?.path.join('.') || 'root'}: ${parsed.error.issues[0]?.message})`);
  if (canonical(parsed.data) !== text) throw new QuorumError('--request: not in canonical form (the file must hold exactly the bytes the CLI printed)');
  return { request: parsed.data, text };
}

/** `approve`: the approval file's content, signed with the approver's private key (Ed25519, or ECDSA P-256 with SHA-256). */
export function approve(privateKeyPem: string, requestText: string): { approver: string; signature: string } {
  const key = createPrivateKey(privateKeyPem);
  const pub = createPublicKey(key);
  if (!isAllowedKey(pub)) throw new QuorumError('--key: must be an Ed25519 or ECDSA P-256 private key');
  const sig = sign(pub.asymmetricKeyType === 'ed25519' ? null : 'sha256', Buffer.from(requestText), key);
  return { approver: fingerprintOf(pub), signature: sig.toString('base64') };
}

const approvalSchema = z
  .object({
    approver: z.string().min(1).max(128),
    signature: z
      .string()
      .regex(/^[A-Za-z0-9+/]+={0,2}$/)
      .max(200),
  })
  .strict();

/**
 * Checks a request against what is about to run and every approval file against the approvers;
 * returns the approvers' names. Any approval that does not hold refuses the whole operation, naming why.
 */
export function checkApprovals(
  set: Approvers,
  req: { request: ApprovalRequest; text: string },
  expected: RequestFacts,
  approvalFiles: readonly string[],
  usedNonces: ReadonlySet<string>,
  now = new Date(),
): string[] {
  const r = req.request;
  for (const field of ['operation', 'keyName', 'keyVersion', 'keySpec', 'tokenLabel'] as const) {
    if (r[field] !== expected[field])
      throw new QuorumError(`wrong request: it approves ${field} ${JSON.stringify(r[field])}, this command is for ${JSON.stringify(expected[field])}`);
  }
  if (Date.parse(r.expiresAt) - Date.parse(r.createdAt) > MAX_REQUEST_TTL_S * 1000) throw new QuorumError('wrong request: it is valid for more than 24 h');
  if (Date.parse(r.expiresAt) <= now.getTime()) throw new QuorumError(`expired request: it expired at ${r.expiresAt}`);
  if (usedNonces.has(r.nonce)) throw new QuorumError(`replayed request: nonce ${r.nonce} has been used before`);
  const names: string[] = [];
  for (const file of approvalFiles) {
    let a: z.infer<typeof approvalSchema>;
    try {
      const parsed = approvalSchema.safeParse(JSON.parse(readFileSync(file, 'utf8')));
      if (!parsed.success) throw new Error('shape');
      a = parsed.data;
    } catch {
      throw new QuorumError(`approval ${file}: cannot read it as {"approver", "signature"}`);
    }
    const who = set.approvers.find((x) => x.name === a.approver || x.fingerprint === a.approver.toLowerCase());
    if (!who) throw new QuorumError(`approval ${file}: unknown approver ${JSON.stringify(a.approver)} (not a name or key fingerprint in HSM_APPROVERS_FILE)`);
    let ok: boolean;
    try {
      ok = verify(who.key.asymmetricKeyType === 'ed25519' ? null : 'sha256', Buffer.from(req.text), who.key, Buffer.from(a.signature, 'base64'));
    } catch {
      ok = false;
    }
    if (!ok) throw new QuorumError(`approval ${file}: ${who.name}'s signature does not match this request (another or a changed request, or another key)`);
    if (names.includes(who.name)) throw new QuorumError(`approval ${file}: duplicate approver ${who.name}`);
    names.push(who.name);
  }
  if (names.length < set.quorum) throw new QuorumError(`too few approvals: ${names.length} valid, the quorum is ${set.quorum}`);
  return names;
}

/**
 * Used nonces, in HSM_APPROVALS_STATE or `approvals-state.json` next to the approvers file:
 * `{"used": {nonce: expiresAt}}`. Entries past their expiry are dropped (an expired request is refused anyway).
 */
export class ApprovalState {
  private constructor(
    private readonly file: string,
    private readonly used: Record<string, string>,
  ) {}

  static fileFor(approversFile: string, env: NodeJS.ProcessEnv): string {
    return env.HSM_APPROVALS_STATE || join(dirname(approversFile), 'approvals-state.json');
  }

  static load(file: string): ApprovalState {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return new ApprovalState(file, {});
      throw new QuorumError(`HSM_APPROVALS_STATE: cannot read the file (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    const parsed = z.object({ used: z.record(z.string(), z.string()) }).safeParse(
      (() => {
        try {
          return JSON.parse(text);
        } catch {
          return undefined;
        }
      })(),
    );
    if (!parsed.success) throw new QuorumError('HSM_APPROVALS_STATE: not a state file ({"used": {...}}); refusing rather than forgetting used requests');
    return new ApprovalState(file, parsed.data.used);
  }

  usedNonces(): ReadonlySet<string> {
    return new Set(Object.keys(this.used));
  }

  /** Records the nonce as used (a temporary file, fsynced, renamed over the old one) before the operation runs. */
  markUsed(r: ApprovalRequest, now = new Date()): void {
    const used: Record<string, string> = {};
    for (const [n, exp] of Object.entries(this.used)) if (Date.parse(exp) > now.getTime()) used[n] = exp;
    used[r.nonce] = r.expiresAt;
    const tmp = `${this.file}.${process.pid}.tmp`;
    try {
      const fd = openSync(tmp, 'w', 0o600);
      try {
        writeFileSync(fd, `${JSON.stringify({ used })}\n`);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, this.file);
    } catch (e) {
      throw new QuorumError(`HSM_APPROVALS_STATE: cannot record the used request (${(e as NodeJS.ErrnoException).code ?? 'error'}); nothing was done`);
    }
  }
}
