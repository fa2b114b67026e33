/**
 * Scenario names -> what to send. A scenario is a string so it can be typed on the command line,
 * stored in a report and compared across runs:
 *
 *   sign:RSA_2048:RSASSA_PKCS1_V1_5_SHA_256     one signature per request
 *   verify:ECC_NIST_P256:ECDSA_SHA_256          verify a good signature (the answer must be valid:true)
 *   batch64:ECC_NIST_P256:ECDSA_SHA_256         POST /v1/sign/batch with 64 digests
 *   csr:ECC_NIST_P256                           a PKCS#10 request signed by the HSM key
 *   issue:ECC_NIST_P256                         a certificate issued by the HSM key (an intermediate CA)
 *   mix:80sign/20verify:ECC_NIST_P256:ECDSA_SHA_256   weighted mix of the kinds above on one key
 *
 * The algorithm may be left out (the key spec's usual one is filled in); names are normalised so
 * the same scenario always has the same name in a report.
 */
import { algorithmInfo, isKeySpec, isSigningAlgorithm, KEY_SPEC_INFO, type KeySpec, type SigningAlgorithm } from '../src/crypto/algorithms.js';
import { DEFAULTS } from './defaults.js';

export type OpKind = 'sign' | 'verify' | 'batch' | 'csr' | 'issue';

export interface OpSpec {
  readonly kind: OpKind;
  readonly keySpec: KeySpec;
  readonly algorithm: SigningAlgorithm;
  /** Items per request; 1 for everything but batch. */
  readonly items: number;
}

export interface ScenarioSpec {
  /** Normalised name, e.g. "sign:ECC_NIST_P256:ECDSA_SHA_256". */
  readonly name: string;
  readonly keySpec: KeySpec;
  readonly algorithm: SigningAlgorithm;
  /** One entry unless a mix; weights are relative. */
  readonly ops: readonly { readonly op: OpSpec; readonly weight: number }[];
}

export class ScenarioError extends Error {
  override readonly name = 'ScenarioError';
}

const DEFAULT_ALGORITHM: Record<KeySpec, SigningAlgorithm> = {
  RSA_2048: 'RSASSA_PKCS1_V1_5_SHA_256',
  RSA_3072: 'RSASSA_PKCS1_V1_5_SHA_256',
  RSA_4096: 'RSASSA_PKCS1_V1_5_SHA_256',
  ECC_NIST_P256: 'ECDSA_SHA_256',
  ECC_NIST_P384: 'ECDSA_SHA_384',
};

const MAX_BATCH = 256;

/** "batch64" -> { kind: 'batch', items: 64 }; undefined if not a kind. */
function parseKind(token: string): { kind: OpKind; items: number } | undefined {
  if (token === 'sign' || token === 'verify' || token === 'csr' || token === 'issue') return { kind: token, items: 1 };
  const m = /^batch(\d*)$/.exec(token);
  if (!m) return undefined;
  const items = m[1] === '' ? DEFAULTS.batchSize : Number(m[1]);
  if (!Number.isSafeInteger(items) || items < 1 || items > MAX_BATCH) throw new ScenarioError(`${token}: a batch holds 1 to ${MAX_BATCH} items`);
  return { kind: 'batch', items };
}

const kindName = (k: { kind: OpKind; items: number }): string => (k.kind === 'batch' ? `batch${k.items}` : k.kind);

function parseKeyAndAlgorithm(scenario: string, parts: string[]): { keySpec: KeySpec; algorithm: SigningAlgorithm } {
  const [spec, alg, ...extra] = parts;
  if (spec === undefined || !isKeySpec(spec)) {
    throw new ScenarioError(`${scenario}: expected a key spec (${Object.keys(KEY_SPEC_INFO).join(', ')}) after the kind`);
  }
  if (extra.length > 0) throw new ScenarioError(`${scenario}: too many ':' parts`);
  const algorithm = alg === undefined || alg === '' ? DEFAULT_ALGORITHM[spec] : alg;
  if (!isSigningAlgorithm(algorithm)) throw new ScenarioError(`${scenario}: unknown algorithm ${algorithm}`);
  if (algorithmInfo(algorithm).keyType !== KEY_SPEC_INFO[spec].keyType) {
    throw new ScenarioError(`${scenario}: ${algorithm} cannot be used with a ${spec} key`);
  }
  return { keySpec: spec, algorithm };
}

/** "80sign/20verify" -> [{sign, 80}, {verify, 20}]. */
function parseMix(scenario: string, text: string): { kind: OpKind; items: number; weight: number }[] {
  const parts = text.split('/').filter((p) => p !== '');
  if (parts.length === 0) throw new ScenarioError(`${scenario}: a mix needs weights such as 80sign/20verify`);
  return parts.map((p) => {
    const m = /^(\d+)([a-z]+\d*)$/.exec(p);
    const kind = m ? parseKind(m[2]!) : undefined;
    if (!m || !kind) throw new ScenarioError(`${scenario}: '${p}' is not <weight><kind> (kinds: sign, verify, batchN, csr, issue)`);
    const weight = Number(m[1]);
    if (!(weight > 0)) throw new ScenarioError(`${scenario}: weight of '${p}' must be > 0`);
    return { ...kind, weight };
  });
}

export function parseScenario(text: string): ScenarioSpec {
  const scenario = text.trim();
  const [head = '', ...rest] = scenario.split(':');
  if (head === 'mix') {
    const [weights = '', ...keyParts] = rest;
    const mix = parseMix(scenario, weights);
    const { keySpec, algorithm } = parseKeyAndAlgorithm(scenario, keyParts);
    const ops = mix.map((m) => ({ op: { kind: m.kind, keySpec, algorithm, items: m.items }, weight: m.weight }));
    const name = `mix:${mix.map((m) => `${m.weight}${kindName(m)}`).join('/')}:${keySpec}:${algorithm}`;
    return { name, keySpec, algorithm, ops };
  }
  const kind = parseKind(head);
  if (!kind) throw new ScenarioError(`${scenario}: unknown scenario kind '${head}' (sign, verify, batchN, csr, issue, mix)`);
  const { keySpec, algorithm } = parseKeyAndAlgorithm(scenario, rest);
  // CSR and issuance pick their signature algorithm from the key (the PKI layer's default).
  const pki = kind.kind === 'csr' || kind.kind === 'issue';
  const name = pki ? `${kindName(kind)}:${keySpec}` : `${kindName(kind)}:${keySpec}:${algorithm}`;
  return { name, keySpec, algorithm, ops: [{ op: { kind: kind.kind, keySpec, algorithm, items: kind.items }, weight: 1 }] };
}

/** Signature operations one request of this op performs. */
export const signaturesPerRequest = (op: OpSpec): number => op.items;

/**
 * Spreads weighted ops over a cycle of `length` request slots, interleaved so every stretch of
 * the cycle holds about the right mix (largest remainder, then round-robin by deficit).
 */
export function mixSchedule(weights: readonly number[], length: number): number[] {
  const total = weights.reduce((a, b) => a + b, 0);
  if (!(total > 0) || length < 1) return [];
  const out: number[] = [];
  const credit = weights.map(() => 0);
  for (let slot = 0; slot < length; slot++) {
    for (let i = 0; i < weights.length; i++) credit[i]! += weights[i]! / total;
    let best = 0;
    for (let i = 1; i < weights.length; i++) if (credit[i]! > credit[best]!) best = i;
    credit[best]! -= 1;
    out.push(best);
  }
  return out;
}

/** The scenarios the service's own single-sign path runs through, for which a ceiling exists. */
export function isCeilingScenario(spec: ScenarioSpec): boolean {
  return spec.ops.length === 1 && (spec.ops[0]!.op.kind === 'sign' || spec.ops[0]!.op.kind === 'batch');
}
