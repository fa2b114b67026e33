import { constants, verify, type KeyObject } from 'node:crypto';
import { AsnConvert } from '@peculiar/asn1-schema';
import { AlgorithmIdentifier } from '@peculiar/asn1-x509';
import {
  RsaSaPssParams,
  id_RSASSA_PSS,
  id_mgf1,
  id_sha256,
  id_sha256WithRSAEncryption,
  id_sha384,
  id_sha384WithRSAEncryption,
  id_sha512,
  id_sha512WithRSAEncryption,
} from '@peculiar/asn1-rsa';
import { id_ecdsaWithSHA256, id_ecdsaWithSHA384, id_ecdsaWithSHA512 } from '@peculiar/asn1-ecc';
import { KEY_SPEC_INFO, algorithmInfo, isSigningAlgorithm, type HashName, type KeySpec, type SigningAlgorithm } from '../crypto/algorithms.js';
import { invalid } from '../errors.js';

/**
 * X.509 signature AlgorithmIdentifiers for the service's signing algorithms, and the
 * reverse mapping used to verify signatures found in CSRs and certificates.
 *
 * OIDs come from the @peculiar packages' id_* constants. (Do not use @peculiar/asn1-rsa's
 * prebuilt `sha256WithRSAEncryption` AlgorithmIdentifier objects: in 2.11 the SHA-224/256
 * ones carry the SHA-512/224 and SHA-512/256 OIDs.)
 */

const HASH_OID: Record<HashName, string> = { sha256: id_sha256, sha384: id_sha384, sha512: id_sha512 };
const RSA_PKCS1_OID: Record<HashName, string> = {
  sha256: id_sha256WithRSAEncryption,
  sha384: id_sha384WithRSAEncryption,
  sha512: id_sha512WithRSAEncryption,
};
const ECDSA_OID: Record<HashName, string> = {
  sha256: id_ecdsaWithSHA256,
  sha384: id_ecdsaWithSHA384,
  sha512: id_ecdsaWithSHA512,
};
const ID_ED25519 = '1.3.101.112';
const ID_ED448 = '1.3.101.113';

/** The algorithm a key signs certificates and CSRs with when the caller does not choose. */
export function defaultPkiAlgorithm(spec: KeySpec): SigningAlgorithm {
  const info = KEY_SPEC_INFO[spec];
  if (info.keyType === 'RSA') return 'RSASSA_PKCS1_V1_5_SHA_256';
  return info.bits > 256 ? 'ECDSA_SHA_384' : 'ECDSA_SHA_256';
}

/** The requested algorithm checked against the key type, or the default. INVALID_ARGUMENT naming `field`. */
export function pkiSigningAlgorithm(spec: KeySpec, requested?: unknown, field = 'algorithm'): SigningAlgorithm {
  if (requested === undefined) return defaultPkiAlgorithm(spec);
  if (!isSigningAlgorithm(requested)) throw invalid(`${field}: unknown signing algorithm ${JSON.stringify(requested)}`);
  if (algorithmInfo(requested).keyType !== KEY_SPEC_INFO[spec].keyType) {
    throw invalid(`${field}: ${requested} cannot be used with a ${spec} key`);
  }
  return requested;
}

function hashIdentifier(h: HashName): AlgorithmIdentifier {
  // NULL parameters, as RFC 4055 and OpenSSL encode them inside RSASSA-PSS-params.
  return new AlgorithmIdentifier({ algorithm: HASH_OID[h], parameters: null });
}

/** The signatureAlgorithm / TBS `signature` field for `alg`. */
export function signatureAlgorithmIdentifier(alg: SigningAlgorithm): AlgorithmIdentifier {
  const { hash, padding, digestLength } = algorithmInfo(alg);
  switch (padding) {
    case 'PKCS1_V1_5':
      // RFC 4055 §5: the parameters MUST be NULL.
      return new AlgorithmIdentifier({ algorithm: RSA_PKCS1_OID[hash], parameters: null });
    case 'ECDSA':
      // RFC 5758 §3.2: the parameters MUST be absent.
      return new AlgorithmIdentifier({ algorithm: ECDSA_OID[hash] });
    case 'PSS': {
      const params = new RsaSaPssParams({
        hashAlgorithm: hashIdentifier(hash),
        maskGenAlgorithm: new AlgorithmIdentifier({
          algorithm: id_mgf1,
          parameters: AsnConvert.serialize(hashIdentifier(hash)),
        }),
        saltLength: digestLength,
        trailerField: 1,
      });
      return new AlgorithmIdentifier({ algorithm: id_RSASSA_PSS, parameters: AsnConvert.serialize(params) });
    }
  }
}

/** How to verify a signature made with some AlgorithmIdentifier, in node:crypto terms. */
export interface VerifyScheme {
  /** Human-readable, for error messages. */
  readonly name: string;
  /** null for EdDSA (node:crypto takes no digest there). */
  readonly hash: HashName | null;
  readonly rsaPadding?: number;
  readonly saltLength?: number;
  readonly keyTypes: readonly string[];
}

function hashFromOid(oid: string): HashName | undefined {
  return (Object.keys(HASH_OID) as HashName[]).find((h) => HASH_OID[h] === oid);
}

/** The verify scheme for a signature AlgorithmIdentifier, or undefined if it is not supported (SHA-1, MD5, unknown). */
export function verifySchemeFor(algId: AlgorithmIdentifier): VerifyScheme | undefined {
  const oid = algId.algorithm;
  for (const h of Object.keys(HASH_OID) as HashName[]) {
    if (oid === RSA_PKCS1_OID[h]) {
      return { name: `${h}WithRSAEncryption`, hash: h, rsaPadding: constants.RSA_PKCS1_PADDING, keyTypes: ['rsa'] };
    }
    if (oid === ECDSA_OID[h]) return { name: `ecdsa-with-${h.toUpperCase()}`, hash: h, keyTypes: ['ec'] };
  }
  if (oid === ID_ED25519) return { name: 'Ed25519', hash: null, keyTypes: ['ed25519'] };
  if (oid === ID_ED448) return { name: 'Ed448', hash: null, keyTypes: ['ed448'] };
  if (oid === id_RSASSA_PSS) {
    if (!algId.parameters) return undefined;
    let params: RsaSaPssParams;
    let mgfHash: AlgorithmIdentifier;
    try {
      params = AsnConvert.parse(algId.parameters, RsaSaPssParams);
      if (params.maskGenAlgorithm.algorithm !== id_mgf1 || !params.maskGenAlgorithm.parameters) return undefined;
      mgfHash = AsnConvert.parse(params.maskGenAlgorithm.parameters, AlgorithmIdentifier);
    } catch {
      return undefined;
    }
    const h = hashFromOid(params.hashAlgorithm.algorithm);
    // node:crypto uses the message digest for MGF1, so only matching MGF1 hashes are verifiable.
    if (!h || mgfHash.algorithm !== HASH_OID[h] || params.trailerField !== 1) return undefined;
    if (!Number.isSafeInteger(params.saltLength) || params.saltLength < 0) return undefined;
    return {
      name: `RSASSA-PSS(${h}, saltLength ${params.saltLength})`,
      hash: h,
      rsaPadding: constants.RSA_PKCS1_PSS_PADDING,
      saltLength: params.saltLength,
      keyTypes: ['rsa', 'rsa-pss'],
    };
  }
  return undefined;
}

/** Verifies `signature` over `data`; false (never throws) for a wrong key type or a malformed signature. */
export function verifySignature(scheme: VerifyScheme, data: Uint8Array, publicKey: KeyObject, signature: Uint8Array): boolean {
  if (!scheme.keyTypes.includes(publicKey.asymmetricKeyType ?? '')) return false;
  try {
    return verify(scheme.hash, data, { key: publicKey, padding: scheme.rsaPadding, saltLength: scheme.saltLength, dsaEncoding: 'der' }, signature);
  } catch {
    return false;
  }
}
