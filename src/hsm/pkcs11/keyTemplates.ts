import { KEY_SPEC_INFO, type KeySpec } from '../../crypto/algorithms.js';
import type { Attribute, Mechanism } from './AsyncPkcs11.js';
import { P11 } from './constants.js';
import { ecParamsFor } from './publicKey.js';

/**
 * The templates of a signing key pair: token objects, the private half sensitive,
 * non-extractable and usable for signing only (no decrypt, unwrap or derive).
 */
export function signingKeyPairTemplates(
  spec: KeySpec,
  label: string,
  id: Buffer,
): { mechanism: Mechanism; publicTemplate: Attribute[]; privateTemplate: Attribute[] } {
  const info = KEY_SPEC_INFO[spec];
  const common: Attribute[] = [
    { type: P11.CKA_TOKEN, value: true },
    { type: P11.CKA_LABEL, value: label },
    { type: P11.CKA_ID, value: id },
  ];
  const publicTemplate: Attribute[] = [
    ...common,
    { type: P11.CKA_PRIVATE, value: false },
    { type: P11.CKA_VERIFY, value: true },
    { type: P11.CKA_ENCRYPT, value: false },
    { type: P11.CKA_WRAP, value: false },
    ...(info.keyType === 'RSA'
      ? [
          { type: P11.CKA_MODULUS_BITS, value: info.bits },
          { type: P11.CKA_PUBLIC_EXPONENT, value: Buffer.from([1, 0, 1]) },
        ]
      : [{ type: P11.CKA_EC_PARAMS, value: ecParamsFor(spec) }]),
  ];
  const privateTemplate: Attribute[] = [
    ...common,
    { type: P11.CKA_PRIVATE, value: true },
    { type: P11.CKA_SENSITIVE, value: true },
    { type: P11.CKA_EXTRACTABLE, value: false },
    { type: P11.CKA_SIGN, value: true },
    { type: P11.CKA_DECRYPT, value: false },
    { type: P11.CKA_UNWRAP, value: false },
    { type: P11.CKA_DERIVE, value: false },
  ];
  const mechanism = { mechanism: info.keyType === 'RSA' ? P11.CKM_RSA_PKCS_KEY_PAIR_GEN : P11.CKM_EC_KEY_PAIR_GEN };
  return { mechanism, publicTemplate, privateTemplate };
}
