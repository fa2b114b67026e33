import { execFileSync } from 'node:child_process';
import { constants, createHash, verify } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import request from 'supertest';
import { algorithmInfo, algorithmsFor, KEY_SPECS, type KeySpec, type SigningAlgorithm } from '../../src/crypto/algorithms.js';
import { createTestToken, startTestService, type TestToken } from '../support/testToken.js';

const KEYS = KEY_SPECS.map((spec) => ({ name: `k-${spec.toLowerCase()}`, spec }));
let token: TestToken;
let svc: Awaited<ReturnType<typeof startTestService>>;
const publicKeys = new Map<string, string>();

before(async () => {
  token = await createTestToken(KEYS);
  svc = await startTestService(token);
  const res = await request(svc.app).get('/v1/keys').expect(200);
  for (const k of res.body.keys) publicKeys.set(k.name, k.versions[0].publicKeyPem);
});
after(async () => {
  await svc?.close();
  token?.cleanup();
});

function nodeVerify(pem: string, algorithm: SigningAlgorithm, message: Buffer, signature: Buffer, dsaEncoding: 'der' | 'ieee-p1363' = 'der'): boolean {
  const info = algorithmInfo(algorithm);
  const key = info.padding === 'PSS' ? { key: pem, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: info.digestLength } : { key: pem, dsaEncoding };
  return verify(info.hash, message, key, signature);
}

function opensslVerify(pem: string, algorithm: SigningAlgorithm, message: Buffer, signature: Buffer): string {
  const dir = mkdtempSync(join(tmpdir(), 'ossl-'));
  writeFileSync(join(dir, 'pub.pem'), pem);
  writeFileSync(join(dir, 'msg'), message);
  writeFileSync(join(dir, 'sig'), signature);
  const info = algorithmInfo(algorithm);
  const pss = info.padding === 'PSS' ? ['-sigopt', 'rsa_padding_mode:pss', '-sigopt', 'rsa_pss_saltlen:digest'] : [];
  return execFileSync('openssl', ['dgst', `-${info.hash}`, '-verify', join(dir, 'pub.pem'), ...pss, '-signature', join(dir, 'sig'), join(dir, 'msg')], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  }).trim();
}

describe('every algorithm with every key spec, checked by node:crypto', () => {
  for (const { name, spec } of KEYS) {
    for (const algorithm of algorithmsFor(spec as KeySpec)) {
      test(`${spec} ${algorithm}`, async () => {
        const message = Buffer.from(`message for ${spec} ${algorithm}`);
        const res = await request(svc.app)
          .post(`/v1/keys/${name}/sign`)
          .send({ algorithm, message: message.toString('base64') })
          .expect(200);
        assert.equal(res.body.keyName, name);
        assert.equal(res.body.keyVersion, 1);
        assert.equal(res.body.algorithm, algorithm);
        const signature = Buffer.from(res.body.signature, 'base64');
        assert.ok(nodeVerify(publicKeys.get(name)!, algorithm, message, signature), 'signature over the message verifies');
        assert.ok(!nodeVerify(publicKeys.get(name)!, algorithm, Buffer.concat([message, Buffer.from('!')]), signature), 'and not over another message');

        // The same with a digest the caller computed.
        const digest = createHash(algorithmInfo(algorithm).hash).update(message).digest();
        const res2 = await request(svc.app)
          .post(`/v1/keys/${name}/sign`)
          .send({ algorithm, digest: digest.toString('base64') })
          .expect(200);
        assert.ok(nodeVerify(publicKeys.get(name)!, algorithm, message, Buffer.from(res2.body.signature, 'base64')));

        // And the service's own verify, by message and by digest, true and false.
        for (const input of [{ message: message.toString('base64') }, { digest: digest.toString('base64') }]) {
          const ok = await request(svc.app)
            .post(`/v1/keys/${name}/verify`)
            .send({ algorithm, ...input, signature: res.body.signature })
            .expect(200);
          assert.deepEqual(ok.body, { valid: true, keyVersion: 1 });
          const tampered = Buffer.from(res.body.signature, 'base64');
          tampered[tampered.length - 3]! ^= 0x01;
          const bad = await request(svc.app)
            .post(`/v1/keys/${name}/verify`)
            .send({ algorithm, ...input, signature: tampered.toString('base64') })
            .expect(200);
          assert.equal(bad.body.valid, false);
        }
      });
    }
  }
});

test('verify: only the exact encoding is valid (trailing bytes, padded DER, a short or long PSS signature are not)', async () => {
  const message = Buffer.from('encodings');
  for (const [name, algorithm] of [
    ['k-ecc_nist_p256', 'ECDSA_SHA_256'],
    ['k-rsa_2048', 'RSASSA_PSS_SHA_256'],
  ] as const) {
    const signed = await request(svc.app)
      .post(`/v1/keys/${name}/sign`)
      .send({ algorithm, message: message.toString('base64') })
      .expect(200);
    const sig = Buffer.from(signed.body.signature, 'base64');
    const variants =
      algorithm === 'ECDSA_SHA_256'
        ? [Buffer.concat([sig, Buffer.from([0, 0, 0])]), Buffer.concat([Buffer.from([0x30, sig[1]! + 1, 0x02, sig[3]! + 1, 0x00]), sig.subarray(4)])]
        : [sig.subarray(1), Buffer.concat([sig, Buffer.from([0])])];
    const digest = createHash('sha256').update(message).digest().toString('base64');
    for (const [i, bad] of variants.entries()) {
      // `openssl dgst -verify` accepts a signature with bytes appended (variant 0 of ECDSA, 1 of PSS);
      // the service does not: one signature, one encoding.
      if ((algorithm === 'ECDSA_SHA_256') === (i === 1)) {
        // openssl exits 1 for a signature it rejects ("Verification failure", or "Error verifying data" for DER it
        // cannot parse); anything else (no openssl, a bad key file) fails the test.
        const run = (): string => opensslVerify(publicKeys.get(name)!, algorithm, message, bad);
        const rejected = (e: { status?: number; stdout?: string; stderr?: string }): boolean =>
          e.status === 1 && /Verification failure|Error verifying data/.test(`${e.stdout ?? ''}${e.stderr ?? ''}`);
        assert.throws(run, rejected, `openssl rejects it too: ${name} ${bad.toString('hex')}`);
      }
      for (const input of [{ message: message.toString('base64') }, { digest }]) {
        const r = await request(svc.app)
          .post(`/v1/keys/${name}/verify`)
          .send({ algorithm, ...input, signature: bad.toString('base64') })
          .expect(200);
        assert.equal(r.body.valid, false, `${name} ${bad.toString('hex')} ${Object.keys(input)[0]}`);
      }
    }
  }
});

describe('checked by the openssl CLI', () => {
  const cases: [string, SigningAlgorithm][] = [
    ['k-rsa_2048', 'RSASSA_PKCS1_V1_5_SHA_256'],
    ['k-rsa_3072', 'RSASSA_PSS_SHA_384'],
    ['k-rsa_4096', 'RSASSA_PSS_SHA_256'],
    ['k-ecc_nist_p256', 'ECDSA_SHA_256'],
    ['k-ecc_nist_p384', 'ECDSA_SHA_384'],
  ];
  for (const [name, algorithm] of cases) {
    test(`${name} ${algorithm}`, async () => {
      const message = Buffer.from(`openssl checks ${name}`);
      const res = await request(svc.app)
        .post(`/v1/keys/${name}/sign`)
        .send({ algorithm, message: message.toString('base64') })
        .expect(200);
      assert.equal(opensslVerify(publicKeys.get(name)!, algorithm, message, Buffer.from(res.body.signature, 'base64')), 'Verified OK');
    });
  }
});

test('ECDSA raw r||s on request (JWS form), verified as IEEE P1363', async () => {
  const message = Buffer.from('jws payload');
  for (const [name, len] of [
    ['k-ecc_nist_p256', 64],
    ['k-ecc_nist_p384', 96],
  ] as const) {
    const res = await request(svc.app)
      .post(`/v1/keys/${name}/sign`)
      .send({ algorithm: 'ECDSA_SHA_256', message: message.toString('base64'), signatureFormat: 'raw' })
      .expect(200);
    const sig = Buffer.from(res.body.signature, 'base64');
    assert.equal(sig.length, len);
    assert.ok(nodeVerify(publicKeys.get(name)!, 'ECDSA_SHA_256', message, sig, 'ieee-p1363'));
    const v = await request(svc.app)
      .post(`/v1/keys/${name}/verify`)
      .send({ algorithm: 'ECDSA_SHA_256', message: message.toString('base64'), signatureFormat: 'raw', signature: res.body.signature })
      .expect(200);
    assert.equal(v.body.valid, true);
  }
});

test('batch sign: results in request order, one bad item does not fail the others', async () => {
  const m = (s: string): string => Buffer.from(s).toString('base64');
  const res = await request(svc.app)
    .post('/v1/sign/batch')
    .send({
      requests: [
        { keyName: 'k-ecc_nist_p256', algorithm: 'ECDSA_SHA_256', message: m('one') },
        { keyName: 'no-such-key', algorithm: 'ECDSA_SHA_256', message: m('two') },
        { keyName: 'k-rsa_2048', algorithm: 'RSASSA_PSS_SHA_256', message: m('three') },
        { keyName: 'k-rsa_2048', algorithm: 'ECDSA_SHA_256', message: m('four') },
        { keyName: 'k-rsa_2048', algorithm: 'RSASSA_PKCS1_V1_5_SHA_256', digest: 'AAAA' },
        { keyName: 'k-ecc_nist_p384', algorithm: 'ECDSA_SHA_384', message: m('six'), keyVersion: 1 },
      ],
    })
    .expect(200);
  const r = res.body.results;
  assert.equal(r.length, 6);
  assert.ok(nodeVerify(publicKeys.get('k-ecc_nist_p256')!, 'ECDSA_SHA_256', Buffer.from('one'), Buffer.from(r[0].signature, 'base64')));
  assert.equal(r[1].error.code, 'NOT_FOUND');
  assert.ok(nodeVerify(publicKeys.get('k-rsa_2048')!, 'RSASSA_PSS_SHA_256', Buffer.from('three'), Buffer.from(r[2].signature, 'base64')));
  assert.equal(r[3].error.code, 'INVALID_ARGUMENT');
  assert.equal(r[4].error.code, 'INVALID_ARGUMENT');
  assert.match(r[4].error.message, /digest/);
  assert.equal(r[5].keyVersion, 1);
  assert.ok(nodeVerify(publicKeys.get('k-ecc_nist_p384')!, 'ECDSA_SHA_384', Buffer.from('six'), Buffer.from(r[5].signature, 'base64')));
});

test('keys: list, one, JWKS with kid name/vN', async () => {
  const list = await request(svc.app).get('/v1/keys').expect(200);
  assert.deepEqual(list.body.keys.map((k: { name: string }) => k.name).sort(), KEYS.map((k) => k.name).sort());
  const one = await request(svc.app).get('/v1/keys/k-rsa_2048').expect(200);
  assert.equal(one.body.keySpec, 'RSA_2048');
  assert.equal(one.body.currentVersion, 1);
  assert.deepEqual(one.body.signingAlgorithms, algorithmsFor('RSA_2048'));
  const jwks = await request(svc.app).get('/v1/keys/k-ecc_nist_p256/jwks').expect(200);
  assert.equal(jwks.body.keys[0].kid, 'k-ecc_nist_p256/v1');
  assert.equal(jwks.body.keys[0].crv, 'P-256');
});

test('health and readiness, X-Request-Id echoed', async () => {
  await request(svc.app).get('/healthz').expect(200, { status: 'ok' });
  const ready = await request(svc.app).get('/readyz').set('X-Request-Id', 'abc-123').expect(200);
  assert.equal(ready.body.status, 'ready');
  assert.equal(ready.headers['x-request-id'], 'abc-123');
  const fresh = await request(svc.app).get('/healthz').set('X-Request-Id', 'bad id with spaces');
  assert.notEqual(fresh.headers['x-request-id'], 'bad id with spaces');
  assert.match(fresh.headers['x-request-id']!, /^[0-9a-f-]{36}$/);
});
