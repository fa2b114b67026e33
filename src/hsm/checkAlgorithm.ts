import { algorithmInfo, KEY_SPEC_INFO, type KeySpec, type SigningAlgorithm } from '../crypto/algorithms.js';
import { invalid } from '../errors.js';

/**
 * The one rule for which key an algorithm may use: RSA algorithms with RSA keys, ECDSA with EC
 * keys. The KeyManager applies it to every sign and HSM verify; the service applies it before
 * verifying with the cached public key, where no KeyManager call is made.
 */
export function checkAlgorithm(algorithm: SigningAlgorithm, keyName: string, keySpec: KeySpec): void {
  if (algorithmInfo(algorithm).keyType !== KEY_SPEC_INFO[keySpec].keyType) {
    throw invalid(`algorithm: ${algorithm} cannot be used with key '${keyName}' (${keySpec})`);
  }
}
