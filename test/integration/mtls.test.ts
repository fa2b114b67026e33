/**
 * Mutual TLS on the real app and a real SoftHSMv2 token: node:https server as main.ts builds it
 * (createServer + readTlsFiles), node:https clients with certificates openssl made.
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { readTlsFiles } from '../../src/config/tlsFiles.js';
import { createServer, type ApiServer } from '../../src/http/createServer.js';
import { createTestToken, startTestService, type TestToken } from '../support/testToken.js';
import { httpsRequest, TestPki, type HttpsOptions, type Leaf } from '../support/tlsPki.js';

const sha = (s: string): string => createHash('sha256').update(s).digest('hex');
const BOTH_TOKEN = 'tok-both-0123456789abcdef';
const READER_TOKEN = 'tok-reader-0123456789abcdef';
const sign = { algorithm: 'ECDSA_SHA_256', message: Buffer.from('x').toString('base64') };

let token: TestToken;
let pki: TestPki;
let svc: Awaited<ReturnType<typeof startTestService>>;
let server: ApiServer;
let port: number;
const leaves: Record<string, Leaf> = {};

async function listen(s: ApiServer): Promise<number> {
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  return (s.address() as AddressInfo).port;
}

before(async () => {
  [token, pki] = await Promise.all([
    createTestToken([
      { name: 'payments-ec', spec: 'ECC_NIST_P256' },
      { name: 'other-ec', spec: 'ECC_NIST_P256' },
    ]),
    TestPki.create(),
  ]);
  const specs: Record<string, Parameters<TestPki['leaf']>[1]> = {
    payments: { subject: '/O=Example/CN=payments-api' },
    // The same names in the other order: RFC 4514 "O=Example,CN=payments-api", another subject.
    reversed: { subject: '/CN=payments-api/O=Example' },
    spaced: { subject: '/O=Example/CN=Spaced Name' },
    spiffe: { subject: '/O=Example/CN=batch', san: ['URI:spiffe://example/batch-job'] },
    worker: { subject: '/O=Example/CN=worker', san: ['DNS:worker.example.com'] },
    both: { subject: '/O=Example/CN=both' },
    stranger: { subject: '/O=Example/CN=stranger' },
    untrusted: { subject: '/O=Example/CN=payments-api', ca: 'other-ca' },
    expired: { subject: '/O=Example/CN=payments-api', days: -1 },
  };
  for (const [name, spec] of Object.entries(specs)) leaves[name] = await pki.leaf(name, spec);
  const clientsFile = join(token.dir, 'clients.json');
  writeFileSync(
    clientsFile,
    JSON.stringify({
      clients: [
        { name: 'payments-api', certificate: { subject: 'CN=payments-api,O=Example' }, allow: [{ keys: 'payments-*', operations: ['sign', 'read'] }] },
        // Written differently from openssl's form: normalized before comparing.
        { name: 'spaced', certificate: { subject: ' cn = Spaced Name , o = Example ' }, allow: [{ keys: '*', operations: ['read'] }] },
        { name: 'batch', certificate: { san: 'spiffe://example/batch-job' }, allow: [{ keys: '*', operations: ['read'] }] },
        { name: 'worker', certificate: { san: 'Worker.Example.com' }, allow: [{ keys: '*', operations: ['read'] }] },
        { name: 'both', tokenSha256: sha(BOTH_TOKEN), certificate: { subject: 'CN=both,O=Example' }, allow: [{ keys: '*', operations: ['sign'] }] },
        { name: 'reader', tokenSha256: sha(READER_TOKEN), allow: [{ keys: '*', operations: ['read'] }] },
      ],
    }),
  );
  svc = await startTestService(token, {
    CLIENTS_FILE: clientsFile,
    TLS_CERT_FILE: pki.server.certFile,
    TLS_KEY_FILE: pki.server.keyFile,
    TLS_CLIENT_CA_FILE: pki.caFile,
  });
  server = createServer(svc.app, svc.config.server, readTlsFiles(svc.config.tls!));
  port = await listen(server);
});
after(async () => {
  server?.close();
  await svc?.close();
  await pki?.remove();
  token?.cleanup();
});

function as(client: string | undefined, o: Omit<HttpsOptions, 'ca'>) {
  const leaf = client === undefined ? undefined : leaves[client];
  assert.ok(client === undefined || leaf, `a certificate for ${client}`);
  return httpsRequest(port, { ...o, ca: pki.ca, ...(leaf ? { client: leaf } : {}) });
}
const errorOf = (r: { body: unknown }) => (r.body as { error: { code: string; message: string } }).error;

test('a client certificate names its client by subject: its grant applies', async () => {
  assert.equal((await as('payments', { path: '/v1/keys/payments-ec/sign', body: sign })).status, 200);
  const denied = await as('payments', { path: '/v1/keys/other-ec/sign', body: sign });
  assert.equal(denied.status, 403);
  assert.equal(errorOf(denied).code, 'PERMISSION_DENIED');
  const list = await as('payments', { path: '/v1/keys' });
  assert.deepEqual(
    (list.body as { keys: { name: string }[] }).keys.map((k) => k.name),
    ['payments-ec'],
  );
});

test('subjects compare in normal form (keyword case, spaces), in RFC 4514 order', async () => {
  assert.equal((await as('spaced', { path: '/v1/keys' })).status, 200);
  const reversed = await as('reversed', { path: '/v1/keys' });
  assert.equal(reversed.status, 401, 'the same attributes in the other order are another subject');
  assert.match(errorOf(reversed).message, /^client certificate: no client in CLIENTS_FILE has its subject \(O=Example,CN=payments-api\)/);
});

test('a client certificate names its client by URI or DNS SAN', async () => {
  assert.equal((await as('spiffe', { path: '/v1/keys' })).status, 200);
  assert.equal((await as('spiffe', { path: '/v1/keys/payments-ec/sign', body: sign })).status, 403);
  assert.equal((await as('worker', { path: '/v1/keys' })).status, 200, 'DNS names compare case-insensitively');
});

test('a verified certificate that matches no client is 401; an untrusted, expired or missing one fails the handshake', async () => {
  const r = await as('stranger', { path: '/v1/keys' });
  assert.equal(r.status, 401);
  assert.equal(errorOf(r).code, 'UNAUTHENTICATED');
  for (const client of ['untrusted', 'expired', undefined]) {
    // A bearer token does not help without a certificate the CA vouches for.
    const failed = await as(client, { path: '/v1/keys', headers: { authorization: `Bearer ${READER_TOKEN}` } }).then(
      (res) => `HTTP ${res.status}`,
      (e: NodeJS.ErrnoException) => e.code ?? e.message,
    );
    assert.ok(!failed.startsWith('HTTP'), `${client ?? 'no certificate'}: refused during the handshake, got ${failed}`);
  }
  // Health checks go through the same TLS: a client certificate is needed there too.
  assert.equal((await as('stranger', { path: '/readyz' })).status, 200);
});

test('a bearer token and a certificate must name the same client', async () => {
  assert.equal((await as('both', { path: '/v1/keys/other-ec/sign', body: sign, headers: { authorization: `Bearer ${BOTH_TOKEN}` } })).status, 200);
  for (const [client, tok] of [
    ['payments', BOTH_TOKEN],
    ['both', READER_TOKEN],
  ] as const) {
    const r = await as(client, { path: '/v1/keys', headers: { authorization: `Bearer ${tok}` } });
    assert.equal(r.status, 401, `${client} with another client's token`);
    assert.equal(errorOf(r).message, 'Authorization: the bearer token and the client certificate name different clients');
    assert.ok(!r.text.includes(tok) && !r.text.includes(sha(tok)), 'no secret in the answer');
  }
  const unknown = await as('payments', { path: '/v1/keys', headers: { authorization: 'Bearer nobody-knows-this-token' } });
  assert.equal(unknown.status, 401);
  assert.ok(!unknown.text.includes('nobody-knows-this-token'));
});

test('without a clients file, every certificate the CA verified is a client that may do everything', async () => {
  const open = await startTestService(token, { TLS_CERT_FILE: pki.server.certFile, TLS_KEY_FILE: pki.server.keyFile, TLS_CLIENT_CA_FILE: pki.caFile });
  const s = createServer(open.app, open.config.server, readTlsFiles(open.config.tls!));
  const p = await listen(s);
  try {
    const r = await httpsRequest(p, { path: '/v1/keys/other-ec/sign', body: sign, ca: pki.ca, client: leaves.stranger! });
    assert.equal(r.status, 200);
    const other = await httpsRequest(p, { path: '/v1/keys', ca: pki.ca, client: leaves.untrusted! }).then(
      () => 'answered',
      () => 'refused',
    );
    assert.equal(other, 'refused', 'only that CA');
  } finally {
    s.close();
    await open.close();
  }
});
