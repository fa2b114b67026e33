/**
 * JSON request bodies: nesting is bounded before parsing, and `__proto__` / `constructor` keys
 * are plain (refused) fields, on the real app over HTTP with a real SoftHSMv2 token.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import request from 'supertest';
import { createTestToken, startTestService, type TestToken } from '../support/testToken.js';

let token: TestToken;
let svc: Awaited<ReturnType<typeof startTestService>>;

before(async () => {
  token = await createTestToken([{ name: 'ec', spec: 'ECC_NIST_P256' }]);
  svc = await startTestService(token);
});
after(async () => {
  await svc?.close();
  token?.cleanup();
});

const b64 = Buffer.from('x').toString('base64');
const post = (path: string, raw: string, contentType = 'application/json') => request(svc.app).post(path).set('content-type', contentType).send(raw);

function invalidNaming(res: request.Response, message: RegExp | string): void {
  assert.equal(res.status, 400, res.text);
  assert.equal(res.body.error.code, 'INVALID_ARGUMENT');
  if (typeof message === 'string') assert.equal(res.body.error.message, message);
  else assert.match(res.body.error.message, message);
  assert.equal(res.body.error.requestId, res.headers['x-request-id']);
}

test('a 100,000-deep body is a 400 naming the body, found before parsing, cheaply', async () => {
  const TOO_DEEP = 'body: JSON nested deeper than 32 levels';
  for (const path of ['/v1/keys/ec/sign', '/v1/sign/batch', '/v1/keys/ec/csr']) {
    const t = performance.now();
    invalidNaming(await post(path, '['.repeat(100_000) + ']'.repeat(100_000)), TOO_DEEP);
    assert.ok(performance.now() - t < 1000, `${path}: answered in ${(performance.now() - t).toFixed(0)} ms`);
  }
  invalidNaming(await post('/v1/keys/ec/sign', `${'{"a":'.repeat(50_000)}1${'}'.repeat(50_000)}`), TOO_DEEP);
  // Never closed: JSON.parse would call it malformed; the depth check comes first.
  invalidNaming(await post('/v1/keys/ec/sign', '['.repeat(100_000)), TOO_DEEP);
  // Within the limit, the schema has its say; brackets inside strings do not count.
  invalidNaming(await post('/v1/keys/ec/sign', JSON.stringify({ algorithm: 'ECDSA_SHA_256', message: b64, x: [[[[[[1]]]]]] })), "body: unknown field(s) 'x'");
  invalidNaming(
    await post('/v1/keys/ec/sign', JSON.stringify({ algorithm: 'ECDSA_SHA_256', message: b64, x: '['.repeat(1000) })),
    "body: unknown field(s) 'x'",
  );
  // The service still signs.
  assert.equal((await post('/v1/keys/ec/sign', JSON.stringify({ algorithm: 'ECDSA_SHA_256', message: b64 }))).status, 200);
});

test('__proto__ and constructor keys pollute no prototype and are refused as unknown fields', async () => {
  const protoBefore = Object.getOwnPropertyNames(Object.prototype).sort();
  const cases: [string, string, string][] = [
    [
      '/v1/keys/ec/sign',
      `{"algorithm":"ECDSA_SHA_256","message":"${b64}","__proto__":{"polluted":"yes","isAdmin":true}}`,
      "body: unknown field(s) '__proto__'",
    ],
    [
      '/v1/keys/ec/sign',
      `{"algorithm":"ECDSA_SHA_256","message":"${b64}","constructor":{"prototype":{"polluted":"yes"}}}`,
      "body: unknown field(s) 'constructor'",
    ],
    [
      '/v1/keys/ec/verify',
      `{"algorithm":"ECDSA_SHA_256","message":"${b64}","signature":"${b64}","__proto__":{"polluted":"yes"}}`,
      "body: unknown field(s) '__proto__'",
    ],
    ['/v1/sign/batch', `{"requests":[1],"__proto__":{"polluted":"yes"}}`, "body: unknown field(s) '__proto__'"],
    ['/v1/keys/ec/csr', `{"subject":"CN=x","__proto__":{"polluted":"yes"}}`, "body: unknown field(s) '__proto__'"],
    ['/v1/keys/ec/csr', `{"subject":"CN=x","subjectAltNames":{"__proto__":{"polluted":"yes"}}}`, 'subjectAltNames'],
  ];
  for (const [path, raw, message] of cases) {
    const res = await post(path, raw);
    if (message.startsWith('body:')) invalidNaming(res, message);
    else invalidNaming(res, new RegExp(`^${message}\\b.*__proto__`));
  }
  // A batch item: refused on its own, the request as a whole answered.
  const batch = await post('/v1/sign/batch', `{"requests":[{"keyName":"ec","algorithm":"ECDSA_SHA_256","message":"${b64}","__proto__":{"keyName":"other"}}]}`);
  assert.equal(batch.status, 200, batch.text);
  assert.equal(batch.body.results[0].error.code, 'INVALID_ARGUMENT');
  assert.equal(batch.body.results[0].error.message, "requests[0]: unknown field(s) '__proto__'");
  const probe: Record<string, unknown> = {};
  assert.equal(probe.polluted, undefined);
  assert.equal(probe.isAdmin, undefined);
  assert.deepEqual(Object.getOwnPropertyNames(Object.prototype).sort(), protoBefore);
});

test('a body that is not UTF-8 JSON is a 415 naming the charset', async () => {
  const body = Buffer.from(JSON.stringify({ algorithm: 'ECDSA_SHA_256', message: b64 }), 'utf16le');
  const res = await request(svc.app).post('/v1/keys/ec/sign').set('content-type', 'application/json; charset=utf-16le').send(body);
  assert.equal(res.status, 415, res.text);
  assert.equal(res.body.error.code, 'UNSUPPORTED_MEDIA_TYPE');
  assert.match(res.body.error.message, /charset/);
  assert.equal(
    (
      await request(svc.app)
        .post('/v1/keys/ec/sign')
        .set('content-type', 'application/json; charset=UTF-8')
        .send(JSON.stringify({ algorithm: 'ECDSA_SHA_256', message: b64 }))
    ).status,
    200,
  );
});
