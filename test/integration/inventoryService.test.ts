/**
 * The inventory through the service: a real SoftHSMv2 token, the service as its own process
 * (2 workers sharing one SQLite file), real HTTP, openssl reading what the inventory returns, and
 * real database faults (the file locked by another process's transaction; a directory that cannot
 * be created at start).
 */
import assert from 'node:assert/strict';
import { createHash, X509Certificate } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import Database from 'better-sqlite3';
import request from 'supertest';
import { type ServiceProcess, startServiceProcess } from '../support/faultService.js';
import { createTestToken, startTestService, type TestToken } from '../support/testToken.js';
import { INTERMEDIATE_EXT, makeRoot, opensslCsr, opensslOk, signAsRoot, TempDir } from '../unit/pki/openssl.js';

/** hsm_signer_inventory_failures_total{operation} in a scrape (0 when absent). */
const inventoryFailures = (metrics: string, operation: string): number =>
  Number(new RegExp(`^hsm_signer_inventory_failures_total\\{operation="${operation}"\\} (\\d+)`, 'm').exec(metrics)?.[1] ?? 0);

let token: TestToken;
let svc: ServiceProcess;
let dir: TempDir;
let leafCsr: string;
const dbFile = (): string => join(token.dir, 'issuance.db');
const auditFile = (): string => join(token.dir, 'audit.log');

interface Listed {
  serialNumber: string;
  sha256: string;
  certificatePem: string;
  status: string;
  issuerKeyVersion: number;
  subject: string;
  subjectAltNames: string[];
  profile: string;
}

const issue = (csrPem: string) =>
  svc.driver.request('POST', '/v1/keys/ca/certificates', { csrPem, profile: 'tls-server', validityDays: 30, subjectAltNames: { dns: ['svc.example.com'] } });

before(async () => {
  token = await createTestToken([{ name: 'ca', spec: 'ECC_NIST_P256' }]);
  dir = await TempDir.create();
  svc = await startServiceProcess(token.env({ WORKERS: '2', AUDIT_LOG: auditFile() }));
  await makeRoot(dir, { name: 'root', alg: 'ec-p256', subject: '/O=Example/CN=Inventory Root' });
  const csr = await svc.driver.request('POST', '/v1/keys/ca/csr', { subject: 'CN=Inventory CA,O=Example', ca: { pathLength: 0 } });
  assert.equal(csr.status, 200, csr.text);
  const intPem = await signAsRoot(dir, (csr.body as { csrPem: string }).csrPem, { root: 'root', out: 'int', ext: INTERMEDIATE_EXT });
  const attached = await svc.driver.request('PUT', '/v1/keys/ca/certificate', { certificatePem: intPem, chainPem: await dir.read('root.pem') });
  assert.equal(attached.status, 204, attached.text);
  leafCsr = await opensslCsr(dir, { name: 'leaf', subject: '/O=Example/CN=svc.example.com' });
});
after(async () => {
  await svc?.stop();
  await dir?.remove();
  token?.cleanup();
});

test('issued certificates are listed page by page (limit 2) exactly once each, and one shows with its PEM, SHA-256 and serial', async () => {
  const serials: string[] = [];
  // New connections: the cluster hands them to both workers, which share the file.
  for (let i = 0; i < 5; i++) {
    const r = await svc.driver.request(
      'POST',
      '/v1/keys/ca/certificates',
      { csrPem: leafCsr, profile: 'tls-server', validityDays: 30, subjectAltNames: { dns: ['svc.example.com'], ip: ['192.0.2.7'] } },
      {},
      30_000,
      { newConnection: true },
    );
    assert.equal(r.status, 201, r.text);
    serials.push((r.body as { serialNumber: string }).serialNumber);
  }
  const listed: Listed[] = [];
  let cursor: string | undefined;
  let pages = 0;
  do {
    const r = await svc.driver.request('GET', `/v1/keys/ca/certificates?limit=2${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    assert.equal(r.status, 200, r.text);
    const body = r.body as { certificates: Listed[]; nextCursor?: string };
    assert.ok(body.certificates.length <= 2);
    listed.push(...body.certificates);
    cursor = body.nextCursor;
    pages++;
  } while (cursor !== undefined && pages < 10);
  assert.deepEqual(
    listed.map((c) => c.serialNumber),
    serials,
    'every certificate once, in issue order',
  );
  assert.equal(pages, 3);

  const serial = serials[2] as string;
  // Lower case with leading zeros: the same certificate.
  const shown = await svc.driver.request('GET', `/v1/keys/ca/certificates/000${serial.toLowerCase()}`);
  assert.equal(shown.status, 200, shown.text);
  const c = shown.body as Listed;
  assert.equal(c.serialNumber, serial);
  assert.equal(c.status, 'valid');
  assert.equal(c.issuerKeyVersion, 1);
  assert.equal(c.profile, 'tls-server');
  assert.equal(c.subject, 'CN=svc.example.com,O=Example');
  assert.deepEqual(c.subjectAltNames, ['dns:svc.example.com', 'ip:192.0.2.7']);
  const x509 = new X509Certificate(c.certificatePem);
  assert.equal(createHash('sha256').update(x509.raw).digest('hex'), c.sha256);
  assert.equal(x509.serialNumber, serial);
  await dir.write('shown.pem', c.certificatePem);
  const printed = await opensslOk(dir.path, 'x509', '-in', 'shown.pem', '-noout', '-serial');
  assert.equal(printed.trim(), `serial=${serial}`);

  const unknown = await svc.driver.request('GET', '/v1/keys/ca/certificates/ABCDEF01');
  assert.equal(unknown.status, 404, unknown.text);
  const malformed = await svc.driver.request('GET', '/v1/keys/ca/certificates/xyz');
  assert.equal(malformed.status, 400, malformed.text);
  assert.match(malformed.text, /serial/);
  const badLimit = await svc.driver.request('GET', '/v1/keys/ca/certificates?limit=1001');
  assert.equal(badLimit.status, 400, badLimit.text);
  assert.match(badLimit.text, /limit/);
});

test('the inventory cannot be written (another process holds its write lock): 503 INVENTORY_UNAVAILABLE, no certificate, audited; then it works again', async () => {
  const before = ((await svc.driver.request('GET', '/v1/keys/ca/certificates?limit=1000')).body as { certificates: unknown[] }).certificates.length;
  // Another process (this one) takes SQLite's write lock and keeps it past the service's busy timeout.
  const holder = new Database(dbFile());
  holder.pragma('busy_timeout = 5000');
  holder.exec('BEGIN IMMEDIATE');
  try {
    const refused = await issue(leafCsr);
    assert.equal(refused.status, 503, refused.text);
    assert.equal((refused.body as { error: { code: string } }).error.code, 'INVENTORY_UNAVAILABLE');
    assert.ok(Number(refused.headers['retry-after']) >= 1);
    assert.doesNotMatch(refused.text, /BEGIN CERTIFICATE/);
    const signed = await svc.driver.request('POST', '/v1/keys/ca/sign', { algorithm: 'ECDSA_SHA_256', message: Buffer.from('still signs').toString('base64') });
    assert.equal(signed.status, 200, 'signing does not need the inventory');
    // Summed over the two workers: the one that answered counted its failed record.
    const metrics = await svc.driver.request('GET', '/metrics');
    assert.ok(inventoryFailures(metrics.text, 'record') >= 1, 'the failed record is counted');
  } finally {
    holder.exec('ROLLBACK');
    holder.close();
  }
  const audit = readFileSync(auditFile(), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { operation: string; outcome: string });
  assert.equal(audit.filter((r) => r.operation === 'issue').at(-1)?.outcome, 'INVENTORY_UNAVAILABLE');
  const after = ((await svc.driver.request('GET', '/v1/keys/ca/certificates?limit=1000')).body as { certificates: unknown[] }).certificates.length;
  assert.equal(after, before, 'nothing recorded');
  const again = await issue(leafCsr);
  assert.equal(again.status, 201, again.text);
});

test('a database that cannot be opened at start: the service starts and signs, issuing is 503 until the inventory opens on a later request', async () => {
  // The inventory's directory is a regular file: SQLite cannot create the database (even as root).
  const blocked = join(token.dir, 'blocked');
  writeFileSync(blocked, '');
  const inProcess = await startTestService(token, { ISSUANCE_DB: `sqlite:${join(blocked, 'issuance.db')}` });
  try {
    const api = () => request(inProcess.app);
    await api()
      .post('/v1/keys/ca/sign')
      .send({ algorithm: 'ECDSA_SHA_256', message: Buffer.from('x').toString('base64') })
      .expect(200);
    const failuresBefore = inventoryFailures((await api().get('/metrics').expect(200)).text, 'open');
    const refused = await api().post('/v1/keys/ca/certificates').send({ csrPem: leafCsr, profile: 'tls-client', validityDays: 1 });
    assert.equal(refused.status, 503, refused.text);
    assert.equal(refused.body.error.code, 'INVENTORY_UNAVAILABLE');
    assert.equal((await api().get('/v1/keys/ca/certificates')).status, 503);
    // Operators see it: /readyz names it and stays 200 (signing works); the failed opens are counted.
    const ready = await api().get('/readyz').expect(200);
    assert.equal(ready.body.status, 'ready');
    assert.equal(ready.body.inventory, 'unavailable');
    await new Promise((r) => setTimeout(r, 1100));
    assert.equal((await api().get('/v1/keys/ca/certificates')).status, 503, 'a new attempt to open, failing again');
    assert.ok(inventoryFailures((await api().get('/metrics').expect(200)).text, 'open') > failuresBefore, 'failed opens are counted');
    // The fault repaired: the next request after the retry interval (1 s) opens it.
    rmSync(blocked);
    mkdirSync(blocked);
    await new Promise((r) => setTimeout(r, 1100));
    const issued = await api().post('/v1/keys/ca/certificates').send({ csrPem: leafCsr, profile: 'tls-client', validityDays: 1 });
    assert.equal(issued.status, 201, issued.text);
    const listed = await api().get('/v1/keys/ca/certificates').expect(200);
    assert.equal((await api().get('/readyz').expect(200)).body.inventory, 'ok');
    assert.deepEqual(
      listed.body.certificates.map((c: { serialNumber: string }) => c.serialNumber),
      [issued.body.serialNumber],
    );
  } finally {
    await inProcess.close();
  }
});
