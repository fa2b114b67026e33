import { algorithmInfo, type HashName, type SigningAlgorithm } from '../../crypto/algorithms.js';
import { digestInfo } from '../../crypto/digest.js';
import type { Mechanism } from './AsyncPkcs11.js';
import { P11 } from './constants.js';

const PSS_HASH: Record<HashName, { hashAlg: number; mgf: number }> = {
  sha256: { hashAlg: P11.CKM_SHA256, mgf: P11.CKG_MGF1_SHA256 },
  sha384: { hashAlg: P11.CKM_SHA384, mgf: P11.CKG_MGF1_SHA384 },
  sha512: { hashAlg: P11.CKM_SHA512, mgf: P11.CKG_MGF1_SHA512 },
};

const RSA_PKCS: Mechanism = { mechanism: P11.CKM_RSA_PKCS };
const ECDSA: Mechanism = { mechanism: P11.CKM_ECDSA };
const pss = (h: HashName): Mechanism => ({
  mechanism: P11.CKM_RSA_PKCS_PSS,
  parameter: { ...PSS_HASH[h], saltLen: algorithmInfo(`RSASSA_PSS_SHA_${h.slice(3)}` as SigningAlgorithm).digestLength, type: P11.CK_PARAMS_RSA_PSS },
});
const PSS: Record<HashName, Mechanism> = { sha256: pss('sha256'), sha384: pss('sha384'), sha512: pss('sha512') };

/**
 * The mechanism and input that make the HSM sign a digest the service computed: the HSM never
 * hashes, so one mechanism per padding works on every token (SoftHSMv2 has no CKM_ECDSA_SHA256).
 */
export function signingInput(algorithm: SigningAlgorithm, digest: Buffer): { mechanism: Mechanism; data: Buffer } {
  const info = algorithmInfo(algorithm);
  switch (info.padding) {
    case 'PKCS1_V1_5':
      return { mechanism: RSA_PKCS, data: digestInfo(info.hash, digest) };
    case 'PSS':
      return { mechanism: PSS[info.hash], data: digest };
    case 'ECDSA':
      return { mechanism: ECDSA, data: digest };
  }
}
