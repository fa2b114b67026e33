import { constants, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { algorithmInfo, type SigningAlgorithm } from '../src/crypto/algorithms.js';

/** Verifies a signature over `message` the way a relying party would (DER for ECDSA). */
export function signatureValid(algorithm: SigningAlgorithm, message: Buffer, key: KeyObject, signature: Buffer): boolean {
  const info = algorithmInfo(algorithm);
  const options =
    info.padding === 'PSS'
      ? { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: info.digestLength }
      : info.padding === 'ECDSA'
        ? { key, dsaEncoding: 'der' as const }
        : { key };
  try {
    return cryptoVerify(info.hash, message, options, signature);
  } catch {
    return false;
  }
}
