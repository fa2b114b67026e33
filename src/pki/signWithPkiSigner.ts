import { algorithmInfo, type SigningAlgorithm } from '../crypto/algorithms.js';
import { hash } from '../crypto/digest.js';
import { ServiceError } from '../errors.js';
import type { PkiSigner } from './PkiSigner.js';
import { signatureAlgorithmIdentifier, verifySchemeFor, verifySignature } from './signatureAlgorithm.js';

/**
 * Signs a DER to-be-signed structure (TBSCertificate, CertificationRequestInfo) through the
 * seam: hash it with the algorithm's hash, have the signer sign the digest, and check the
 * result against the signer's public key before anyone embeds it in a certificate.
 */
export async function signWithPkiSigner(signer: PkiSigner, algorithm: SigningAlgorithm, tbsDer: Uint8Array): Promise<Buffer> {
  const digest = hash(algorithmInfo(algorithm).hash, Buffer.from(tbsDer));
  const signature = await signer.sign(algorithm, digest);
  const scheme = verifySchemeFor(signatureAlgorithmIdentifier(algorithm));
  if (!scheme || !verifySignature(scheme, tbsDer, signer.publicKey, signature)) {
    throw new ServiceError('INTERNAL', `the ${algorithm} signature returned for the key does not verify with its public key`);
  }
  return signature;
}
