import { AsnConvert } from '@peculiar/asn1-schema';
import { ECDSASigValue } from '@peculiar/asn1-ecc';

/** ECDSA signature encodings: PKCS#11 and JWS use raw r||s, X.509/X9.62 use the DER SEQUENCE. */

function unsignedInteger(bytes: Uint8Array): ArrayBuffer {
  let start = 0;
  while (start < bytes.length - 1 && bytes[start] === 0) start++;
  const trimmed = bytes.subarray(start);
  // An INTEGER is signed: a high bit needs a leading zero to stay positive.
  const out = new Uint8Array(((trimmed[0] ?? 0) & 0x80 ? 1 : 0) + trimmed.length);
  out.set(trimmed, out.length - trimmed.length);
  return out.buffer;
}

export function ecdsaRawToDer(raw: Buffer): Buffer {
  if (raw.length === 0 || raw.length % 2 !== 0) throw new RangeError('raw ECDSA signature must be r||s of equal halves');
  const half = raw.length / 2;
  const value = new ECDSASigValue({ r: unsignedInteger(raw.subarray(0, half)), s: unsignedInteger(raw.subarray(half)) });
  return Buffer.from(AsnConvert.serialize(value));
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
