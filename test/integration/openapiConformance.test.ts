/**
 * The OpenAPI document against the real service: the app on a real SoftHSMv2 token, auth on, and
 * every documented operation called with a success case and the errors a test can produce. Each
 * answer (by status and content type) and each request body sent is validated
 * against the document by ajv (JSON Schema 2020-12, as OpenAPI 3.1 uses). An answer whose
 * operation, status or error code the document does not name fails; so does an operation of the
 * document never called, and a route of the app missing from the document.
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import { connect, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { isDeepStrictEqual } from 'node:util';
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormatsPlugin from 'ajv-formats';
import type { Express } from 'express';
import request from 'supertest';
import { createServer, type ApiServer } from '../../src/http/createServer.js';
import { OPENAPI_DOCUMENT, OPERATIONS } from '../../src/http/openapi.js';
import { createTestToken, startTestService, type TestToken } from '../support/testToken.js';
import { INTERMEDIATE_EXT, TempDir, makeRoot, opensslCsr, opensslOk, signAsRoot } from '../unit/pki/openssl.js';

type Doc = {
  paths: Record<string, Record<string, { requestBody?: unknown; responses: Record<string, { $ref?: string; content?: Record<string, unknown> }> }>>;
  components: { responses: Record<string, { content?: Record<string, unknown> }>; examples: Record<string, { value: unknown }> };
};
const doc = OPENAPI_DOCUMENT as unknown as Doc;

const sha = (s: string): string => createHash('sha256').update(s).digest('hex');
const FULL = 'tok-full-0123456789abcdef';
const LIMITED = 'tok-limited-0123456789abcdef';
const BUSY = 'tok-busy-0123456789abcdef';
const MAX_HEADER_BYTES = 2048;
const HEADERS_TIMEOUT_MS = 500;
const MAX_IN_FLIGHT = 8;

let token: TestToken;
let svc: Awaited<ReturnType<typeof startTestService>>;
let dir: TempDir;
let server: ApiServer;
let port: number;

// ajv-formats is CommonJS: under NodeNext its default import is module.exports, which is the plugin.
const addFormats = addFormatsPlugin as unknown as (ajv: Ajv2020) => Ajv2020;
// strictRequired off: `oneOf: [{ required: ['message'] }, ...]` names properties its parent defines.
const ajv = new Ajv2020({ allErrors: true, strict: true, strictRequired: false });
addFormats(ajv);
// The document's own fields, outside any schema: known to ajv so that strict mode still refuses an unknown keyword in a schema.
ajv.addVocabulary(['openapi', 'info', 'security', 'paths', 'components']);
ajv.addSchema(OPENAPI_DOCUMENT, 'openapi.json');
const pointer = (...parts: string[]): string => parts.map((p) => p.replaceAll('~', '~0').replaceAll('/', '~1')).join('/');
const validators = new Map<string, ValidateFunction>();
function validator(ptr: string): ValidateFunction {
  let v = validators.get(ptr);
  if (!v) {
    v = ajv.compile({ $ref: `openapi.json#/${ptr}` });
    validators.set(ptr, v);
  }
  return v;
}
const problems = (v: ValidateFunction): string => JSON.stringify(v.errors?.slice(0, 5));

/** Operation key `METHOD path` of the document for a concrete request path, or undefined. */
function operationOf(method: string, path: string): { key: string; template: string } | undefined {
  const bare = path.split('?')[0] ?? path;
  for (const template of Object.keys(doc.paths)) {
    const re = new RegExp(`^${template.replace(/\{[^}]+\}/g, '[^/]+').replaceAll('.', '\\.')}$`);
    if (re.test(bare) && doc.paths[template]?.[method.toLowerCase()]) return { key: `${method.toUpperCase()} ${template}`, template };
  }
  return undefined;
}

const exercised = new Set<string>();
const produced = new Map<string, Set<string>>();

interface Answer {
  readonly status: number;
  readonly contentType: string | undefined;
  readonly body: unknown;
  readonly text: string;
}

/**
 * Checks one exchange against the document. `requestBody`: what was sent, which must fit the
 * document (also when refused for what it means: a digest of the wrong length, an algorithm for
 * another key type); when `docRejects` says it is malformed by its shape, it must fail the
 * document instead (the document is as strict as the validator there).
 */
function check(method: string, path: string, answer: Answer, requestBody?: unknown, docRejects = false): void {
  const op = operationOf(method, path);
  assert.ok(op, `${method} ${path}: no operation in the document`);
  exercised.add(op.key);
  const lower = method.toLowerCase();
  const operation = doc.paths[op.template]?.[lower];
  assert.ok(operation);
  let response = operation.responses[String(answer.status)];
  assert.ok(response, `${op.key}: status ${answer.status} is not documented (${answer.text.slice(0, 200)})`);
  let at = pointer('paths', op.template, lower, 'responses', String(answer.status));
  if (response.$ref) {
    const name = response.$ref.replace('#/components/responses/', '');
    response = doc.components.responses[name];
    assert.ok(response, response?.$ref);
    at = pointer('components', 'responses', name);
  }
  if (response.content === undefined) {
    assert.equal(answer.text, '', `${op.key} ${answer.status}: the document says no content`);
  } else {
    const media = mediaType(answer);
    assert.ok(media in response.content, `${op.key} ${answer.status}: content type ${media} not documented`);
    const v = validator(`${at}/content/${pointer(media)}/schema`);
    const value = media === 'application/json' ? answer.body : answer.text;
    assert.ok(v(value), `${op.key} ${answer.status}: the answer does not fit the document: ${problems(v)} ${answer.text.slice(0, 300)}`);
  }
  if (answer.status >= 400 && mediaType(answer) === 'application/json') {
    const code = (answer.body as { error?: { code?: string } }).error?.code;
    assert.ok(code, `${op.key} ${answer.status}: an error without a code`);
    produced.set(op.key, (produced.get(op.key) ?? new Set()).add(code));
  }
  if (requestBody !== undefined && operation.requestBody !== undefined) {
    const v = validator(pointer('paths', op.template, lower, 'requestBody', 'content', 'application/json', 'schema'));
    if (!docRejects) assert.ok(v(requestBody), `${op.key}: a well-formed body (answered ${answer.status}) does not fit the document: ${problems(v)}`);
    if (docRejects) assert.ok(!v(requestBody), `${op.key}: the document accepts a body the service refused: ${JSON.stringify(requestBody).slice(0, 200)}`);
  }
}
const mediaType = (a: Answer): string => (a.contentType ?? '').split(';')[0]?.trim() ?? '';

interface Call {
  readonly auth?: string;
  readonly body?: unknown;
  /** Raw text (or bytes) sent instead of JSON, with this Content-Type. */
  readonly raw?: { readonly text: string | Buffer; readonly contentType: string };
  /** The answer is binary (a CRL, an OCSP response): read as bytes, checked as a string. */
  readonly binary?: boolean;
  readonly headers?: Record<string, string>;
  /** The body is malformed by its shape: the document must refuse it too. */
  readonly docRejects?: boolean;
}

/** One request through supertest, checked against the document (and its status, unless `expected` is undefined); returns the answer. */
async function call(method: 'get' | 'post' | 'put', path: string, expected: number | undefined, c: Call = {}): Promise<request.Response> {
  let r = request(svc.app as Express)[method](path);
  if (c.auth) r = r.set('Authorization', `Bearer ${c.auth}`);
  for (const [k, v] of Object.entries(c.headers ?? {})) r = r.set(k, v);
  if (c.raw) r = r.set('Content-Type', c.raw.contentType).send(c.raw.text);
  else if (c.body !== undefined) r = r.send(c.body as object);
  if (c.binary) {
    r = r.buffer(true).parse((stream, done) => {
      const chunks: Buffer[] = [];
      stream.on('data', (d: Buffer) => chunks.push(d));
      stream.on('end', () => done(null, Buffer.concat(chunks)));
    });
  }
  const res = await r;
  if (c.binary && Buffer.isBuffer(res.body)) res.text = res.body.toString('latin1');
  if (expected !== undefined) assert.equal(res.status, expected, `${method.toUpperCase()} ${path}: ${res.text.slice(0, 300)}`);
  check(
    method,
    path,
    { status: res.status, contentType: res.headers['content-type'], body: res.body, text: res.text },
    c.raw ? undefined : c.body,
    c.docRejects,
  );
  return res;
}

/** A raw exchange with the real server (its own limits), for what never reaches the app: the status line, headers and body. */
async function raw(send: (socket: import('node:net').Socket) => void, timeoutMs: number): Promise<Answer> {
  const socket = connect(port, '127.0.0.1');
  await once(socket, 'connect');
  let data = '';
  socket.on('data', (d: Buffer) => (data += d.toString('latin1')));
  socket.on('error', () => undefined);
  send(socket);
  const deadline = Date.now() + timeoutMs;
  while (!socket.destroyed && !socket.readableEnded && Date.now() < deadline) await sleep(25);
  socket.destroy();
  const [head = '', text = ''] = data.split('\r\n\r\n');
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0);
  const contentType = /\r\ncontent-type: ([^\r]*)/i.exec(head)?.[1];
  return { status, contentType, text, body: text ? JSON.parse(text) : undefined };
}

const message = Buffer.from('hello, document').toString('base64');
const digest256 = createHash('sha256').update('hello, document').digest('base64');

before(async () => {
  token = await createTestToken([
    { name: 'pay-ec', spec: 'ECC_NIST_P256' },
    { name: 'pay-rsa', spec: 'RSA_2048' },
    { name: 'ca-ec', spec: 'ECC_NIST_P384' },
  ]);
  const clientsFile = join(token.dir, 'clients.json');
  writeFileSync(
    clientsFile,
    JSON.stringify({
      clients: [
        {
          name: 'full',
          tokenSha256: sha(FULL),
          allow: [{ keys: '*', operations: ['read', 'sign', 'verify', 'csr', 'certificate', 'issue', 'revoke'] }],
        },
        { name: 'limited', tokenSha256: sha(LIMITED), allow: [{ keys: 'pay-*', operations: ['read', 'sign'] }] },
        { name: 'busy', tokenSha256: sha(BUSY), allow: [{ keys: '*', operations: ['read', 'sign'] }] },
      ],
    }),
  );
  svc = await startTestService(token, {
    CLIENTS_FILE: clientsFile,
    CLIENT_MAX_IN_FLIGHT: String(MAX_IN_FLIGHT),
    // One HSM session and one place in its queue, so that a burst of signs meets OVERLOADED; no
    // background rescan of the token to take the session in between.
    HSM_SESSIONS: '1',
    HSM_MAX_WAITING: '1',
    KEY_REFRESH_MS: '600000',
    BODY_LIMIT_BYTES: '8192',
    MAX_HEADER_BYTES: String(MAX_HEADER_BYTES),
    HEADERS_TIMEOUT_MS: String(HEADERS_TIMEOUT_MS),
    // The held requests of the 429 test stay in flight for the whole test.
    REQUEST_TIMEOUT_MS: '10000',
  });
  server = createServer(svc.app, svc.config.server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  port = (server.address() as AddressInfo).port;
  dir = await TempDir.create();
});
after(async () => {
  server?.closeAllConnections();
  server?.close();
  await svc?.close();
  await dir?.remove();
  token?.cleanup();
});

describe('the document', () => {
  test('docs/openapi.json is the generated document (else: run `npm run openapi`)', () => {
    const checkedIn: unknown = JSON.parse(readFileSync(new URL('../../docs/openapi.json', import.meta.url), 'utf8'));
    // Not deepEqual: its diff of two 80 kB documents would bury the one line that matters.
    assert.ok(isDeepStrictEqual(checkedIn, JSON.parse(JSON.stringify(OPENAPI_DOCUMENT))), 'docs/openapi.json is stale: run `npm run openapi`');
  });

  test('is OpenAPI 3.1 and its examples fit its schemas', () => {
    assert.equal((OPENAPI_DOCUMENT as { openapi: string }).openapi, '3.1.0');
    let n = 0;
    for (const [template, methods] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(methods)) {
        const at = pointer('paths', template, method);
        const body = op.requestBody as { content: Record<string, { example?: unknown }> } | undefined;
        const media = body?.content['application/json'];
        if (media) {
          assert.ok(media.example, `${at}: a request example`);
          const v = validator(`${at}/requestBody/content/application~1json/schema`);
          assert.ok(v(media.example), `${at}: the request example does not fit: ${problems(v)}`);
          n++;
        }
        for (const [status, response] of Object.entries(op.responses)) {
          const json = response.content?.['application/json'] as { example?: unknown } | undefined;
          if (response.$ref || json?.example === undefined) continue;
          const v = validator(`${pointer('paths', template, method, 'responses', status)}/content/application~1json/schema`);
          assert.ok(v(json.example), `${at} ${status}: the example does not fit: ${problems(v)}`);
          n++;
        }
      }
    }
    for (const [name, response] of Object.entries(doc.components.responses)) {
      const json = response.content?.['application/json'] as { examples: Record<string, { $ref: string }> };
      const v = validator(`${pointer('components', 'responses', name)}/content/application~1json/schema`);
      for (const { $ref } of Object.values(json.examples)) {
        const example = doc.components.examples[$ref.replace('#/components/examples/', '')];
        assert.ok(example && v(example.value), `${name}: example ${$ref} does not fit: ${problems(v)}`);
        n++;
      }
    }
    assert.ok(n > 30, `${n} examples checked`);
  });

  test('every route of the app is in the document', () => {
    type Layer = { route?: { path: string; methods: Record<string, boolean> }; handle?: { stack?: Layer[] } };
    const routes: string[] = [];
    const walk = (stack: Layer[]): void => {
      for (const l of stack) {
        if (l.route)
          for (const m of Object.keys(l.route.methods)) if (m !== '_all') routes.push(`${m.toUpperCase()} ${l.route.path.replace(/:(\w+)/g, '{$1}')}`);
        if (l.handle?.stack) walk(l.handle.stack);
      }
    };
    walk((svc.app as unknown as { router: { stack: Layer[] } }).router.stack);
    const documented = OPERATIONS.map((o) => `${o.method.toUpperCase()} ${o.path}`);
    assert.ok(routes.length >= 14, `found ${routes.length} routes`);
    assert.deepEqual(
      routes.filter((r) => !documented.includes(r)),
      [],
      'routes missing from the document',
    );
    assert.deepEqual(
      documented.filter((d) => !routes.includes(d)),
      [],
      'documented operations the app does not serve',
    );
  });
});

describe('real answers fit the document', () => {
  test('operations endpoints', async () => {
    await call('get', '/healthz', 200);
    await call('get', '/readyz', 200);
    await call('get', '/metrics', 200);
    const served = await call('get', '/openapi.json', 200);
    assert.deepEqual(served.body, JSON.parse(JSON.stringify(OPENAPI_DOCUMENT)));
    const bad = await call('get', '/healthz', 400, { headers: { 'X-Deadline-Ms': 'soon' } });
    assert.equal(bad.body.error.code, 'INVALID_ARGUMENT');
  });

  test('key reads', async () => {
    const list = await call('get', '/v1/keys', 200, { auth: FULL });
    assert.equal(list.body.keys.length, 3);
    await call('get', '/v1/keys', 401);
    await call('get', '/v1/keys/pay-ec', 200, { auth: FULL });
    await call('get', '/v1/keys/nope', 404, { auth: FULL });
    await call('get', '/v1/keys/ca-ec', 403, { auth: LIMITED });
    await call('get', '/v1/keys/-bad', 400, { auth: FULL });
    const ec = await call('get', '/v1/keys/pay-ec/jwks', 200, { auth: FULL });
    assert.equal(ec.body.keys[0].kty, 'EC');
    const rsa = await call('get', '/v1/keys/pay-rsa/jwks', 200, { auth: FULL });
    assert.equal(rsa.body.keys[0].kty, 'RSA');
    await call('get', '/v1/keys/nope/jwks', 404, { auth: FULL });
  });

  test('sign and verify', async () => {
    const sign = (body: unknown, expected: number, c: Call = {}) => call('post', '/v1/keys/pay-ec/sign', expected, { auth: FULL, body, ...c });
    const signed = await sign({ algorithm: 'ECDSA_SHA_256', message }, 200);
    await sign({ algorithm: 'ECDSA_SHA_256', digest: digest256, signatureFormat: 'raw', keyVersion: 1 }, 200);
    await call('post', '/v1/keys/pay-rsa/sign', 200, { auth: FULL, body: { algorithm: 'RSASSA_PSS_SHA_256', message } });
    // Malformed by shape: the document refuses these too.
    await sign({ algorithm: 'ECDSA_SHA_256', message, digest: digest256 }, 400, { docRejects: true });
    await sign({ algorithm: 'ECDSA_SHA_256' }, 400, { docRejects: true });
    await sign({ algorithm: 'ECDSA_SHA_256', message, extra: 1 }, 400, { docRejects: true });
    await sign({ algorithm: 'ECDSA_SHA_256', message: 'not base64!' }, 400, { docRejects: true });
    await sign({ algorithm: 'ECDSA_SHA_999', message }, 400, { docRejects: true });
    await sign({ algorithm: 'ECDSA_SHA_256', message, keyVersion: 0 }, 400, { docRejects: true });
    await sign([1, 2], 400, { docRejects: true });
    // Malformed by meaning (the key's type, the digest's length): the service's checks, not the document's.
    await sign({ algorithm: 'RSASSA_PSS_SHA_256', message }, 400);
    await sign({ algorithm: 'ECDSA_SHA_256', digest: Buffer.alloc(20).toString('base64') }, 400);
    await sign({ algorithm: 'ECDSA_SHA_256', message, keyVersion: 9 }, 404);
    await call('post', '/v1/keys/nope/sign', 404, { auth: FULL, body: { algorithm: 'ECDSA_SHA_256', message } });
    await call('post', '/v1/keys/ca-ec/sign', 403, { auth: LIMITED, body: { algorithm: 'ECDSA_SHA_384', message } });
    await sign({ algorithm: 'ECDSA_SHA_256', message }, 401, { auth: 'tok-unknown' });
    await sign({ algorithm: 'ECDSA_SHA_256', message: Buffer.alloc(16_384).toString('base64') }, 413);
    await sign(undefined, 415, { raw: { text: 'algorithm=ECDSA_SHA_256', contentType: 'text/plain' } });
    await sign(undefined, 400, { raw: { text: '{"algorithm":', contentType: 'application/json' } });

    const verify = (body: unknown, expected: number, c: Call = {}) => call('post', '/v1/keys/pay-ec/verify', expected, { auth: FULL, body, ...c });
    const ok = await verify({ algorithm: 'ECDSA_SHA_256', message, signature: signed.body.signature }, 200);
    assert.equal(ok.body.valid, true);
    const tampered = Buffer.from(signed.body.signature, 'base64');
    tampered[tampered.length - 3]! ^= 0x01;
    const wrong = await verify({ algorithm: 'ECDSA_SHA_256', digest: digest256, signature: tampered.toString('base64') }, 200);
    assert.equal(wrong.body.valid, false);
    await verify({ algorithm: 'ECDSA_SHA_256', message }, 400, { docRejects: true });
    await call('post', '/v1/keys/nope/verify', 404, { auth: FULL, body: { algorithm: 'ECDSA_SHA_256', message, signature: signed.body.signature } });
    await call('post', '/v1/keys/pay-ec/verify', 403, { auth: LIMITED, body: { algorithm: 'ECDSA_SHA_256', message, signature: signed.body.signature } });
  });

  test('batch sign', async () => {
    const item = { keyName: 'pay-ec', algorithm: 'ECDSA_SHA_256', message };
    const ok = await call('post', '/v1/sign/batch', 200, {
      auth: LIMITED,
      body: { requests: [item, { ...item, keyName: 'ca-ec', algorithm: 'ECDSA_SHA_384' }] },
    });
    assert.ok(ok.body.results[0].signature);
    assert.equal(ok.body.results[1].error.code, 'PERMISSION_DENIED');
    // A malformed item fails alone (200), though the document, which shows a well-formed batch, refuses the body.
    const partly = await call('post', '/v1/sign/batch', 200, { auth: FULL, body: { requests: [item, { ...item, extra: true }] }, docRejects: true });
    assert.equal(partly.body.results[1].error.code, 'INVALID_ARGUMENT');
    await call('post', '/v1/sign/batch', 400, { auth: FULL, body: { requests: [] }, docRejects: true });
    await call('post', '/v1/sign/batch', 401, { body: { requests: [item] } });
  });

  test('PKI: CSR, attach, read and issue', async () => {
    await makeRoot(dir, { name: 'root', alg: 'ec-p384', subject: '/C=US/O=Example/CN=Conformance Root' });
    const rootPem = await dir.read('root.pem');
    const csrBody = { subject: 'CN=Conformance CA,O=Example,C=US', ca: { pathLength: 0 } };
    const csr = await call('post', '/v1/keys/ca-ec/csr', 200, { auth: FULL, body: csrBody });
    await call('post', '/v1/keys/ca-ec/csr', 400, { auth: FULL, body: { ...csrBody, ca: { pathLength: -1 } }, docRejects: true });
    await call('post', '/v1/keys/ca-ec/csr', 400, { auth: FULL, body: { subject: 'not a DN' } });
    await call('post', '/v1/keys/ca-ec/csr', 403, { auth: LIMITED, body: csrBody });
    const intPem = await signAsRoot(dir, csr.body.csrPem, { root: 'root', out: 'int', ext: INTERMEDIATE_EXT });

    await call('put', '/v1/keys/ca-ec/certificate', 409, { auth: FULL, body: { certificatePem: rootPem } });
    await call('put', '/v1/keys/ca-ec/certificate', 400, { auth: FULL, body: { certificatePem: intPem, chainPem: 7 }, docRejects: true });
    await call('put', '/v1/keys/ca-ec/certificate', 204, { auth: FULL, body: { certificatePem: intPem, chainPem: rootPem, keyVersion: 1 } });

    await call('get', '/v1/keys/ca-ec/certificate', 200, { auth: FULL });
    await call('get', '/v1/keys/ca-ec/certificate?keyVersion=1', 200, { auth: FULL });
    await call('get', '/v1/keys/ca-ec/certificate?keyVersion=abc', 400, { auth: FULL });
    await call('get', '/v1/keys/pay-ec/certificate', 404, { auth: FULL });

    const leafCsr = await opensslCsr(dir, { name: 'leaf', subject: '/O=Example/CN=api.example.com' });
    const issueBody = { csrPem: leafCsr, profile: 'tls-server', validityDays: 30, subjectAltNames: { dns: ['api.example.com'] } };
    const issued = await call('post', '/v1/keys/ca-ec/certificates', 201, { auth: FULL, body: issueBody });
    assert.match(issued.body.serialNumber, /^[0-9A-F]+$/);
    await call('post', '/v1/keys/ca-ec/certificates', 400, { auth: FULL, body: { ...issueBody, profile: 'email' }, docRejects: true });
    await call('post', '/v1/keys/ca-ec/certificates', 400, { auth: FULL, body: { ...issueBody, subjectAltNames: { dns: 'x' } }, docRejects: true });
    await call('post', '/v1/keys/ca-ec/certificates', 400, { auth: FULL, body: { ...issueBody, validityDays: 0 }, docRejects: true });
    // A key with no CA certificate attached cannot issue.
    await call('post', '/v1/keys/pay-ec/certificates', 409, { auth: FULL, body: issueBody });

    // The inventory: the issued certificate, listed and shown.
    const listed = await call('get', '/v1/keys/ca-ec/certificates?status=valid&limit=10', 200, { auth: FULL });
    assert.deepEqual(
      listed.body.certificates.map((c: { serialNumber: string }) => c.serialNumber),
      [issued.body.serialNumber],
    );
    await call('get', `/v1/keys/ca-ec/certificates?expiresBefore=2000-01-01T00:00:00Z`, 200, { auth: FULL });
    await call('get', '/v1/keys/ca-ec/certificates?limit=0', 400, { auth: FULL });
    await call('get', '/v1/keys/ca-ec/certificates?status=lost', 400, { auth: FULL });
    await call('get', '/v1/keys/ca-ec/certificates?cursor=bogus', 400, { auth: FULL });
    await call('get', '/v1/keys/nope/certificates', 404, { auth: FULL });
    await call('get', '/v1/keys/ca-ec/certificates', 403, { auth: LIMITED });
    const shown = await call('get', `/v1/keys/ca-ec/certificates/00${issued.body.serialNumber.toLowerCase()}`, 200, { auth: FULL });
    assert.equal(shown.body.certificatePem, issued.body.certificatePem);
    assert.equal(shown.body.clientId, 'full');
    await call('get', '/v1/keys/ca-ec/certificates/not-hex', 400, { auth: FULL });
    await call('get', '/v1/keys/ca-ec/certificates/ABCDEF', 404, { auth: FULL });

    // Revocation: revoke (audited, operation revoke), the CRL and OCSP (no credentials).
    const serial = issued.body.serialNumber as string;
    await call('get', '/v1/keys/ca-ec/crl', 200, { binary: true });
    const revoked = await call('post', `/v1/keys/ca-ec/certificates/${serial}/revoke`, 200, { auth: FULL, body: { reason: 'keyCompromise' } });
    assert.equal(revoked.body.revokedNow, true);
    await call('post', `/v1/keys/ca-ec/certificates/${serial}/revoke`, 400, { auth: FULL, body: { reason: 'lost' }, docRejects: true });
    await call('post', '/v1/keys/ca-ec/certificates/not-hex/revoke', 400, { auth: FULL, body: { reason: 'keyCompromise' } });
    await call('post', '/v1/keys/ca-ec/certificates/ABCDEF/revoke', 404, { auth: FULL, body: { reason: 'keyCompromise' } });
    await call('post', `/v1/keys/ca-ec/certificates/${serial}/revoke`, 403, { auth: LIMITED, body: { reason: 'keyCompromise' } });
    await call('post', `/v1/keys/ca-ec/certificates/${serial}/revoke`, 401, { body: { reason: 'keyCompromise' } });
    const crl = await call('get', '/v1/keys/ca-ec/crl?format=pem', 200, { binary: true });
    assert.match(crl.text, /^-----BEGIN X509 CRL-----/);
    await call('get', '/v1/keys/ca-ec/crl?format=txt', 400);
    await call('get', '/v1/keys/pay-ec/crl', 404);
    await dir.write('int.pem', intPem);
    await opensslOk(dir.path, 'ocsp', '-issuer', 'int.pem', '-cert', 'int.pem', '-reqout', 'ocsp.der');
    const ocspRequest = readFileSync(dir.file('ocsp.der'));
    await call('post', '/ocsp/ca-ec', 200, { raw: { text: ocspRequest, contentType: 'application/ocsp-request' }, binary: true });
    await call('post', '/ocsp/ca-ec', 400, { raw: { text: Buffer.from('not DER'), contentType: 'application/ocsp-request' }, binary: true });
    await call('post', '/ocsp/ca-ec', 415, { raw: { text: '{}', contentType: 'application/json' } });
    await call('post', '/ocsp/nope', 404, { raw: { text: ocspRequest, contentType: 'application/ocsp-request' } });
    await call('get', `/ocsp/ca-ec/${encodeURIComponent(ocspRequest.toString('base64'))}`, 200, { binary: true });
    await call('get', '/ocsp/ca-ec/not-base64', 400, { binary: true });
  });

  test('what the server refuses before the app: 408 and 431, as the contract JSON', async () => {
    const big = await raw((s) => s.write(`GET /v1/keys HTTP/1.1\r\nHost: x\r\nX-Padding: ${'a'.repeat(MAX_HEADER_BYTES * 2)}\r\n\r\n`), 5000);
    assert.equal(big.status, 431);
    check('GET', '/v1/keys', big);
    // Headers never finished: answered 408 once HEADERS_TIMEOUT_MS (500 ms) has passed; generous wait.
    const slow = await raw((s) => s.write('GET /v1/keys HTTP/1.1\r\nHost: x\r\n'), 10_000);
    assert.equal(slow.status, 408);
    check('GET', '/v1/keys', slow);
  });

  test('per-client limit: 429 once a client has CLIENT_MAX_IN_FLIGHT requests in flight', async () => {
    // MAX_IN_FLIGHT requests of `busy` hold their places: their bodies never finish.
    const held = await Promise.all(
      Array.from({ length: MAX_IN_FLIGHT }, async () => {
        const s = connect(port, '127.0.0.1');
        await once(s, 'connect');
        s.on('error', () => undefined);
        s.write(
          `POST /v1/keys/pay-ec/sign HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${BUSY}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"algorithm":`,
        );
        return s;
      }),
    );
    try {
      // Until the server has read their headers, a request of ours could take a place first (and a held one get the 429).
      await sleep(300);
      let res: request.Response | undefined;
      for (let i = 0; i < 40; i++) {
        res = await request(svc.app as Express)
          .post('/v1/keys/pay-ec/sign')
          .set('Authorization', `Bearer ${BUSY}`)
          .send({ algorithm: 'ECDSA_SHA_256', message });
        if (res.status === 429) break;
        await sleep(50);
      }
      assert.ok(res);
      assert.equal(res.status, 429, res.text);
      assert.ok(Number(res.headers['retry-after']) >= 1);
      check('post', '/v1/keys/pay-ec/sign', { status: res.status, contentType: res.headers['content-type'], body: res.body, text: res.text });
    } finally {
      for (const s of held) s.destroy();
    }
  });

  test('a busy HSM: 503 OVERLOADED past the queue, 504 DEADLINE_EXCEEDED past X-Deadline-Ms', async () => {
    const seen = new Set<string>();
    for (let round = 0; round < 10 && !(seen.has('OVERLOADED') && seen.has('DEADLINE_EXCEEDED')); round++) {
      const answers = await Promise.all(
        Array.from({ length: MAX_IN_FLIGHT }, (_, i) =>
          call('post', '/v1/keys/pay-rsa/sign', undefined, {
            auth: FULL,
            body: { algorithm: 'RSASSA_PSS_SHA_256', message },
            headers: i % 2 ? { 'X-Deadline-Ms': '1' } : {},
          }),
        ),
      );
      for (const a of answers) if (a.status !== 200) seen.add(a.body.error.code);
    }
    assert.ok(seen.has('OVERLOADED') && seen.has('DEADLINE_EXCEEDED'), [...seen].join(', '));
  });

  test('the HSM connection closed: 503 HSM_UNAVAILABLE', async () => {
    await svc.keyManager.close();
    const res = await call('post', '/v1/keys/pay-ec/sign', 503, { auth: FULL, body: { algorithm: 'ECDSA_SHA_256', message } });
    assert.equal(res.body.error.code, 'HSM_UNAVAILABLE');
    assert.ok(Number(res.headers['retry-after']) >= 1);
  });

  test('an unknown route is a 404 of the documented Error shape', async () => {
    const res: { body: { error: { code: string } } } = await request(svc.app as Express)
      .get('/v2/nothing')
      .set('Authorization', `Bearer ${FULL}`)
      .expect(404);
    assert.equal(operationOf('GET', '/v2/nothing'), undefined);
    const v = validator(pointer('components', 'schemas', 'Error'));
    assert.ok(v(res.body), problems(v));
    assert.equal(res.body.error.code, 'NOT_FOUND');
  });

  test('every documented operation was called, and every code produced is documented for it', () => {
    const documented = OPERATIONS.map((o) => `${o.method.toUpperCase()} ${o.path}`);
    assert.deepEqual(
      documented.filter((d) => !exercised.has(d)),
      [],
      'documented operations never called',
    );
    // The per-status checks above have failed any undocumented code; this lists what the run covered.
    const codes = new Set([...produced.values()].flatMap((s) => [...s]));
    for (const c of [
      'INVALID_ARGUMENT',
      'UNAUTHENTICATED',
      'PERMISSION_DENIED',
      'NOT_FOUND',
      'CONFLICT',
      'PAYLOAD_TOO_LARGE',
      'UNSUPPORTED_MEDIA_TYPE',
      'REQUEST_TIMEOUT',
      'HEADERS_TOO_LARGE',
      'RESOURCE_EXHAUSTED',
      'OVERLOADED',
      'DEADLINE_EXCEEDED',
      'HSM_UNAVAILABLE',
    ])
      assert.ok(codes.has(c), `the run produced ${c}`);
    console.log(`openapi conformance: ${exercised.size} operations called; codes produced: ${[...codes].sort().join(', ')}`);
  });
});
