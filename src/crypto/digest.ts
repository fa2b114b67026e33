import { createHash } from 'node:crypto';
import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import { AlgorithmIdentifier } from '@peculiar/asn1-x509';
import { DigestInfo, id_sha256, id_sha384, id_sha512 } from '@peculiar/asn1-rsa';
import { HASH_LENGTH, type HashName } from './algorithms.js';

export function hash(name: HashName, data: Buffer): Buffer {
  return createHash(name).update(data).digest();
}

const HASH_OID: Record<HashName, string> = { sha256: id_sha256, sha384: id_sha384, sha512: id_sha512 };

// The DER of a DigestInfo is a fixed prefix followed by the digest. Encode it once per hash
// through the ASN.1 library (never by hand), then only concatenate on the hot path.
function prefixOf(h: HashName): Buffer {
  const der = Buffer.from(
    AsnConvert.serialize(
      new DigestInfo({
        digestAlgorithm: new AlgorithmIdentifier({ algorithm: HASH_OID[h], parameters: null }),
        digest: new OctetString(new Uint8Array(HASH_LENGTH[h])),
      }),
    ),
  );
  return der.subarray(0, der.length - HASH_LENGTH[h]);
}
const PREFIX: Record<HashName, Buffer> = { sha256: prefixOf('sha256'), sha384: prefixOf('sha384'), sha512: prefixOf('sha512') };

/** PKCS#1 v1.5 DigestInfo(hash, digest), the input CKM_RSA_PKCS signs. */
export function digestInfo(name: HashName, digest: Buffer): Buffer {
  return Buffer.concat([PREFIX[name], digest]);
}
