import { createPublicKey, type KeyObject } from 'node:crypto';
import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import { ECParameters } from '@peculiar/asn1-ecc';
import { KEY_SPEC_INFO, type KeySpec } from '../../crypto/algorithms.js';

const CURVE_BY_OID = new Map(
  (Object.keys(KEY_SPEC_INFO) as KeySpec[]).flatMap((s) => {
    const curve = KEY_SPEC_INFO[s].curve;
    return curve ? [[curve.oid, s] as const] : [];
  }),
);

const RSA_SPEC_BY_BITS = new Map<number, KeySpec>([
  [2048, 'RSA_2048'],
  [3072, 'RSA_3072'],
  [4096, 'RSA_4096'],
]);

const b64url = (b: Buffer): string => b.toString('base64url');

/** RSA public key from CKA_MODULUS / CKA_PUBLIC_EXPONENT; undefined for a size the contract has no spec for. */
export function rsaPublicKey(modulus: Buffer, exponent: Buffer): { spec: KeySpec; key: KeyObject } | undefined {
  let start = 0;
  while (start < modulus.length - 1 && modulus[start] === 0) start++;
  const n = modulus.subarray(start);
  const spec = RSA_SPEC_BY_BITS.get(n.length * 8);
  if (!spec) return undefined;
  return { spec, key: createPublicKey({ key: { kty: 'RSA', n: b64url(n), e: b64url(exponent) }, format: 'jwk' }) };
}

/** The curve named by CKA_EC_PARAMS (a DER OID), if the contract has a spec for it. */
export function ecSpecFromParams(ecParams: Buffer): KeySpec | undefined {
  try {
    const oid = AsnConvert.parse(ecParams, ECParameters).namedCurve;
    return oid === undefined ? undefined : CURVE_BY_OID.get(oid);
  } catch {
    return undefined;
  }
}

export function ecParamsFor(spec: KeySpec): Buffer {
  const curve = KEY_SPEC_INFO[spec].curve;
  if (!curve) throw new RangeError(`${spec} is not an EC key spec`);
  return Buffer.from(AsnConvert.serialize(new ECParameters({ namedCurve: curve.oid })));
}

/** EC public key from CKA_EC_PARAMS and CKA_EC_POINT (DER OCTET STRING per the spec; some HSMs give the bare point). */
export function ecPublicKey(ecParams: Buffer, ecPoint: Buffer): { spec: KeySpec; key: KeyObject } | undefined {
  const spec = ecSpecFromParams(ecParams);
  if (!spec) return undefined;
  const curve = KEY_SPEC_INFO[spec].curve;
  if (!curve) throw new Error(`${spec} came from a curve OID but has no curve (a bug)`);
  const size = Math.ceil(KEY_SPEC_INFO[spec].bits / 8);
  let point = ecPoint;
  if (point.length !== 1 + 2 * size) {
    try {
      point = Buffer.from(AsnConvert.parse(ecPoint, OctetString).buffer);
    } catch {
      return undefined;
    }
  }
  if (point.length !== 1 + 2 * size || point[0] !== 0x04) return undefined;
  const key = createPublicKey({
    key: { kty: 'EC', crv: curve.jwkName, x: b64url(point.subarray(1, 1 + size)), y: b64url(point.subarray(1 + size)) },
    format: 'jwk',
  });
  return { spec, key };
}
