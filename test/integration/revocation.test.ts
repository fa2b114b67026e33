/**
 * Revocation end to end: a real SoftHSMv2 token, the service as its own process (2 workers sharing
 * one SQLite inventory), real HTTP, an openssl root above the HSM intermediate, and openssl as the
 * relying party: `openssl verify -crl_check`, `openssl crl -verify`, `openssl ocsp -url`.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { type HttpResult, type ServiceProcess, startServiceProcess } from '../support/faultService.js';
import { createTestToken, type TestToken } from '../support/testToken.js';
import { INTERMEDIATE_EXT, makeRoot, openssl, opensslCsr, opensslOk, signAsRoot, TempDir } from '../unit/pki/openssl.js';

const KEY = 'int-ec';
let token: TestToken;
let dir: TempDir;
let svc: ServiceProcess | undefined;
let env: NodeJS.ProcessEnv;
const issued: Record<string, string> = {};

const call = (method: string, path: string, body?: unknown): Promise<HttpResult> => {
  if (!svc) throw new Error('no service');
  return svc.driver.request(method, path, body);
};

/** A raw request (binary body and answer), on a new connection. */
async function rawCall(method: string, path: string, body?: Buffer, contentType?: string): Promise<{ status: number; type: string; body: Buffer }> {
  if (!svc) throw new Error('no service');
  const res = await fetch(`http://127.0.0.1:${svc.port}${path}`, {
    method,
    ...(body ? { body: new Uint8Array(body), headers: { 'content-type': contentType ?? 'application/ocsp-request' } } : {}),
  });
  return { status: res.status, type: res.headers.get('content-type') ?? '', body: Buffer.from(await res.arrayBuffer()) };
}

async function start(): Promise<void> {
  svc = await startServiceProcess(env);
}

async function issue(leaf: string): Promise<string> {
  await opensslCsr(dir, { name: leaf, subject: `/O=Example/CN=${leaf}.example.com`, alg: 'ec-p256' });
  const r = await call('POST', `/v1/keys/${KEY}/certificates`, {
    csrPem: await dir.read(`${leaf}.csr`),
    profile: 'tls-server',
    validityDays: 30,
    subjectAltNames: { dns: [`${leaf}.example.com`] },
  });
  assert.equal(r.status, 201, r.text);
  const body = r.body as { certificatePem: string; serialNumber: string };
  await dir.write(`${leaf}.pem`, body.certificatePem);
  issued[leaf] = body.serialNumber;
  return body.serialNumber;
}

/** The CRL (PEM, written to crl.pem) and its number as `openssl crl` reads it. */
async function fetchCrl(): Promise<{ number: number; pem: string; header: string }> {
  const r = await call('GET', `/v1/keys/${KEY}/crl?format=pem`);
  assert.equal(r.status, 200, r.text);
  await dir.write('crl.pem', r.text);
  const text = await opensslOk(dir.path, 'crl', '-in', 'crl.pem', '-noout', '-text');
  const m = /X509v3 CRL Number: \n\s+(\d+)/.exec(text);
  assert.ok(m, text);
  return { number: Number(m[1]), pem: r.text, header: String(r.headers['x-crl-number']) };
}

/** Polls the CRL until its number passes `above` (the other worker may serve its copy for up to a second). */
async function crlAbove(above: number): Promise<{ number: number; pem: string }> {
  const end = Date.now() + 10_000;
  for (;;) {
    const crl = await fetchCrl();
    if (crl.number > above) return crl;
    if (Date.now() > end) assert.fail(`the CRL number stayed at ${crl.number}`);
    await sleep(200);
  }
}

const verifyWithCrl = (leaf: string) => openssl(dir.path, 'verify', '-crl_check', '-CRLfile', 'crl.pem', '-CAfile', 'chain.pem', `${leaf}.pem`);

async function ocsp(...args: string[]): Promise<string> {
  if (!svc) throw new Error('no service');
  const r = await openssl(dir.path, 'ocsp', '-url', `http://127.0.0.1:${svc.port}/ocsp/${KEY}`, '-CAfile', 'root.pem', ...args);
  return `${r.stdout}${r.stderr}`;
}

before(async () => {
  token = await createTestToken([
    { name: KEY, spec: 'ECC_NIST_P256' },
    { name: 'fresh', spec: 'ECC_NIST_P256' },
  ]);
  dir = await TempDir.create();
  env = token.env({
    WORKERS: '2',
    ISSUANCE_DB: `sqlite:${join(token.dir, 'issuance.db')}`,
    AUDIT_LOG: join(token.dir, 'audit.log'),
    CRL_URL_BASE: 'http://pki.example.test/',
    OCSP_URL_BASE: 'http://ocsp.example.test',
  });
  await makeRoot(dir, { name: 'root', alg: 'ec-p384', subject: '/C=US/O=Example/CN=Example Offline Root' });
  await start();
  const csr = await call('POST', `/v1/keys/${KEY}/csr`, { subject: `CN=Issuing CA ${KEY},O=Example,C=US`, ca: { pathLength: 0 } });
  assert.equal(csr.status, 200, csr.text);
  const intPem = await signAsRoot(dir, (csr.body as { csrPem: string }).csrPem, { root: 'root', out: 'int', ext: INTERMEDIATE_EXT, days: 365 });
  const attached = await call('PUT', `/v1/keys/${KEY}/certificate`, { certificatePem: intPem, chainPem: await dir.read('root.pem') });
  assert.equal(attached.status, 204, attached.text);
  await dir.write('chain.pem', (await dir.read('root.pem')) + intPem);
});
after(async () => {
  await svc?.stop();
  await dir?.remove();
  token?.cleanup();
});

test('issue, revoke, CRL and OCSP as openssl sees them; CRL numbers increase across revocations and a restart', async () => {
  await issue('a');
  await issue('b');
  const text = await opensslOk(dir.path, 'x509', '-in', 'a.pem', '-noout', '-text');
  assert.match(text, /X509v3 CRL Distribution Points: \n\s+Full Name:\n\s+URI:http:\/\/pki\.example\.test\/v1\/keys\/int-ec\/crl\?keyVersion=1\n/);
  assert.match(text, /Authority Information Access: \n\s+OCSP - URI:http:\/\/ocsp\.example\.test\/ocsp\/int-ec\n/);

  // Before any revocation: an empty CRL, signed by the intermediate; both certificates pass.
  const first = await fetchCrl();
  assert.equal(first.header, String(first.number));
  const sig = await openssl(dir.path, 'crl', '-in', 'crl.pem', '-noout', '-verify', '-CAfile', 'int.pem');
  assert.match(sig.stdout + sig.stderr, /verify OK/);
  assert.equal((await verifyWithCrl('a')).code, 0);
  // A burst is served from memory (same number, same bytes); the DER form is the same CRL.
  const burst = await Promise.all(Array.from({ length: 20 }, () => call('GET', `/v1/keys/${KEY}/crl?format=pem`)));
  assert.ok(burst.every((r) => r.status === 200 && r.text === first.pem));
  const derCrl = await rawCall('GET', `/v1/keys/${KEY}/crl`);
  assert.equal(derCrl.status, 200);
  assert.equal(derCrl.type, 'application/pkix-crl');

  let out = await ocsp('-issuer', 'int.pem', '-cert', 'a.pem');
  assert.match(out, /Response verify OK/, out);
  assert.match(out, /a\.pem: good/, out);

  // Revoke a (keyCompromise); a repeat is idempotent and keeps the first time and reason.
  const revoked = await call('POST', `/v1/keys/${KEY}/certificates/${issued.a}/revoke`, { reason: 'keyCompromise' });
  assert.equal(revoked.status, 200, revoked.text);
  const rb = revoked.body as { revokedNow: boolean; reason: string; revokedAt: string; serialNumber: string };
  assert.equal(rb.revokedNow, true);
  assert.equal(rb.serialNumber, issued.a);
  const again = await call('POST', `/v1/keys/${KEY}/certificates/${issued.a?.toLowerCase()}/revoke`, { reason: 'superseded' });
  assert.equal(again.status, 200, again.text);
  assert.deepEqual(again.body, { ...rb, revokedNow: false });

  const second = await crlAbove(first.number);
  assert.equal(second.number, first.number + 1);
  const crlText = await opensslOk(dir.path, 'crl', '-in', 'crl.pem', '-noout', '-text');
  assert.match(crlText, /Key Compromise/);
  const sig2 = await openssl(dir.path, 'crl', '-in', 'crl.pem', '-noout', '-verify', '-CAfile', 'int.pem');
  assert.match(sig2.stdout + sig2.stderr, /verify OK/);
  const va = await verifyWithCrl('a');
  assert.notEqual(va.code, 0);
  assert.match(va.stdout + va.stderr, /certificate revoked/);
  const vb = await verifyWithCrl('b');
  assert.equal(vb.code, 0, vb.stdout + vb.stderr);

  out = await ocsp('-issuer', 'int.pem', '-cert', 'a.pem', '-cert', 'b.pem', '-serial', '0x1234ABCD');
  assert.match(out, /Response verify OK/, out);
  assert.match(out, /a\.pem: revoked\n[\s\S]*Reason: keyCompromise/, out);
  assert.match(out, /b\.pem: good/, out);
  assert.match(out, /0x1234ABCD: unknown/, out);

  // A certificate of another CA with the same issuer name: its serial, asked about under our CA, is unknown;
  // asked about under its own CA (another key), the responder is not authoritative.
  await makeRoot(dir, { name: 'other', alg: 'ec-p256', subject: `/C=US/O=Example/CN=Issuing CA ${KEY}` });
  await opensslCsr(dir, { name: 'o', subject: '/CN=o.example.com' });
  await opensslOk(
    dir.path,
    'x509',
    '-req',
    '-in',
    'o.csr',
    '-CA',
    'other.pem',
    '-CAkey',
    'other.key',
    '-set_serial',
    '0x0BADC0DE',
    '-days',
    '2',
    '-out',
    'o.pem',
  );
  out = await ocsp('-issuer', 'int.pem', '-cert', 'o.pem');
  assert.match(out, /o\.pem: unknown/, out);
  assert.match(out, /Response verify OK/, out);
  out = await ocsp('-issuer', 'other.pem', '-cert', 'o.pem');
  assert.match(out, /unauthorized/i, out);

  // OCSP by GET (RFC 6960 A.1): the URL-encoded base64 of the request openssl would POST; one whose
  // base64 has a `/` (sent as %2F), so that the path segment's decoding is exercised too.
  let reqB64 = '';
  for (let i = 0; i < 50 && !reqB64.includes('/'); i++) {
    await opensslOk(dir.path, 'ocsp', '-issuer', 'int.pem', '-cert', 'a.pem', '-reqout', 'get-req.der');
    reqB64 = readFileSync(dir.file('get-req.der')).toString('base64');
  }
  assert.ok(reqB64.includes('/'), reqB64);
  const got = await rawCall('GET', `/ocsp/${KEY}/${encodeURIComponent(reqB64)}`);
  assert.equal(got.status, 200);
  assert.equal(got.type, 'application/ocsp-response');
  await dir.write('get-resp.der', got.body);
  const gotText = await openssl(dir.path, 'ocsp', '-respin', 'get-resp.der', '-reqin', 'get-req.der', '-CAfile', 'root.pem', '-resp_text');
  assert.match(gotText.stdout + gotText.stderr, /Response verify OK/);
  assert.match(gotText.stdout + gotText.stderr, /Cert Status: revoked/);

  // A second revocation: the next number.
  const rev2 = await call('POST', `/v1/keys/${KEY}/certificates/${issued.b}/revoke`, { reason: 'superseded' });
  assert.equal(rev2.status, 200, rev2.text);
  const third = await crlAbove(second.number);
  assert.equal(third.number, second.number + 1);
  assert.equal((await verifyWithCrl('b')).code === 0, false);

  // A restart serves the stored CRL (same number, same bytes), and the next revocation continues the numbering.
  await svc?.stop();
  svc = undefined;
  await start();
  const afterRestart = await fetchCrl();
  assert.equal(afterRestart.number, third.number);
  assert.equal(afterRestart.pem, third.pem);
  await issue('c');
  const rev3 = await call('POST', `/v1/keys/${KEY}/certificates/${issued.c}/revoke`, { reason: 'cessationOfOperation' });
  assert.equal(rev3.status, 200, rev3.text);
  const fourth = await crlAbove(third.number);
  assert.equal(fourth.number, third.number + 1);

  // Every revocation is in the audit trail.
  const audit = readFileSync(join(token.dir, 'audit.log'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { operation: string; outcome: string; serialNumber?: string; reason?: string; keyName?: string });
  const revokes = audit.filter((r) => r.operation === 'revoke' && r.outcome === 'ok');
  assert.deepEqual(
    revokes.map((r) => [r.keyName, r.serialNumber, r.reason]),
    [
      [KEY, issued.a, 'keyCompromise'],
      [KEY, issued.a, 'superseded'],
      [KEY, issued.b, 'superseded'],
      [KEY, issued.c, 'cessationOfOperation'],
    ],
  );
});

test('bad input: a clear 4xx, never a 5xx', async () => {
  const code = (r: HttpResult): string | undefined => (r.body as { error?: { code?: string } } | undefined)?.error?.code;
  const serial = issued.b ?? '1';
  let r = await call('POST', `/v1/keys/${KEY}/certificates/${serial}/revoke`, { reason: 'bogus' });
  assert.equal(r.status, 400, r.text);
  assert.match(r.text, /reason: must be one of unspecified, keyCompromise/);
  r = await call('POST', `/v1/keys/${KEY}/certificates/${serial}/revoke`, {});
  assert.equal(r.status, 400, r.text);
  r = await call('POST', `/v1/keys/${KEY}/certificates/not-hex/revoke`, { reason: 'keyCompromise' });
  assert.equal(r.status, 400, r.text);
  assert.match(r.text, /serial/);
  r = await call('POST', `/v1/keys/${KEY}/certificates/1234ABCD/revoke`, { reason: 'keyCompromise' });
  assert.equal(r.status, 404, r.text);
  assert.equal(code(r), 'NOT_FOUND');
  // The serial of a certificate another key issued is not this key's.
  r = await call('POST', `/v1/keys/fresh/certificates/${serial}/revoke`, { reason: 'keyCompromise' });
  assert.equal(r.status, 404, r.text);

  r = await call('GET', '/v1/keys/fresh/crl');
  assert.equal(r.status, 404, r.text);
  assert.match(r.text, /has not issued any certificate/);
  r = await call('GET', `/v1/keys/${KEY}/crl?keyVersion=7`);
  assert.equal(r.status, 404, r.text);
  r = await call('GET', `/v1/keys/${KEY}/crl?format=txt`);
  assert.equal(r.status, 400, r.text);
  assert.match(r.text, /format/);

  for (const body of [Buffer.from('not DER at all'), Buffer.from([0x30, 0x03, 0x02, 0x01, 0x01]), Buffer.alloc(0)]) {
    const o = await rawCall('POST', `/ocsp/${KEY}`, body);
    assert.equal(o.status, 400);
    assert.equal(o.type, 'application/ocsp-response');
    await dir.write('malformed.der', o.body);
    const t = await openssl(dir.path, 'ocsp', '-respin', 'malformed.der', '-resp_text', '-noverify');
    assert.match(t.stdout + t.stderr, /malformedrequest/i);
  }
  const wrongType = await rawCall('POST', `/ocsp/${KEY}`, Buffer.from([0x30, 0x00]), 'application/json');
  assert.equal(wrongType.status, 415);
  const badGet = await rawCall('GET', `/ocsp/${KEY}/${encodeURIComponent('!!notbase64!!')}`);
  assert.equal(badGet.status, 400);
  assert.equal(badGet.type, 'application/ocsp-response');
  const noKey = await rawCall('GET', `/v1/keys/no-such-key/crl`);
  assert.equal(noKey.status, 404);
});
