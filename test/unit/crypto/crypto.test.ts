import { createHash, generateKeyPairSync, publicDecrypt, constants, sign, verify } from 'node:crypto';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { algorithmInfo, algorithmsFor, KEY_SPECS, signatureLength, SIGNING_ALGORITHMS } from '../../../src/crypto/algorithms.js';
import { digestInfo } from '../../../src/crypto/digest.js';
import { AsnConvert } from '@peculiar/asn1-schema';
import { ECDSASigValue } from '@peculiar/asn1-ecc';
import { ecdsaDerToRaw, ecdsaRawToDer } from '../../../src/crypto/ecdsaSignature.js';
import { keyLabel, parseKeyLabel } from '../../../src/hsm/keyLabel.js';

test('algorithm table: hash, digest length, key type', () => {
  assert.deepEqual(algorithmInfo('RSASSA_PSS_SHA_384'), { name: 'RSASSA_PSS_SHA_384', keyType: 'RSA', hash: 'sha384', digestLength: 48, padding: 'PSS' });
  assert.deepEqual(algorithmInfo('ECDSA_SHA_512'), { name: 'ECDSA_SHA_512', keyType: 'EC', hash: 'sha512', digestLength: 64, padding: 'ECDSA' });
  assert.equal(algorithmsFor('RSA_3072').length, 6);
  assert.deepEqual(algorithmsFor('ECC_NIST_P384'), ['ECDSA_SHA_256', 'ECDSA_SHA_384', 'ECDSA_SHA_512']);
  assert.equal(SIGNING_ALGORITHMS.length, 9);
  assert.deepEqual(KEY_SPECS.map(signatureLength), [256, 384, 512, 64, 96]);
});

test('DigestInfo matches what OpenSSL recovers from a PKCS#1 v1.5 signature', () => {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  for (const h of ['sha256', 'sha384', 'sha512'] as const) {
    const m = Buffer.from(`digest info ${h}`);
    const recovered = publicDecrypt({ key: publicKey, padding: constants.RSA_PKCS1_PADDING }, sign(h, m, privateKey));
    assert.deepEqual(recovered, digestInfo(h, createHash(h).update(m).digest()));
  }
});

test('ECDSA raw <-> DER round trip, checked by node:crypto on both curves', () => {
  for (const [curve, size] of [
    ['P-256', 32],
    ['P-384', 48],
  ] as const) {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: curve });
    for (let i = 0; i < 100; i++) {
      const m = Buffer.from(`m${i}`);
      const raw = sign('sha256', m, { key: privateKey, dsaEncoding: 'ieee-p1363' });
      const der = ecdsaRawToDer(raw);
      assert.ok(verify('sha256', m, publicKey, der));
      assert.deepEqual(ecdsaDerToRaw(der, size), raw);
    }
  }
  assert.throws(() => ecdsaRawToDer(Buffer.alloc(63)));
  assert.throws(() => ecdsaDerToRaw(Buffer.from('3003020101', 'hex'), 32));
});

test('ECDSA raw -> DER matches the ASN.1 schema encoding at the edges (leading zeros, high bits)', () => {
  // r and s are in [1, n-1]: zero is not an ECDSA value and is left out.
  const edges = [Buffer.alloc(32, 0xff), Buffer.concat([Buffer.alloc(31), Buffer.from([1])]), Buffer.concat([Buffer.from([0x00, 0x80]), Buffer.alloc(30, 7)])];
  // The reference: @peculiar's ECDSASigValue over each value's minimal two's-complement bytes (from BigInt).
  const reference = (r: Buffer, s: Buffer): Buffer => {
    const int = (b: Buffer): ArrayBuffer => {
      let hex = BigInt(`0x${b.toString('hex')}`).toString(16);
      if (hex.length % 2) hex = `0${hex}`;
      if (parseInt(hex[0]!, 16) >= 8) hex = `00${hex}`;
      return new Uint8Array(Buffer.from(hex, 'hex')).buffer;
    };
    return Buffer.from(AsnConvert.serialize(new ECDSASigValue({ r: int(r), s: int(s) })));
  };
  for (const r of edges) {
    for (const s of edges) {
      const der = ecdsaRawToDer(Buffer.concat([r, s]));
      assert.deepEqual(der, reference(r, s));
      assert.deepEqual(ecdsaDerToRaw(der, 32), Buffer.concat([r, s]));
    }
  }
});

test('key labels: name/vN, plain labels are version 1, bad names rejected', () => {
  assert.equal(keyLabel('payments', 3), 'payments/v3');
  assert.deepEqual(parseKeyLabel('payments/v3'), { name: 'payments', version: 3 });
  assert.deepEqual(parseKeyLabel('made-by-pkcs11-tool'), { name: 'made-by-pkcs11-tool', version: 1 });
  assert.equal(parseKeyLabel('a/v0'), undefined);
  assert.equal(parseKeyLabel('../x'), undefined);
  assert.equal(parseKeyLabel('x'.repeat(65)), undefined);
  assert.equal(parseKeyLabel('clé'), undefined);
});
