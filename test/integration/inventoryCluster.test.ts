/**
 * Issue 18: two service instances (separate processes, each with its default workers) on one
 * PostgreSQL inventory, a real local server (one given ISSUANCE_DB, the other ISSUANCE_DB_FILE). They issue 100 certificates each, concurrently: every
 * one is recorded once, serials are unique, and the listing pages through all of them exactly
 * once. With the database stopped, issuing answers 503 and returns no certificate; after its
 * restart, issuing works again on both.
 */
import assert from 'node:assert/strict';
import { createHash, X509Certificate } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { type HttpResult, type ServiceProcess, startServiceProcess } from '../support/faultService.js';
import { type PostgresServer, startPostgresServer } from '../support/postgresServer.js';
import { createTestToken, type TestToken } from '../support/testToken.js';
import { makeRoot, opensslCsr, signAsRoot, TempDir } from '../unit/pki/openssl.js';

const KEY = 'cluster-ca';
const PER_INSTANCE = 100;
const CONCURRENCY = 4;
const POOL_SIZE = 1;
/** The default WORKERS, one per CPU: the services run with it. */
const WORKERS = availableParallelism();

let pgServer: PostgresServer;
let token: TestToken;
let dir: TempDir;
const services: ServiceProcess[] = [];
let leafCsr: string;
let database: string;

interface Issued {
  readonly serialNumber: string;
  readonly certificatePem: string;
}

const issueBody = () => ({ csrPem: leafCsr, profile: 'tls-server', validityDays: 30 });
const issue = (s: ServiceProcess): Promise<HttpResult> => s.driver.request('POST', `/v1/keys/${KEY}/certificates`, issueBody());

before(async () => {
  const t0 = performance.now();
  pgServer = await startPostgresServer();
  console.log(`# PostgreSQL server: initdb + start in ${Math.round(pgServer.startupMs)} ms`);
  const url = await pgServer.createDatabase('cluster');
  token = await createTestToken([{ name: KEY, spec: 'ECC_NIST_P256' }]);
  dir = await TempDir.create();
  const rootPem = await makeRoot(dir, { name: 'root', alg: 'ec-p384', subject: '/O=Example/CN=Cluster Root', days: 3650 });
  // Both instances (and their workers) start together: their migrations meet on a fresh database.
  // A generous request deadline: 2 cores shared with other tests must not turn a slow answer into a 504.
  // One PostgreSQL connection per worker (ISSUANCE_DB_POOL_SIZE): the first test counts them.
  const env = token.env({ ISSUANCE_DB: url, ISSUANCE_DB_POOL_SIZE: String(POOL_SIZE), KEY_REFRESH_MS: '200', LOG_LEVEL: 'warn', REQUEST_DEADLINE_MS: '20000' });
  database = new URL(url).pathname.slice(1);
  // The second instance reads the URL (and its password) from a file, as a mounted Secret gives it (ISSUANCE_DB_FILE).
  const urlFile = await dir.write('issuance-db-url', `${url}\n`);
  const envB: Record<string, string> = { ...env, ISSUANCE_DB_FILE: urlFile };
  delete envB.ISSUANCE_DB;
  services.push(...(await Promise.all([startServiceProcess(env, { maxSockets: CONCURRENCY }), startServiceProcess(envB, { maxSockets: CONCURRENCY })])));
  const tServices = performance.now() - t0;
  const [a] = services as [ServiceProcess];
  // The intermediate: its CSR from the service, signed by an openssl root, attached on the token.
  const csr = await a.driver.request('POST', `/v1/keys/${KEY}/csr`, { subject: 'CN=Cluster Issuing CA,O=Example', ca: { pathLength: 0 } });
  assert.equal(csr.status, 200, csr.text);
  const intPem = await signAsRoot(dir, (csr.body as { csrPem: string }).csrPem, { out: 'int', days: 365 });
  const put = await a.driver.request('PUT', `/v1/keys/${KEY}/certificate`, { certificatePem: intPem, chainPem: rootPem });
  assert.equal(put.status, 204, put.text);
  leafCsr = await opensslCsr(dir, { name: 'leaf', subject: '/O=Example/CN=leaf.example.com', addext: ['subjectAltName=DNS:leaf.example.com'] });
  // Every worker of both instances sees the certificate (KEY_REFRESH_MS) before the count starts.
  for (const s of services) {
    for (let i = 0; i < 50; i++) {
      const answers = await Promise.all([1, 2, 3, 4].map(() => s.driver.request('GET', `/v1/keys/${KEY}`, undefined, {}, 5000, { newConnection: true })));
      if (answers.every((r) => (r.body as { versions?: { hasCertificate: boolean }[] }).versions?.[0]?.hasCertificate === true)) break;
      await sleep(100);
    }
  }
  console.log(
    `# set-up (PostgreSQL, token, two services, intermediate): ${Math.round(performance.now() - t0)} ms, services ready after ${Math.round(tServices)} ms`,
  );
});

after(async () => {
  await Promise.allSettled(services.map((s) => s.stop()));
  pgServer?.dispose();
  token?.cleanup();
  await dir?.remove();
});

async function issueMany(s: ServiceProcess, n: number): Promise<Issued[]> {
  const out: Issued[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < n) {
        next++;
        const r = await issue(s);
        assert.equal(r.status, 201, r.text);
        out.push(r.body as Issued);
      }
    }),
  );
  return out;
}

async function listAll(s: ServiceProcess, limit: number): Promise<{ serials: string[]; pages: number; sha256: Map<string, string> }> {
  const serials: string[] = [];
  const sha256 = new Map<string, string>();
  let cursor: string | undefined;
  let pages = 0;
  do {
    const r = await s.driver.request('GET', `/v1/keys/${KEY}/certificates?limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    assert.equal(r.status, 200, r.text);
    const body = r.body as { certificates: { serialNumber: string; sha256: string }[]; nextCursor?: string };
    for (const c of body.certificates) {
      serials.push(c.serialNumber);
      sha256.set(c.serialNumber, c.sha256);
    }
    cursor = body.nextCursor;
    pages++;
  } while (cursor !== undefined && pages < 1000);
  return { serials, pages, sha256 };
}

const derSha256 = (pem: string): string => createHash('sha256').update(new X509Certificate(pem).raw).digest('hex');

test('two instances on one PostgreSQL database: 2 x 100 concurrent issues, all recorded once, unique serials, listed exactly once', {
  timeout: 300_000,
}, async () => {
  const [a, b] = services as [ServiceProcess, ServiceProcess];
  const t0 = performance.now();
  // The services' connections to the inventory's database, counted by the server while they issue.
  const watcher = new pg.Client({ connectionString: pgServer.adminUrl });
  await watcher.connect();
  let issuing = true;
  let peak = 0;
  const watching = (async () => {
    while (issuing) {
      const r = await watcher.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND application_name = 'hsm-signer'", [
        database,
      ]);
      peak = Math.max(peak, r.rows[0]?.n ?? 0);
      await sleep(20);
    }
  })();
  const [fromA, fromB] = await Promise.all([issueMany(a, PER_INSTANCE), issueMany(b, PER_INSTANCE)]).finally(() => {
    issuing = false;
  });
  await watching;
  await watcher.end();
  console.log(`# issued ${fromA.length} + ${fromB.length} certificates in ${Math.round(performance.now() - t0)} ms`);
  console.log(`# connections to the inventory at most ${peak} (2 instances x ${WORKERS} workers x ISSUANCE_DB_POOL_SIZE ${POOL_SIZE})`);
  assert.ok(peak > 0 && peak <= 2 * WORKERS * POOL_SIZE, `at most ${2 * WORKERS * POOL_SIZE} connections, saw ${peak}`);
  const issued = [...fromA, ...fromB];
  assert.equal(issued.length, 2 * PER_INSTANCE);
  const serials = new Set(issued.map((c) => c.serialNumber));
  assert.equal(serials.size, issued.length, 'serials are unique');

  // Listed through either instance, a page at a time: each certificate exactly once, with its fingerprint.
  for (const [s, limit] of [
    [a, 7],
    [b, 50],
  ] as const) {
    const listed = await listAll(s, limit);
    console.log(`# listed ${listed.serials.length} certificates in ${listed.pages} pages of up to ${limit}`);
    assert.equal(listed.serials.length, issued.length, 'no certificate listed twice or missing');
    assert.deepEqual(new Set(listed.serials), serials);
    for (const c of issued) assert.equal(listed.sha256.get(c.serialNumber), derSha256(c.certificatePem));
  }
});

test('PostgreSQL stopped: issuing answers 503 INVENTORY_UNAVAILABLE with no certificate; restarted: issuing works again on both instances', {
  timeout: 120_000,
}, async () => {
  const before = (await listAll(services[0] as ServiceProcess, 500)).serials.length;
  pgServer.stop();
  try {
    for (const s of services) {
      for (let i = 0; i < 3; i++) {
        const t0 = performance.now();
        const r = await issue(s);
        const ms = performance.now() - t0;
        console.log(`# database down: issue -> ${r.status} in ${Math.round(ms)} ms: ${r.text.slice(0, 200)}`);
        assert.equal(r.status, 503, r.text);
        assert.equal((r.body as { error?: { code?: string } }).error?.code, 'INVENTORY_UNAVAILABLE', r.text);
        assert.ok(!r.text.includes('BEGIN CERTIFICATE'), 'no certificate is returned');
        assert.ok(!r.text.includes(pgServer.password) && !r.text.includes(pgServer.passwordInUrl), 'the password is not in the answer');
      }
    }
  } finally {
    pgServer.start();
  }
  // The pools recover: the first request after the restart may still meet a dropped connection.
  for (const s of services) {
    let r = await issue(s);
    for (let i = 0; i < 50 && r.status !== 201; i++) {
      await sleep(200);
      r = await issue(s);
    }
    assert.equal(r.status, 201, r.text);
  }
  const listed = await listAll(services[1] as ServiceProcess, 500);
  assert.equal(listed.serials.length, before + 2, 'nothing was recorded during the outage; one certificate per instance after it');
  // The outage is in the operator's log (one error line per worker at most every 5 s), without the password.
  for (const s of services) {
    const logs = s.logs().join('\n');
    assert.match(logs, /certificate inventory record failed: PostgreSQL inventory: record failed/);
    assert.ok(!logs.includes(pgServer.password) && !logs.includes(pgServer.passwordInUrl), 'the password is not in the logs');
  }
});
