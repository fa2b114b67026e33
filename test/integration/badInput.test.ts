import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import request from 'supertest';
import { createTestToken, startTestService, type TestToken } from '../support/testToken.js';

let token: TestToken;
let svc: Awaited<ReturnType<typeof startTestService>>;

before(async () => {
  token = await createTestToken([
    { name: 'rsa', spec: 'RSA_2048' },
    { name: 'ec', spec: 'ECC_NIST_P256' },
  ]);
  svc = await startTestService(token, { BODY_LIMIT_BYTES: String(64 * 1024) });
});
after(async () => {
  await svc?.close();
  token?.cleanup();
});

const b64 = (s: string): string => Buffer.from(s).toString('base64');
const d32 = Buffer.alloc(32, 7).toString('base64');

interface Case {
  name: string;
  method?: 'get' | 'post' | 'options';
  path: string;
  body?: unknown;
  raw?: string;
  contentType?: string;
  headers?: Record<string, string>;
  status: number;
  code: string;
  /** The error message must name this field. */
  field?: string;
}

const SIGN = '/v1/keys/ec/sign';
const cases: Case[] = [
  { name: 'malformed JSON', path: SIGN, raw: '{"algorithm": ', status: 400, code: 'INVALID_ARGUMENT', field: 'body' },
  { name: 'JSON array body', path: SIGN, body: [1, 2], status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'JSON string body', path: SIGN, raw: '"hello"', status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'JSON null body', path: SIGN, raw: 'null', status: 400, code: 'INVALID_ARGUMENT' },
  { name: 'empty object', path: SIGN, body: {}, status: 400, code: 'INVALID_ARGUMENT', field: 'algorithm' },
  { name: 'algorithm wrong type', path: SIGN, body: { algorithm: 5, message: b64('x') }, status: 400, code: 'INVALID_ARGUMENT', field: 'algorithm' },
  { name: 'unknown algorithm', path: SIGN, body: { algorithm: 'ECDSA_SHA_1', message: b64('x') }, status: 400, code: 'INVALID_ARGUMENT', field: 'algorithm' },
  { name: 'message wrong type', path: SIGN, body: { algorithm: 'ECDSA_SHA_256', message: 12 }, status: 400, code: 'INVALID_ARGUMENT', field: 'message' },
  {
    name: 'invalid base64 message',
    path: SIGN,
    body: { algorithm: 'ECDSA_SHA_256', message: 'not base64!' },
    status: 400,
    code: 'INVALID_ARGUMENT',
    field: 'message',
  },
  {
    name: 'base64 without padding',
    path: SIGN,
    body: { algorithm: 'ECDSA_SHA_256', message: 'YWJj ZA' },
    status: 400,
    code: 'INVALID_ARGUMENT',
    field: 'message',
  },
  {
    name: 'base64url alphabet',
    path: SIGN,
    body: { algorithm: 'ECDSA_SHA_256', digest: Buffer.alloc(32, 0xfb).toString('base64url') },
    status: 400,
    code: 'INVALID_ARGUMENT',
    field: 'digest',
  },
  { name: 'neither message nor digest', path: SIGN, body: { algorithm: 'ECDSA_SHA_256' }, status: 400, code: 'INVALID_ARGUMENT', field: 'message' },
  {
    name: 'both message and digest',
    path: SIGN,
    body: { algorithm: 'ECDSA_SHA_256', message: b64('x'), digest: d32 },
    status: 400,
    code: 'INVALID_ARGUMENT',
    field: 'message',
  },
  { name: 'digest too short', path: SIGN, body: { algorithm: 'ECDSA_SHA_256', digest: b64('short') }, status: 400, code: 'INVALID_ARGUMENT', field: 'digest' },
  {
    name: 'digest of SHA-256 length for SHA-384',
    path: SIGN,
    body: { algorithm: 'ECDSA_SHA_384', digest: d32 },
    status: 400,
    code: 'INVALID_ARGUMENT',
    field: 'digest',
  },
  { name: 'empty digest', path: SIGN, body: { algorithm: 'ECDSA_SHA_256', digest: '' }, status: 400, code: 'INVALID_ARGUMENT', field: 'digest' },
  {
    name: 'RSA algorithm on an EC key',
    path: SIGN,
    body: { algorithm: 'RSASSA_PSS_SHA_256', message: b64('x') },
    status: 400,
    code: 'INVALID_ARGUMENT',
    field: 'algorithm',
  },
  {
    name: 'ECDSA on an RSA key',
    path: '/v1/keys/rsa/sign',
    body: { algorithm: 'ECDSA_SHA_256', message: b64('x') },
    status: 400,
    code: 'INVALID_ARGUMENT',
    field: 'algorithm',
  },
  {
    name: 'signatureFormat on RSA',
    path: '/v1/keys/rsa/sign',
    body: { algorithm: 'RSASSA_PSS_SHA_256', message: b64('x'), signatureFormat: 'raw' },
    status: 400,
    code: 'INVALID_ARGUMENT',
    field: 'signatureFormat',
  },
  {
    name: 'unknown signatureFormat',
    path: SIGN,
    body: { algorithm: 'ECDSA_SHA_256', message: b64('x'), signatureFormat: 'pem' },
    status: 400,
    code: 'INVALID_ARGUMENT',
    field: 'signatureFormat',
  },
  {
    name: 'unknown field',
    path: SIGN,
    body: { algorithm: 'ECDSA_SHA_256', message: b64('x'), messsage: b64('y') },
    status: 400,
    code: 'INVALID_ARGUMENT',
    field: 'messsage',
  },
  {
    name: 'keyVersion as string',
    path: SIGN,
    body: { algorithm: 'ECDSA_SHA_256', message: b64('x'), keyVersion: '1' },
    status: 400,
    code: 'INVALID_ARGUMENT',
    field: 'keyVersion',
  },
  {
    name: 'keyVersion zero',
    path: SIGN,
    body: { algorithm: 'ECDSA_SHA_256', message: b64('x'), keyVersion: 0 },
    status: 400,
    code: 'INVALID_ARGUMENT',
    field: 'keyVersion',
  },
  {
    name: 'keyVersion fractional',
    path: SIGN,
    body: { algorithm: 'ECDSA_SHA_256', message: b64('x'), keyVersion: 1.5 },
    status: 400,
    code: 'INVALID_ARGUMENT',
    field: 'keyVersion',
  },
  { name: 'unknown key version', path: SIGN, body: { algorithm: 'ECDSA_SHA_256', message: b64('x'), keyVersion: 7 }, status: 404, code: 'NOT_FOUND' },
  { name: 'unknown key', path: '/v1/keys/nope/sign', body: { algorithm: 'ECDSA_SHA_256', message: b64('x') }, status: 404, code: 'NOT_FOUND' },
  { name: 'unknown key (GET)', method: 'get', path: '/v1/keys/nope', status: 404, code: 'NOT_FOUND' },
  { name: 'name ..', method: 'get', path: '/v1/keys/..', status: 400, code: 'INVALID_ARGUMENT', field: 'name' },
  {
    name: 'name with %2F',
    path: '/v1/keys/ec%2Fv1/sign',
    body: { algorithm: 'ECDSA_SHA_256', message: b64('x') },
    status: 400,
    code: 'INVALID_ARGUMENT',
    field: 'name',
  },
  { name: 'name with encoded ../', method: 'get', path: '/v1/keys/..%2F..%2Fetc', status: 400, code: 'INVALID_ARGUMENT', field: 'name' },
  {
    name: 'unicode name',
    path: `/v1/keys/${encodeURIComponent('clé-é')}/sign`,
    body: { algorithm: 'ECDSA_SHA_256', message: b64('x') },
    status: 400,
    code: 'INVALID_ARGUMENT',
    field: 'name',
  },
  { name: '1,000-character name', method: 'get', path: `/v1/keys/${'a'.repeat(1000)}`, status: 400, code: 'INVALID_ARGUMENT', field: 'name' },
  { name: 'malformed percent-encoding', method: 'get', path: '/v1/keys/%E0%A4%A', status: 400, code: 'INVALID_ARGUMENT', field: 'path' },
  {
    name: 'body over the limit',
    path: SIGN,
    body: { algorithm: 'ECDSA_SHA_256', message: Buffer.alloc(100 * 1024).toString('base64') },
    status: 413,
    code: 'PAYLOAD_TOO_LARGE',
  },
  {
    name: 'non-JSON content type',
    path: SIGN,
    raw: 'algorithm=ECDSA_SHA_256',
    contentType: 'application/x-www-form-urlencoded',
    status: 415,
    code: 'UNSUPPORTED_MEDIA_TYPE',
  },
  {
    name: 'text/plain JSON',
    path: SIGN,
    raw: '{"algorithm":"ECDSA_SHA_256","message":"eA=="}',
    contentType: 'text/plain',
    status: 415,
    code: 'UNSUPPORTED_MEDIA_TYPE',
  },
  { name: 'batch of 0', path: '/v1/sign/batch', body: { requests: [] }, status: 400, code: 'INVALID_ARGUMENT', field: 'requests' },
  {
    name: 'batch of 257',
    path: '/v1/sign/batch',
    body: { requests: Array.from({ length: 257 }, () => ({ keyName: 'ec', algorithm: 'ECDSA_SHA_256', digest: d32 })) },
    status: 400,
    code: 'INVALID_ARGUMENT',
    field: 'requests',
  },
  { name: 'batch requests not an array', path: '/v1/sign/batch', body: { requests: 'x' }, status: 400, code: 'INVALID_ARGUMENT', field: 'requests' },
  {
    name: 'verify without signature',
    path: '/v1/keys/ec/verify',
    body: { algorithm: 'ECDSA_SHA_256', message: b64('x') },
    status: 400,
    code: 'INVALID_ARGUMENT',
    field: 'signature',
  },
  {
    name: 'verify with bad base64 signature',
    path: '/v1/keys/ec/verify',
    body: { algorithm: 'ECDSA_SHA_256', message: b64('x'), signature: '***' },
    status: 400,
    code: 'INVALID_ARGUMENT',
    field: 'signature',
  },
  {
    name: 'bad X-Deadline-Ms',
    path: SIGN,
    body: { algorithm: 'ECDSA_SHA_256', message: b64('x') },
    headers: { 'X-Deadline-Ms': 'soon' },
    status: 400,
    code: 'INVALID_ARGUMENT',
    field: 'X-Deadline-Ms',
  },
  { name: 'unknown route', method: 'get', path: '/v1/nothing-here', status: 404, code: 'NOT_FOUND' },
  { name: 'wrong method on a route', method: 'get', path: SIGN, status: 404, code: 'NOT_FOUND' },
  // Found by fuzzing: a path parameter that does not percent-decode (here an overlong '/') and a body that is not what
  // its Content-Encoding says were "request: malformed", naming nothing.
  {
    name: 'fuzz: overlong UTF-8 in the key name',
    path: '/v1/keys/ec%C0%AFv2/verify',
    body: { algorithm: 'ECDSA_SHA_512', message: b64('x'), signature: b64('y') },
    status: 400,
    code: 'INVALID_ARGUMENT',
    field: 'path',
  },
  {
    name: 'fuzz: gzip Content-Encoding on a plain body',
    path: SIGN,
    raw: '{"algorithm":"ECDSA_SHA_256","message":"eA=="}',
    headers: { 'Content-Encoding': 'gzip' },
    status: 400,
    code: 'INVALID_ARGUMENT',
    field: 'body',
  },
  // Found by fuzzing: an unknown SAN key was put after "subjectAltNames." as it came (here a space), so the message did not start with a field.
  {
    name: 'fuzz: SAN key that is a space',
    path: '/v1/keys/rsa/csr',
    body: { subject: 'CN=x', ca: {}, subjectAltNames: { ' ': {} } },
    status: 400,
    code: 'INVALID_ARGUMENT',
    field: 'subjectAltNames: unknown key " "',
  },
  // Found by fuzzing: Express answered OPTIONS on a nested Router's route itself, 200 text/plain "GET, HEAD".
  { name: 'fuzz: OPTIONS /readyz', method: 'options', path: '/readyz', status: 404, code: 'NOT_FOUND' },
  { name: 'fuzz: OPTIONS /v1/keys', method: 'options', path: '/v1/keys', status: 404, code: 'NOT_FOUND' },
];

test(`${cases.length} bad requests: each a 4xx with the contract's body, never a 5xx`, async (t) => {
  assert.ok(cases.length >= 30);
  for (const c of cases) {
    await t.test(c.name, async () => {
      let req = request(svc.app)
        [c.method ?? 'post'](c.path)
        .set('X-Request-Id', `bad-${cases.indexOf(c)}`);
      for (const [k, v] of Object.entries(c.headers ?? {})) req = req.set(k, v);
      if (c.raw !== undefined) req = req.set('Content-Type', c.contentType ?? 'application/json').send(c.raw);
      else if (c.body !== undefined) req = req.send(c.body as object);
      const res = await req;
      assert.equal(res.status, c.status, `${c.name}: ${JSON.stringify(res.body)}`);
      assert.match(String(res.headers['content-type']), /application\/json/);
      assert.deepEqual(Object.keys(res.body), ['error']);
      assert.equal(res.body.error.code, c.code);
      assert.equal(res.body.error.requestId, `bad-${cases.indexOf(c)}`);
      assert.equal(typeof res.body.error.message, 'string');
      if (c.field) assert.ok(res.body.error.message.includes(c.field), `message names ${c.field}: ${res.body.error.message}`);
      assert.doesNotMatch(res.text, /at .*\.(ts|js):\d+|node_modules|Error: /, 'no stack trace');
      assert.ok(!res.text.includes(token.pin), 'no PIN');
    });
  }
  // The service still serves after all of it.
  const ok = await request(svc.app)
    .post(SIGN)
    .send({ algorithm: 'ECDSA_SHA_256', message: b64('still here') })
    .expect(200);
  assert.ok(ok.body.signature);
  await request(svc.app).get('/readyz').expect(200);
});

test('a wrong or malformed signature is valid:false, not an error', async () => {
  for (const signature of [b64('short'), Buffer.alloc(64).toString('base64'), Buffer.alloc(300, 1).toString('base64')]) {
    for (const [path, algorithm] of [
      ['/v1/keys/ec/verify', 'ECDSA_SHA_256'],
      ['/v1/keys/rsa/verify', 'RSASSA_PKCS1_V1_5_SHA_256'],
      ['/v1/keys/rsa/verify', 'RSASSA_PSS_SHA_256'],
    ] as const) {
      for (const input of [{ message: b64('m') }, { digest: d32 }]) {
        const res = await request(svc.app)
          .post(path)
          .send({ algorithm, ...input, signature })
          .expect(200);
        assert.equal(res.body.valid, false);
      }
    }
  }
});
