import type { KeyObject } from 'node:crypto';
import type { KeySpec, SigningAlgorithm } from '../crypto/algorithms.js';

/**
 * What the PKI code needs from a key: its public half and a way to sign a digest.
 * In the service it is backed by the HSM (KeyManager.sign); in unit tests by a node:crypto key.
 */
export interface PkiSigner {
  readonly keySpec: KeySpec;
  readonly publicKey: KeyObject;
  /** Signs a digest the caller computed with the algorithm's hash. ECDSA signatures come back DER (X9.62), as X.509 needs them. */
  sign(algorithm: SigningAlgorithm, digest: Buffer): Promise<Buffer>;
}
