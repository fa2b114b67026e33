/**
 * The algorithm table: every key spec and signing algorithm of the contract, as data.
 * Everything that differs between algorithms (hash, digest length, padding, key type)
 * is looked up here rather than branched on elsewhere.
 */
export const KEY_SPECS = ['RSA_2048', 'RSA_3072', 'RSA_4096', 'ECC_NIST_P256', 'ECC_NIST_P384'] as const;
export type KeySpec = (typeof KEY_SPECS)[number];

export const SIGNING_ALGORITHMS = [
  'RSASSA_PKCS1_V1_5_SHA_256',
  'RSASSA_PKCS1_V1_5_SHA_384',
  'RSASSA_PKCS1_V1_5_SHA_512',
  'RSASSA_PSS_SHA_256',
  'RSASSA_PSS_SHA_384',
  'RSASSA_PSS_SHA_512',
  'ECDSA_SHA_256',
  'ECDSA_SHA_384',
  'ECDSA_SHA_512',
] as const;
export type SigningAlgorithm = (typeof SIGNING_ALGORITHMS)[number];

export type KeyType = 'RSA' | 'EC';
export type HashName = 'sha256' | 'sha384' | 'sha512';
export type Padding = 'PKCS1_V1_5' | 'PSS' | 'ECDSA';

export interface AlgorithmInfo {
  readonly name: SigningAlgorithm;
  readonly keyType: KeyType;
  readonly hash: HashName;
  readonly digestLength: number;
  readonly padding: Padding;
}

export const HASH_LENGTH: Record<HashName, number> = { sha256: 32, sha384: 48, sha512: 64 };

function info(name: SigningAlgorithm): AlgorithmInfo {
  const [, family, bits] = /^(RSASSA_PKCS1_V1_5|RSASSA_PSS|ECDSA)_SHA_(\d+)$/.exec(name) ?? [];
  const hash = `sha${bits}` as HashName;
  const padding: Padding = family === 'RSASSA_PSS' ? 'PSS' : family === 'ECDSA' ? 'ECDSA' : 'PKCS1_V1_5';
  return { name, keyType: padding === 'ECDSA' ? 'EC' : 'RSA', hash, digestLength: HASH_LENGTH[hash], padding };
}

export const ALGORITHMS: ReadonlyMap<SigningAlgorithm, AlgorithmInfo> = new Map(SIGNING_ALGORITHMS.map((a) => [a, info(a)]));

export function algorithmInfo(name: SigningAlgorithm): AlgorithmInfo {
  const found = ALGORITHMS.get(name);
  // Reached only by a value cast to SigningAlgorithm without isSigningAlgorithm: fail here, naming it.
  if (found === undefined) throw new Error(`no such signing algorithm: ${String(name)}`);
  return found;
}

export function isSigningAlgorithm(value: unknown): value is SigningAlgorithm {
  return typeof value === 'string' && ALGORITHMS.has(value as SigningAlgorithm);
}

export interface KeySpecInfo {
  readonly spec: KeySpec;
  readonly keyType: KeyType;
  /** RSA modulus bits, or the EC field size in bits. */
  readonly bits: number;
  /** EC only: the named curve, as node:crypto and JWK call it. */
  readonly curve?: { readonly oid: string; readonly nodeName: string; readonly jwkName: string };
}

export const KEY_SPEC_INFO: Readonly<Record<KeySpec, KeySpecInfo>> = {
  RSA_2048: { spec: 'RSA_2048', keyType: 'RSA', bits: 2048 },
  RSA_3072: { spec: 'RSA_3072', keyType: 'RSA', bits: 3072 },
  RSA_4096: { spec: 'RSA_4096', keyType: 'RSA', bits: 4096 },
  ECC_NIST_P256: {
    spec: 'ECC_NIST_P256',
    keyType: 'EC',
    bits: 256,
    curve: { oid: '1.2.840.10045.3.1.7', nodeName: 'prime256v1', jwkName: 'P-256' },
  },
  ECC_NIST_P384: {
    spec: 'ECC_NIST_P384',
    keyType: 'EC',
    bits: 384,
    curve: { oid: '1.3.132.0.34', nodeName: 'secp384r1', jwkName: 'P-384' },
  },
};

export function isKeySpec(value: unknown): value is KeySpec {
  return typeof value === 'string' && (KEY_SPECS as readonly string[]).includes(value);
}

/** The algorithms a key of this spec can sign with. */
export function algorithmsFor(spec: KeySpec): SigningAlgorithm[] {
  const { keyType } = KEY_SPEC_INFO[spec];
  return SIGNING_ALGORITHMS.filter((a) => algorithmInfo(a).keyType === keyType);
}

/** Maximum signature length in bytes for a key of this spec (raw r||s for EC). */
export function signatureLength(spec: KeySpec): number {
  const s = KEY_SPEC_INFO[spec];
  return s.keyType === 'RSA' ? s.bits / 8 : 2 * Math.ceil(s.bits / 8);
}
