/**
 * The requests of a scenario and how to judge each answer. Every response is parsed and
 * shape-checked (only well-formed 2xx count as throughput); a sample is verified
 * cryptographically against the key's public key, because a fast service that signs wrongly is
 * worse than a slow one.
 */
import { createHash, randomBytes, type KeyObject } from 'node:crypto';
import { algorithmInfo, KEY_SPEC_INFO, type KeySpec, type SigningAlgorithm } from '../src/crypto/algorithms.js';
import { signatureValid } from '../testkit/signatureValid.js';
import { mixSchedule, type OpSpec, type ScenarioSpec } from './scenarios.js';

/** A key as the harness sees it: from GET /v1/keys. */
export interface KeyUnderTest {
  readonly name: string;
  readonly keySpec: KeySpec;
  /** version -> public key */
  readonly publicKeys: ReadonlyMap<number, KeyObject>;
}

export interface VerifyOutcome {
  readonly checked: number;
  readonly bad: number;
  /** Why the first bad one was bad, for the loud failure message. */
  readonly reason?: string;
}

export type Judgement =
  | {
      readonly ok: true;
      /** Good signatures in the answer (a batch counts each good item). */
      readonly signatures: number;
      /** Error codes of failed batch items, e.g. "item OVERLOADED". */
      readonly itemErrors?: readonly string[];
      /** The check costs nothing (a verify answer is a boolean): run it on every answer, not a sample. */
      readonly checkAlways?: boolean;
      verify(): VerifyOutcome | Promise<VerifyOutcome>;
    }
  | { readonly ok: false; readonly error: string };

export interface RequestTemplate {
  readonly method: 'POST';
  readonly path: string;
  readonly body: string;
  readonly op: OpSpec;
  judge(status: number, body: string): Judgement;
}

/** Things some ops need that only the running service can provide (see pkiFixtures.ts). */
export interface ScenarioFixtures {
  /** verify: a signature by the service for a message, made before the run. */
  sign?(key: KeyUnderTest, algorithm: SigningAlgorithm, message: Buffer): Promise<Buffer>;
  /** issue: PEM CSRs of leaf keys made by the harness, and the issuer's check. */
  issue?: {
    readonly csrPems: readonly string[];
    readonly profile: string;
    readonly validityDays: number;
    verifyCertificate(certificatePem: string): Promise<string | undefined>;
  };
  /** csr: checks a CSR's self-signature and that it holds the key's public key. */
  verifyCsr?(csrPem: string, key: KeyUnderTest): Promise<string | undefined>;
}

// ---- pure helpers ----

/** The error key of a failed answer: "503 OVERLOADED", or "non2xx 502" when the body says nothing. */
export function errorKey(status: number, body: string): string {
  try {
    const code = (JSON.parse(body) as { error?: { code?: unknown } }).error?.code;
    if (typeof code === 'string' && /^[A-Z_]{1,40}$/.test(code)) return `${status} ${code}`;
  } catch {
    // Not JSON (a proxy's HTML page, say): the status is all there is.
  }
  return `non2xx ${status}`;
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function parseJson(body: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(body);
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** Plausible signature length: exact for RSA, DER bounds for ECDSA; rejects truncation early. */
function lengthPlausible(keySpec: KeySpec, signature: Buffer): boolean {
  const info = KEY_SPEC_INFO[keySpec];
  const bytes = Math.ceil(info.bits / 8);
  return info.keyType === 'RSA' ? signature.length === bytes : signature.length >= 8 && signature.length <= 2 * bytes + 9;
}

interface SignedItem {
  readonly message: Buffer;
}

/** Shape-checks one sign result object; returns the signature or why it is not one. */
function signResult(v: unknown, key: KeyUnderTest, algorithm: SigningAlgorithm): { signature: Buffer; version: number } | string {
  if (typeof v !== 'object' || v === null) return 'not an object';
  const r = v as Record<string, unknown>;
  if (r['keyName'] !== key.name) return `keyName ${JSON.stringify(r['keyName'])}`;
  if (r['algorithm'] !== algorithm) return `algorithm ${JSON.stringify(r['algorithm'])}`;
  if (typeof r['keyVersion'] !== 'number') return 'no keyVersion';
  if (typeof r['signature'] !== 'string' || !BASE64.test(r['signature'])) return 'signature is not base64';
  const signature = Buffer.from(r['signature'], 'base64');
  if (!lengthPlausible(key.keySpec, signature)) return `signature of ${signature.length} bytes`;
  return { signature, version: r['keyVersion'] };
}

function checkSignatures(
  key: KeyUnderTest,
  algorithm: SigningAlgorithm,
  items: readonly { item: SignedItem; signature: Buffer; version: number }[],
): VerifyOutcome {
  let bad = 0;
  let reason: string | undefined;
  let checked = 0;
  for (const { item, signature, version } of items) {
    const publicKey = key.publicKeys.get(version);
    // A version created after the harness read the keys cannot be checked; it is not counted as bad.
    if (!publicKey) continue;
    checked++;
    if (!signatureValid(algorithm, item.message, publicKey, signature)) {
      bad++;
      reason ??= `${key.name} v${version} ${algorithm}: signature over '${item.message.toString('utf8')}' does not verify`;
    }
  }
  return reason === undefined ? { checked, bad } : { checked, bad, reason };
}

/** The message behind slot.item of a scenario's bodies (the body carries only its digest). */
export function messageFor(scenario: string, slot: number, item: number, salt: string): Buffer {
  return Buffer.from(`hsm-signer loadtest ${scenario} #${slot}.${item} ${salt}`);
}

const b64 = (b: Buffer): string => b.toString('base64');
const digestOf = (algorithm: SigningAlgorithm, m: Buffer): Buffer => createHash(algorithmInfo(algorithm).hash).update(m).digest();

// ---- builders per op ----

function signTemplate(key: KeyUnderTest, op: OpSpec, item: SignedItem): RequestTemplate {
  return {
    method: 'POST',
    path: `/v1/keys/${encodeURIComponent(key.name)}/sign`,
    body: JSON.stringify({ algorithm: op.algorithm, digest: b64(digestOf(op.algorithm, item.message)) }),
    op,
    judge(status, body) {
      if (status < 200 || status > 299) return { ok: false, error: errorKey(status, body) };
      const r = signResult(parseJson(body), key, op.algorithm);
      if (typeof r === 'string') return { ok: false, error: `invalid body (${r})` };
      return { ok: true, signatures: 1, verify: () => checkSignatures(key, op.algorithm, [{ item, ...r }]) };
    },
  };
}

function batchTemplate(key: KeyUnderTest, op: OpSpec, items: readonly SignedItem[]): RequestTemplate {
  return {
    method: 'POST',
    path: '/v1/sign/batch',
    body: JSON.stringify({
      requests: items.map((item) => ({ keyName: key.name, algorithm: op.algorithm, digest: b64(digestOf(op.algorithm, item.message)) })),
    }),
    op,
    judge(status, body) {
      if (status < 200 || status > 299) return { ok: false, error: errorKey(status, body) };
      const results = parseJson(body)?.['results'];
      if (!Array.isArray(results) || results.length !== items.length) return { ok: false, error: 'invalid body (results)' };
      const good: { item: SignedItem; signature: Buffer; version: number }[] = [];
      const itemErrors: string[] = [];
      for (let i = 0; i < results.length; i++) {
        const r = results[i] as Record<string, unknown> | null;
        const code = (r?.['error'] as { code?: unknown } | undefined)?.code;
        if (typeof code === 'string') {
          itemErrors.push(`item ${code}`);
          continue;
        }
        const s = signResult(r, key, op.algorithm);
        if (typeof s === 'string') return { ok: false, error: `invalid body (results[${i}]: ${s})` };
        good.push({ item: items[i]!, ...s });
      }
      return {
        ok: true,
        signatures: good.length,
        ...(itemErrors.length > 0 ? { itemErrors } : {}),
        verify: () => checkSignatures(key, op.algorithm, good),
      };
    },
  };
}

function verifyTemplate(key: KeyUnderTest, op: OpSpec, item: SignedItem, signature: Buffer): RequestTemplate {
  return {
    method: 'POST',
    path: `/v1/keys/${encodeURIComponent(key.name)}/verify`,
    body: JSON.stringify({ algorithm: op.algorithm, digest: b64(digestOf(op.algorithm, item.message)), signature: b64(signature) }),
    op,
    judge(status, body) {
      if (status < 200 || status > 299) return { ok: false, error: errorKey(status, body) };
      const valid = parseJson(body)?.['valid'];
      if (typeof valid !== 'boolean') return { ok: false, error: 'invalid body (valid)' };
      // The signature sent is good: valid:false is a wrong answer, as bad as a wrong signature.
      const outcome: VerifyOutcome = valid
        ? { checked: 1, bad: 0 }
        : { checked: 1, bad: 1, reason: `${key.name}: the service called a good ${op.algorithm} signature invalid` };
      return { ok: true, signatures: 1, checkAlways: true, verify: () => outcome };
    },
  };
}

/** A request answered by a PEM in a JSON field (a CSR, a certificate): one signature, which `check` verifies. */
function pemTemplate(op: OpSpec, path: string, body: unknown, field: string, marker: string, check: (pem: string) => Promise<VerifyOutcome>): RequestTemplate {
  return {
    method: 'POST',
    path,
    body: JSON.stringify(body),
    op,
    judge(status, text) {
      if (status < 200 || status > 299) return { ok: false, error: errorKey(status, text) };
      const pem = parseJson(text)?.[field];
      if (typeof pem !== 'string' || !pem.includes(marker)) return { ok: false, error: `invalid body (${field})` };
      return { ok: true, signatures: 1, verify: () => check(pem) };
    },
  };
}

function csrTemplate(key: KeyUnderTest, op: OpSpec, slot: number, fixtures: ScenarioFixtures): RequestTemplate {
  const body = { subject: `CN=hsm-signer loadtest ${slot},O=Load Test` };
  return pemTemplate(op, `/v1/keys/${encodeURIComponent(key.name)}/csr`, body, 'csrPem', 'BEGIN CERTIFICATE REQUEST', async (pem) => {
    const why = fixtures.verifyCsr ? await fixtures.verifyCsr(pem, key) : undefined;
    return why === undefined ? { checked: fixtures.verifyCsr ? 1 : 0, bad: 0 } : { checked: 1, bad: 1, reason: `${key.name} CSR: ${why}` };
  });
}

function issueTemplate(key: KeyUnderTest, op: OpSpec, slot: number, issue: NonNullable<ScenarioFixtures['issue']>): RequestTemplate {
  const body = { csrPem: issue.csrPems[slot % issue.csrPems.length]!, profile: issue.profile, validityDays: issue.validityDays };
  return pemTemplate(op, `/v1/keys/${encodeURIComponent(key.name)}/certificates`, body, 'certificatePem', 'BEGIN CERTIFICATE', async (pem) => {
    const why = await issue.verifyCertificate(pem);
    return why === undefined ? { checked: 1, bad: 0 } : { checked: 1, bad: 1, reason: `${key.name} certificate: ${why}` };
  });
}

/**
 * `count` request templates for the scenario (a mix is spread over them by weight). Each has
 * its own messages, so signatures differ; the salt keeps two runs from sending the same bytes.
 */
export async function buildTemplates(
  spec: ScenarioSpec,
  key: KeyUnderTest,
  count: number,
  fixtures: ScenarioFixtures = {},
  salt = randomBytes(6).toString('hex'),
): Promise<RequestTemplate[]> {
  const schedule = mixSchedule(
    spec.ops.map((o) => o.weight),
    Math.max(count, spec.ops.length),
  );
  const out: RequestTemplate[] = [];
  for (let slot = 0; slot < schedule.length; slot++) {
    const op = spec.ops[schedule[slot]!]!.op;
    const m = messageFor(spec.name, slot, 0, salt);
    switch (op.kind) {
      case 'sign':
        out.push(signTemplate(key, op, { message: m }));
        break;
      case 'batch':
        out.push(
          batchTemplate(
            key,
            op,
            Array.from({ length: op.items }, (_, i) => ({ message: messageFor(spec.name, slot, i, salt) })),
          ),
        );
        break;
      case 'verify': {
        if (!fixtures.sign) throw new Error(`${spec.name}: verify needs signatures made by the service first`);
        out.push(verifyTemplate(key, op, { message: m }, await fixtures.sign(key, op.algorithm, m)));
        break;
      }
      case 'csr':
        out.push(csrTemplate(key, op, slot, fixtures));
        break;
      case 'issue':
        if (!fixtures.issue) throw new Error(`${spec.name}: issuance needs an issuer certificate and leaf CSRs (pkiFixtures)`);
        out.push(issueTemplate(key, op, slot, fixtures.issue));
        break;
    }
  }
  return out;
}
