/**
 * SIGHUP on the real process: the server certificate and key and the clients file are read
 * again in every worker (WORKERS=2: the cluster primary forwards the signal; WORKERS=1: the
 * process handles it), without dropping a request in flight or an open connection; a file that
 * does not load keeps the old one, with one error line per worker naming the variable.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { copyFileSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from '../../testkit/localHttp.js';
import { eventually, startServiceProcess, type ServiceProcess } from '../support/faultService.js';
import { createTestToken, type TestToken } from '../support/testToken.js';
import { httpsRequest, TestPki, type Leaf } from '../support/tlsPki.js';

const OPS_TOKEN = 'tok-ops-added-by-reload-0123456789';
const BROKEN_MARKER = 'CONTENT-THAT-MUST-NOT-BE-LOGGED';
const sha = (s: string): string => createHash('sha256').update(s).digest('hex');
const fingerprint = (pem: string): string => new X509Certificate(pem).fingerprint256;
const body = JSON.stringify({ algorithm: 'ECDSA_SHA_256', message: Buffer.from('in flight').toString('base64') });

let token: TestToken;
let pki: TestPki;
let serverB: Leaf;
let app: Leaf;
let ops: Leaf;
let stranger: Leaf;

before(async () => {
  [token, pki] = await Promise.all([createTestToken([{ name: 'ec', spec: 'ECC_NIST_P256' }]), TestPki.create()]);
  serverB = await pki.leaf('server-b', { subject: '/O=Example/CN=localhost', san: ['IP:127.0.0.1', 'DNS:localhost'], usage: 'server' });
  app = await pki.leaf('app', { subject: '/O=Example/CN=app' });
  ops = await pki.leaf('ops', { subject: '/O=Example/CN=ops', san: ['DNS:ops.example'] });
  stranger = await pki.leaf('stranger', { subject: '/O=Example/CN=app', ca: 'other-ca' });
});
after(async () => {
  await pki?.remove();
  token?.cleanup();
});

const clientsV1 = { clients: [{ name: 'app', certificate: { subject: 'CN=app,O=Example' }, allow: [{ keys: '*', operations: ['read', 'sign'] }] }] };
const clientsV2 = {
  clients: [
    ...clientsV1.clients,
    { name: 'ops', tokenSha256: sha(OPS_TOKEN), certificate: { san: 'ops.example' }, allow: [{ keys: '*', operations: ['read'] }] },
  ],
};

interface LogRecord {
  level: number;
  pid: number;
  msg: string;
  reloaded?: string[];
}
const records = (svc: ServiceProcess): LogRecord[] => svc.logs().map((l) => JSON.parse(l) as LogRecord);

/** Sends SIGHUP to the service and waits for `workers` more 'SIGHUP: reloaded' lines. */
async function hangUp(svc: ServiceProcess, workers: number): Promise<LogRecord[]> {
  const before = records(svc).filter((r) => r.msg === 'SIGHUP: reloaded').length;
  process.kill(svc.pid, 'SIGHUP');
  const problem = await eventually(async () => {
    const n = records(svc).filter((r) => r.msg === 'SIGHUP: reloaded').length;
    return n >= before + workers ? undefined : `${n - before} of ${workers} workers reloaded`;
  }, 10_000);
  assert.equal(problem, undefined, problem);
  return records(svc)
    .filter((r) => r.msg === 'SIGHUP: reloaded')
    .slice(before);
}

/** Certificates presented to `n` new connections of `client`, and their answers to GET /v1/keys with `authorization`. */
async function newConnections(
  svc: ServiceProcess,
  n: number,
  client: Leaf,
  authorization?: string,
): Promise<{ fingerprints: Set<string>; statuses: Set<number> }> {
  const results = await Promise.all(
    Array.from({ length: n }, () => httpsRequest(svc.port, { path: '/v1/keys', ca: pki.ca, client, ...(authorization ? { headers: { authorization } } : {}) })),
  );
  return { fingerprints: new Set(results.map((r) => r.serverFingerprint)), statuses: new Set(results.map((r) => r.status)) };
}

for (const workers of [2, 1]) {
  test(`SIGHUP reloads the certificate and the clients without dropping requests (WORKERS=${workers})`, async () => {
    const tlsDir = join(token.dir, `tls-${workers}`);
    const certFile = `${tlsDir}-cert.pem`;
    const keyFile = `${tlsDir}-key.pem`;
    const clientsFile = `${tlsDir}-clients.json`;
    copyFileSync(pki.server.certFile, certFile);
    copyFileSync(pki.server.keyFile, keyFile);
    writeFileSync(clientsFile, JSON.stringify(clientsV1));
    const svc = await startServiceProcess(
      token.env({
        NODE_ENV: 'production',
        WORKERS: String(workers),
        LOG_LEVEL: 'info',
        TLS_CERT_FILE: certFile,
        TLS_KEY_FILE: keyFile,
        TLS_CLIENT_CA_FILE: pki.caFile,
        CLIENTS_FILE: clientsFile,
        METRICS_PORT: String(await freePort()),
      }),
      { ready: async (port) => (await httpsRequest(port, { path: '/readyz', ca: pki.ca, client: app })).status === 200 },
    );
    // One keep-alive connection, open across the reloads.
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: pki.ca, cert: app.cert, key: app.key });
    try {
      // Every worker serving (a worker's /readyz answering is not all of them).
      assert.equal(
        await eventually(async () => (records(svc).filter((r) => r.msg === 'serving').length >= workers ? undefined : 'not all serving'), 20_000),
        undefined,
      );
      const a = await newConnections(svc, 4, ops, `Bearer ${OPS_TOKEN}`);
      assert.deepEqual(a.fingerprints, new Set([fingerprint(pki.server.cert)]));
      assert.deepEqual(a.statuses, new Set([401]), 'the ops client is not known yet');

      // A request in flight: headers and half its body sent, on the keep-alive connection.
      let socket: TLSSocket | undefined;
      const inFlight = new Promise<{ status: number; text: string }>((resolve, reject) => {
        const req = https.request(
          {
            host: '127.0.0.1',
            port: svc.port,
            method: 'POST',
            path: '/v1/keys/ec/sign',
            agent,
            headers: { 'content-type': 'application/json', 'content-length': String(body.length) },
          },
          (res) => {
            let text = '';
            res.on('data', (d: Buffer) => (text += d.toString()));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
          },
        );
        req.on('socket', (s) => (socket = s as TLSSocket));
        req.on('error', reject);
        req.write(body.slice(0, 20));
        void sleep(1500).then(() => req.end(body.slice(20)));
      });
      let settled = false;
      void inFlight.finally(() => (settled = true)).catch(() => undefined);
      await sleep(300);

      copyFileSync(serverB.certFile, certFile);
      copyFileSync(serverB.keyFile, keyFile);
      writeFileSync(clientsFile, JSON.stringify(clientsV2));
      const reloaded = await hangUp(svc, workers);
      assert.equal(new Set(reloaded.map((r) => r.pid)).size, workers, 'every worker reloaded');
      for (const r of reloaded) assert.deepEqual(r.reloaded, ['TLS_CERT_FILE', 'TLS_KEY_FILE', 'TLS_CLIENT_CA_FILE', 'CLIENTS_FILE']);

      assert.equal(settled, false, 'the request was still in flight during the reload');
      const finished = await inFlight;
      assert.equal(finished.status, 200, `the request in flight finished: ${finished.text}`);
      assert.equal(fingerprint(socket!.getPeerX509Certificate()!.toString()), fingerprint(pki.server.cert), 'on its connection, with the old certificate');
      const again = await new Promise<number>((resolve, reject) =>
        https
          .get({ host: '127.0.0.1', port: svc.port, path: '/v1/keys', agent }, (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          })
          .on('error', reject),
      );
      assert.equal(again, 200, 'the open connection still serves');

      const b = await newConnections(svc, 6, ops, `Bearer ${OPS_TOKEN}`);
      assert.deepEqual(b.fingerprints, new Set([fingerprint(serverB.cert)]), 'new connections get the new certificate');
      assert.deepEqual(b.statuses, new Set([200]), 'every worker knows the ops client');
      assert.deepEqual((await newConnections(svc, 2, app)).statuses, new Set([200]), 'and still the app');
      const refused = await httpsRequest(svc.port, { path: '/v1/keys', ca: pki.ca, client: stranger }).then(
        () => 'answered',
        () => 'refused',
      );
      assert.equal(refused, 'refused', 'the reloaded context still verifies clients against TLS_CLIENT_CA_FILE only');

      // Files that do not load: both kept, one error line per worker and file, no content.
      writeFileSync(clientsFile, `{"clients": [{"name": "${BROKEN_MARKER}"`);
      copyFileSync(app.keyFile, keyFile);
      const errorsBefore = records(svc).filter((r) => r.level === 50).length;
      await hangUp(svc, workers);
      const errors = records(svc)
        .filter((r) => r.level === 50)
        .slice(errorsBefore);
      assert.deepEqual(
        errors.map((r) => r.msg).sort(),
        [
          ...Array(workers).fill('SIGHUP: CLIENTS_FILE: cannot read it as JSON (invalid JSON); kept the previous clients'),
          ...Array(workers).fill(
            'SIGHUP: TLS_KEY_FILE: does not match the certificate in TLS_CERT_FILE (ERR_OSSL_X509_KEY_VALUES_MISMATCH); kept the previous TLS certificate, key and client CA',
          ),
        ].sort(),
      );
      const log = svc.logs().join('\n');
      assert.ok(!log.includes(BROKEN_MARKER), 'the broken file is not quoted');
      for (const l of app.key.split('\n').filter((x) => x && !x.startsWith('-----'))) assert.ok(!log.includes(l.slice(0, 16)), 'no key material');
      const c = await newConnections(svc, 6, ops, `Bearer ${OPS_TOKEN}`);
      assert.deepEqual(c.fingerprints, new Set([fingerprint(serverB.cert)]), 'the last good certificate is still served');
      assert.deepEqual(c.statuses, new Set([200]), 'and the last good clients');
      assert.ok(svc.alive());
    } finally {
      agent.destroy();
      await svc.stop();
    }
  });
}
