import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { connect, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import request from 'supertest';
import { ERROR_CODES } from '../../src/errors.js';
import { CLIENT_CLOSED_REQUEST } from '../../src/http/requestContext.js';
import { createTestToken, startTestService, type TestToken } from '../support/testToken.js';

let token: TestToken;
let svc: Awaited<ReturnType<typeof startTestService>>;
const sha = (s: string): string => createHash('sha256').update(s).digest('hex');
const PAY = 'tok-payments-0123456789';
const RO = 'tok-readonly-0123456789';

before(async () => {
  token = await createTestToken([
    { name: 'payments-ec', spec: 'ECC_NIST_P256' },
    { name: 'other-ec', spec: 'ECC_NIST_P256' },
  ]);
  const clientsFile = join(token.dir, 'clients.json');
  writeFileSync(
    clientsFile,
    JSON.stringify({
      clients: [
        { name: 'payments-api', tokenSha256: sha(PAY), allow: [{ keys: 'payments-*', operations: ['sign', 'verify', 'read'] }] },
        { name: 'auditor', tokenSha256: sha(RO), allow: [{ keys: '*', operations: ['read'] }] },
      ],
    }),
  );
  svc = await startTestService(token, { CLIENTS_FILE: clientsFile });
});
after(async () => {
  await svc?.close();
  token?.cleanup();
});

const body = { algorithm: 'ECDSA_SHA_256', message: Buffer.from('x').toString('base64') };

test('auth: 401 without or with an unknown token; 403 outside the grant; allowed within it', async () => {
  const none = await request(svc.app).post('/v1/keys/payments-ec/sign').send(body).expect(401);
  assert.equal(none.body.error.code, 'UNAUTHENTICATED');
  const unknown = await request(svc.app).post('/v1/keys/payments-ec/sign').set('Authorization', 'Bearer nope').send(body).expect(401);
  assert.ok(!unknown.text.includes('nope'), 'the token is not echoed');
  await request(svc.app).post('/v1/keys/payments-ec/sign').set('Authorization', `Bearer ${PAY}`).send(body).expect(200);
  // The scheme name is case-insensitive (RFC 7235).
  await request(svc.app).post('/v1/keys/payments-ec/sign').set('Authorization', `bearer ${PAY}`).send(body).expect(200);
  const denied = await request(svc.app).post('/v1/keys/other-ec/sign').set('Authorization', `Bearer ${PAY}`).send(body).expect(403);
  assert.equal(denied.body.error.code, 'PERMISSION_DENIED');
  await request(svc.app).post('/v1/keys/payments-ec/sign').set('Authorization', `Bearer ${RO}`).send(body).expect(403);
  const list = await request(svc.app).get('/v1/keys').set('Authorization', `Bearer ${PAY}`).expect(200);
  assert.deepEqual(
    list.body.keys.map((k: { name: string }) => k.name),
    ['payments-ec'],
  );
  const batch = await request(svc.app)
    .post('/v1/sign/batch')
    .set('Authorization', `Bearer ${PAY}`)
    .send({
      requests: [
        { keyName: 'payments-ec', ...body },
        { keyName: 'other-ec', ...body },
      ],
    })
    .expect(200);
  assert.ok(batch.body.results[0].signature);
  assert.equal(batch.body.results[1].error.code, 'PERMISSION_DENIED');
  // Health stays open for load balancers.
  await request(svc.app).get('/readyz').expect(200);
});

test('metrics: Prometheus text with request counts and HSM pool gauges', async () => {
  const signs = (text: string, status: number): number =>
    Number(new RegExp(`hsm_signer_http_requests_total\\{method="POST",route="/v1/keys/:name/sign",status="${status}"\\} (\\d+)`).exec(text)?.[1] ?? 0);
  const timed = (text: string): number =>
    Number(/hsm_signer_http_request_duration_seconds_count\{route="\/v1\/keys\/:name\/sign"\} (\d+)/.exec(text)?.[1] ?? 0);
  const unmatched400 = (text: string): number =>
    Number(/hsm_signer_http_requests_total\{method="POST",route="unmatched",status="400"\} (\d+)/.exec(text)?.[1] ?? 0);
  const before = (await request(svc.app).get('/metrics').expect(200)).text;
  for (let i = 0; i < 3; i++) await request(svc.app).post('/v1/keys/payments-ec/sign').set('Authorization', `Bearer ${PAY}`).send(body).expect(200);
  await request(svc.app).post('/v1/keys/other-ec/sign').set('Authorization', `Bearer ${PAY}`).send(body).expect(403);
  // Refused before any route matched (a bad deadline header): counted too, as "unmatched".
  await request(svc.app).post('/v1/keys/payments-ec/sign').set('Authorization', `Bearer ${PAY}`).set('X-Deadline-Ms', 'soon').send(body).expect(400);
  const res = await request(svc.app).get('/metrics').expect(200);
  assert.match(res.headers['content-type']!, /text\/plain/);
  assert.equal(signs(res.text, 200) - signs(before, 200), 3, 'every 200 counted');
  assert.equal(signs(res.text, 403) - signs(before, 403), 1, 'every 403 counted');
  assert.equal(timed(res.text) - timed(before), 4, 'every sign request timed');
  assert.equal(unmatched400(res.text) - unmatched400(before), 1, 'a request refused before routing is counted');
  assert.match(res.text, /hsm_signer_hsm_sessions_idle \d+/);
  assert.match(res.text, /hsm_signer_hsm_breaker_open 0/);
  assert.ok(!res.text.includes(token.pin) && !res.text.includes(PAY));
});

test('metrics: a caller that hangs up before its answer is counted, as 499', async () => {
  const aborted = (text: string): number =>
    Number(new RegExp(`hsm_signer_http_requests_total\\{method="POST",route="unmatched",status="${CLIENT_CLOSED_REQUEST}"\\} (\\d+)`).exec(text)?.[1] ?? 0);
  assert.equal(CLIENT_CLOSED_REQUEST, 499, "nginx's 'client closed request'");
  const before = aborted((await request(svc.app).get('/metrics').expect(200)).text);
  const server = svc.app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  try {
    const { port } = server.address() as AddressInfo;
    // Half a body, then the caller gives up: no response is ever finished.
    const socket = connect(port, '127.0.0.1');
    await once(socket, 'connect');
    socket.write(
      `POST /v1/keys/payments-ec/sign HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${PAY}\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{"algorithm":`,
    );
    await new Promise((r) => setTimeout(r, 50));
    socket.destroy();
    let after = before;
    for (let i = 0; i < 50 && after === before; i++) {
      await new Promise((r) => setTimeout(r, 20));
      after = aborted((await request(svc.app).get('/metrics').expect(200)).text);
    }
    assert.equal(after - before, 1, 'the aborted request is counted once, as 499');
  } finally {
    server.close();
  }
});

test('openapi: documents every error code and the v1 paths', async () => {
  const res = await request(svc.app).get('/openapi.json').expect(200);
  assert.equal(res.body.openapi, '3.1.0');
  // Error answers are shared components.responses, referenced by status.
  const described = (path: string, method: string, status: string): string =>
    res.body.components.responses[res.body.paths[path][method].responses[status].$ref.replace('#/components/responses/', '')].description;
  for (const p of [
    '/v1/keys',
    '/v1/keys/{name}',
    '/v1/keys/{name}/sign',
    '/v1/keys/{name}/verify',
    '/v1/sign/batch',
    '/v1/keys/{name}/jwks',
    '/readyz',
    '/healthz',
  ])
    assert.ok(res.body.paths[p], p);
  assert.deepEqual(res.body.components.schemas.Error.properties.error.properties.code.enum, Object.keys(ERROR_CODES));
  // Every /v1 route may meet the per-client limit; the operations that leave an audit record may meet an unwritable log.
  for (const [path, method] of [
    ['/v1/keys', 'get'],
    ['/v1/keys/{name}/sign', 'post'],
    ['/v1/sign/batch', 'post'],
  ] as const) {
    assert.match(described(path, method, '429'), /RESOURCE_EXHAUSTED/, path);
  }
  for (const [path, method] of [
    ['/v1/keys/{name}/sign', 'post'],
    ['/v1/keys/{name}/verify', 'post'],
    ['/v1/sign/batch', 'post'],
    ['/v1/keys/{name}/csr', 'post'],
    ['/v1/keys/{name}/certificate', 'put'],
    ['/v1/keys/{name}/certificates', 'post'],
  ] as const) {
    assert.match(described(path, method, '503'), /AUDIT_UNAVAILABLE/, path);
  }
  assert.doesNotMatch(described('/v1/keys', 'get', '503'), /AUDIT_UNAVAILABLE/, 'reads are not audited');
});
