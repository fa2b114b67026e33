/**
 * The configuration every user runs first: the service started exactly as `npm start` and
 * `npm run serve` start it (from the sources), with no WORKERS, HSM_SESSIONS or HSM_THREADS set: one worker per CPU
 * (two on these machines), 16 sessions and 4 HSM threads each. Each worker has its own PKCS#11
 * state, so everything that is per worker (metrics, readiness, the key cache and its rescans) is
 * checked on both, reaching each through the cluster's round robin of new connections and
 * telling them apart by the debug log line each request leaves (pid + request id).
 */
import { createPublicKey, createVerify, randomUUID } from 'node:crypto';
import { availableParallelism, tmpdir } from 'node:os';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { admin } from '../support/adminCli.js';
import { eventually, startServiceProcess, type HttpResult, type ServiceProcess } from '../support/faultService.js';
import { createTestToken, type TestToken } from '../support/testToken.js';

const CPUS = availableParallelism();
/** The default is one worker per CPU; on a one-CPU machine the test still needs two to mean anything. */
const workersEnv: Record<string, string> = CPUS >= 2 ? {} : { WORKERS: '2' };
const EXPECTED_WORKERS = Math.max(CPUS, 2);

/** One request on a new connection, so the cluster's round robin hands it to the next worker. */
function fresh(svc: ServiceProcess, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<HttpResult> {
  return svc.driver.request(method, path, body, headers, 10_000, { newConnection: true });
}

/** A log line as JSON; `npm start` also writes plain lines (the demo keys it created). */
function parseLine(line: string): { requestId?: string; pid?: number; msg?: string; path?: string } {
  try {
    return JSON.parse(line) as { requestId?: string; pid?: number; msg?: string; path?: string };
  } catch {
    return {};
  }
}

/** The pid of the worker that served `requestId`, from its debug request line. */
function servedBy(svc: ServiceProcess, requestId: string): number | undefined {
  for (const line of svc.logs()) {
    if (!line.includes(requestId)) continue;
    const l = parseLine(line);
    if (l.msg === 'request' && l.requestId === requestId) return l.pid;
  }
  return undefined;
}

/**
 * Sends `send` on new connections until every worker has given an answer that `accept` takes
 * (default: any), or 30 s pass (a worker may still be starting); returns each worker's last answer by pid.
 */
async function onEveryWorker(
  svc: ServiceProcess,
  send: (requestId: string) => Promise<HttpResult>,
  accept: (r: HttpResult) => boolean = () => true,
): Promise<Map<number, HttpResult>> {
  const answers = new Map<number, HttpResult>();
  const done = (): number => [...answers.values()].filter(accept).length;
  const end = Date.now() + 30_000;
  while (Date.now() < end && (answers.size < EXPECTED_WORKERS || done() < EXPECTED_WORKERS)) {
    const id = `dc-${randomUUID()}`;
    const r = await send(id);
    // The request line is written when the response is finished: give the log a moment.
    let pid: number | undefined;
    for (let j = 0; j < 20 && pid === undefined; j++) {
      pid = servedBy(svc, id);
      if (pid === undefined) await sleep(10);
    }
    if (pid !== undefined && !(answers.has(pid) && accept(answers.get(pid)!))) answers.set(pid, r);
    if (!accept(r)) await sleep(100);
  }
  assert.equal(answers.size, EXPECTED_WORKERS, `reached ${answers.size} of ${EXPECTED_WORKERS} workers`);
  return answers;
}

function sample(text: string, name: string, labels = ''): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels} `));
  return line === undefined ? NaN : Number(line.slice(line.lastIndexOf(' ') + 1));
}

const SIGN_ROUTE = '{route="/v1/keys/:name/sign"}';
const SIGN_200 = '{method="POST",route="/v1/keys/:name/sign",status="200"}';
const message = Buffer.from('default configuration').toString('base64');
const signBody = (extra: Record<string, unknown> = {}) => ({ algorithm: 'ECDSA_SHA_256', message, ...extra });

function verifies(publicKeyPem: string, signatureB64: string): boolean {
  return createVerify('sha256').update(Buffer.from(message, 'base64')).verify(createPublicKey(publicKeyPem), Buffer.from(signatureB64, 'base64'));
}

/** Worker pids of a running cluster: the answering pids seen through /readyz. */
async function workerPids(svc: ServiceProcess): Promise<number[]> {
  const answers = await onEveryWorker(svc, (id) => fresh(svc, 'GET', '/readyz', undefined, { 'x-request-id': id }));
  return [...answers.keys()];
}

test('npm start, as a new user runs it: two workers, and one /metrics scrape counts both', { timeout: 120_000 }, async (t) => {
  const devDir = mkdtempSync(join(tmpdir(), 'hsm-signer-npm-start-'));
  let svc: ServiceProcess | undefined;
  try {
    // Exactly `npm start`'s environment: only where its token lives and the port differ.
    svc = await startServiceProcess(
      { PATH: process.env.PATH ?? '', HSM_DEV_DIR: devDir, LOG_LEVEL: 'debug', ...workersEnv },
      { entry: 'start', readyTimeoutMs: 90_000 },
    );
    const s = svc;
    // Ready means one worker answered; the others may still be starting (each logs in and reads the keys).
    assert.equal((await workerPids(s)).length, EXPECTED_WORKERS);
    const signsPerWorker = new Map<number, number>();
    const N = 10 * EXPECTED_WORKERS;
    for (let i = 0; i < N; i++) {
      const id = `start-${i}-${randomUUID()}`;
      const r = await fresh(s, 'POST', '/v1/keys/demo-ec-p256/sign', signBody(), { 'x-request-id': id });
      assert.equal(r.status, 200, r.text);
    }
    await sleep(100);
    for (const line of s.logs()) {
      const l = parseLine(line);
      if (l.msg === 'request' && l.path === '/v1/keys/demo-ec-p256/sign') signsPerWorker.set(l.pid!, (signsPerWorker.get(l.pid!) ?? 0) + 1);
    }
    t.diagnostic(`signs per worker (pid: count): ${[...signsPerWorker].map(([p, c]) => `${p}: ${c}`).join(', ')}`);
    assert.equal(signsPerWorker.size, EXPECTED_WORKERS, 'every worker signed');
    const scrape = await fresh(s, 'GET', '/metrics');
    t.diagnostic(`GET /metrics: ${scrape.status} in ${(scrape.end - scrape.start).toFixed(1)} ms`);
    assert.equal(scrape.status, 200, scrape.text);
    assert.equal(sample(scrape.text, 'hsm_signer_http_requests_total', SIGN_200), N, "one scrape counts both workers' signs");
    assert.equal(sample(scrape.text, 'hsm_signer_metrics_workers_answered'), EXPECTED_WORKERS);
  } finally {
    await svc?.stop();
    rmSync(devDir, { recursive: true, force: true });
  }
});

let token: TestToken;
let svc: ServiceProcess;

before(async () => {
  token = await createTestToken([{ name: 'dc-ec', spec: 'ECC_NIST_P256' }]);
  // `npm run serve` with only the token's settings: default workers, sessions and threads.
  svc = await startServiceProcess(token.env({ LOG_LEVEL: 'debug', ...workersEnv }));
  await workerPids(svc);
});

after(async () => {
  await svc?.stop();
  token?.cleanup();
});

test('readiness: every worker is ready on its own, with the default pool and threads', async () => {
  const answers = await onEveryWorker(svc, (id) => fresh(svc, 'GET', '/readyz', undefined, { 'x-request-id': id }));
  const ids = new Set<number>();
  for (const [pid, r] of answers) {
    assert.equal(r.status, 200, r.text);
    const b = r.body as { worker: { id: number; pid: number }; sessions: { max: number; idle: number }; threads: { configured: number; running: number } };
    assert.equal(b.worker.pid, pid, 'readyz names the worker that answered');
    ids.add(b.worker.id);
    assert.equal(b.sessions.max, 16);
    assert.deepEqual(b.threads, { configured: 4, running: 4 });
  }
  assert.equal(ids.size, EXPECTED_WORKERS);
});

test('metrics: counters and histograms summed over the workers, gauges merged as documented', { timeout: 60_000 }, async (t) => {
  const before = (await fresh(svc, 'GET', '/metrics')).text;
  const N = 8 * EXPECTED_WORKERS;
  const pids = new Set<number>();
  for (let i = 0; i < N; i++) {
    const id = `m-${i}-${randomUUID()}`;
    const r = await fresh(svc, 'POST', '/v1/keys/dc-ec/sign', signBody(), { 'x-request-id': id });
    assert.equal(r.status, 200, r.text);
    await sleep(5);
    const pid = servedBy(svc, id);
    if (pid !== undefined) pids.add(pid);
  }
  assert.equal(pids.size, EXPECTED_WORKERS, 'the signs were spread over every worker');
  const scrape = await fresh(svc, 'GET', '/metrics');
  assert.equal(scrape.status, 200);
  const text = scrape.text;
  const delta = (name: string, labels: string): number => sample(text, name, labels) - (sample(before, name, labels) || 0);
  assert.equal(delta('hsm_signer_http_requests_total', SIGN_200), N, 'request counters summed');
  assert.equal(delta('hsm_signer_http_request_duration_seconds_count', SIGN_ROUTE), N, 'histogram counts summed');
  // Bucket by bucket: each cumulative bucket is the sum of the workers' (so never below the one before, and +Inf is the count).
  const buckets = text
    .split('\n')
    .filter((l) => l.startsWith('hsm_signer_http_request_duration_seconds_bucket{') && l.includes('route="/v1/keys/:name/sign"'))
    .map((l) => Number(l.slice(l.lastIndexOf(' ') + 1)));
  assert.ok(buckets.length > 5);
  for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i]! >= buckets[i - 1]!, `bucket ${i} is cumulative`);
  assert.equal(buckets.at(-1), sample(text, 'hsm_signer_http_request_duration_seconds_count', SIGN_ROUTE), '+Inf bucket = count');
  // Gauges: sessions and readiness summed, the key count the largest (every worker caches the same keys).
  assert.equal(sample(text, 'hsm_signer_hsm_sessions_idle') + sample(text, 'hsm_signer_hsm_sessions_in_use'), 16 * EXPECTED_WORKERS);
  assert.equal(sample(text, 'hsm_signer_hsm_ready'), EXPECTED_WORKERS);
  assert.equal(sample(text, 'hsm_signer_keys'), 1, 'the key count is the largest, not the sum');
  assert.equal(sample(text, 'hsm_signer_hsm_threads'), 4 * EXPECTED_WORKERS);
  assert.equal(sample(text, 'hsm_signer_metrics_workers_expected'), EXPECTED_WORKERS);
  assert.equal(sample(text, 'hsm_signer_metrics_workers_answered'), EXPECTED_WORKERS);
  t.diagnostic(`scrape of ${EXPECTED_WORKERS} workers: ${(scrape.end - scrape.start).toFixed(1)} ms`);
});

test('key rescans: a key created, then rotated, by the admin CLI is served by every worker', { timeout: 60_000 }, async () => {
  await admin(token, 'keys', 'create', '--name', 'dc-new', '--spec', 'ECC_NIST_P256');
  // A worker that rescanned less than a second ago answers 404 for a key it has not seen (the
  // rescan is throttled, as documented): each worker must serve it once its next rescan may run.
  const ok = (r: HttpResult): boolean => r.status === 200;
  const created = await onEveryWorker(svc, (id) => fresh(svc, 'POST', '/v1/keys/dc-new/sign', signBody(), { 'x-request-id': id }), ok);
  const info = await fresh(svc, 'GET', '/v1/keys/dc-new');
  const v1 = (info.body as { versions: { version: number; publicKeyPem: string }[] }).versions.find((v) => v.version === 1)!;
  for (const [pid, r] of created) {
    assert.equal(r.status, 200, `worker ${pid}: ${r.text}`);
    assert.ok(verifies(v1.publicKeyPem, (r.body as { signature: string }).signature), `worker ${pid} signed with version 1`);
  }
  await admin(token, 'keys', 'rotate', '--name', 'dc-new');
  const rotated = await onEveryWorker(svc, (id) => fresh(svc, 'POST', '/v1/keys/dc-new/sign', signBody({ keyVersion: 2 }), { 'x-request-id': id }), ok);
  // Every worker has served version 2, so every worker's cache lists it.
  const info2 = await fresh(svc, 'GET', '/v1/keys/dc-new');
  const v2 = (info2.body as { versions: { version: number; publicKeyPem: string }[] }).versions.find((v) => v.version === 2);
  assert.ok(v2, info2.text);
  for (const [pid, r] of rotated) {
    assert.equal(r.status, 200, `worker ${pid}: ${r.text}`);
    assert.equal((r.body as { keyVersion: number }).keyVersion, 2);
    assert.ok(verifies(v2.publicKeyPem, (r.body as { signature: string }).signature), `worker ${pid} signed with version 2`);
  }
});

test('admin lock: two admin commands at once while both workers serve; both keys reach every worker', { timeout: 60_000 }, async () => {
  let signing = true;
  const failures: string[] = [];
  const load = (async () => {
    while (signing) {
      const r = await fresh(svc, 'POST', '/v1/keys/dc-ec/sign', signBody());
      if (r.status !== 200) failures.push(`${r.status} ${r.text}`);
    }
  })();
  try {
    await Promise.all([
      admin(token, 'keys', 'create', '--name', 'dc-lock-a', '--spec', 'ECC_NIST_P256'),
      admin(token, 'keys', 'create', '--name', 'dc-lock-b', '--spec', 'ECC_NIST_P384'),
    ]);
  } finally {
    signing = false;
    await load;
  }
  assert.deepEqual(failures.slice(0, 3), [], 'signing went on while the token was written');
  for (const [name, algorithm] of [
    ['dc-lock-a', 'ECDSA_SHA_256'],
    ['dc-lock-b', 'ECDSA_SHA_384'],
  ] as const) {
    const answers = await onEveryWorker(
      svc,
      (id) => fresh(svc, 'POST', `/v1/keys/${name}/sign`, { algorithm, message }, { 'x-request-id': id }),
      (r) => r.status === 200,
    );
    for (const [pid, r] of answers) assert.equal(r.status, 200, `${name} on worker ${pid}: ${r.text}`);
  }
});

test('a scrape while a worker restarts answers at once with the workers that answered, and says how many', { timeout: 60_000 }, async (t) => {
  const pids = await workerPids(svc);
  const victim = pids[0]!;
  process.kill(victim, 'SIGKILL');
  // Until the primary has reaped it, the cluster's round robin may still hand it a new connection,
  // which is then never answered (Node keeps the handle): wait for that, as the crash test will.
  const reaped = await eventually(
    async () => {
      try {
        process.kill(victim, 0);
        return 'not reaped yet';
      } catch {
        return undefined;
      }
    },
    5000,
    5,
  );
  assert.equal(reaped, undefined);
  const scrapes: { status: number; ms: number; answered: number; expected: number; unanswered: string[] }[] = [];
  const end = Date.now() + 3000;
  while (Date.now() < end) {
    const r = await fresh(svc, 'GET', '/metrics');
    scrapes.push({
      status: r.status,
      ms: r.end - r.start,
      answered: sample(r.text, 'hsm_signer_metrics_workers_answered'),
      expected: sample(r.text, 'hsm_signer_metrics_workers_expected'),
      unanswered: r.text.split('\n').filter((l) => l.startsWith('hsm_signer_metrics_worker_unanswered{')),
    });
    await sleep(100);
  }
  t.diagnostic(
    `scrapes after SIGKILL of worker ${victim}: ${scrapes.map((s) => `${s.status}/${s.ms.toFixed(0)}ms/${s.answered}of${s.expected}${s.unanswered.length ? `(${s.unanswered.length} unanswered)` : ''}`).join(' ')}`,
  );
  assert.deepEqual([...new Set(scrapes.map((s) => s.status))], [200], 'never a 500');
  // 500 ms is the primary's wait for a worker; the rest is margin for two shared cores.
  assert.ok(Math.max(...scrapes.map((s) => s.ms)) < 1000, 'every scrape answered within 1 s');
  assert.ok(
    scrapes.some((s) => s.answered < s.expected),
    'a scrape said a worker was missing',
  );
  // The cluster replaces the worker, and it serves.
  const back = await eventually(
    async () => {
      const now: (number | string)[] = await workerPids(svc).catch((e: unknown) => [String(e)]);
      if (now.length !== EXPECTED_WORKERS || now.includes(victim)) return `workers ${now.join(',')}`;
      const m = await fresh(svc, 'GET', '/metrics');
      return sample(m.text, 'hsm_signer_metrics_workers_answered') === EXPECTED_WORKERS ? undefined : 'not every worker in the scrape';
    },
    30_000,
    250,
  );
  assert.equal(back, undefined, back);
});

test('shutdown: SIGTERM stops the primary and every worker, exit 0', { timeout: 30_000 }, async () => {
  const pids = await workerPids(svc);
  const exited = new Promise<number | null>((resolve) => {
    const poll = setInterval(() => {
      if (!svc.alive()) {
        clearInterval(poll);
        resolve(svc.exitCode() ?? null);
      }
    }, 50);
  });
  process.kill(svc.pid, 'SIGTERM');
  const code = await Promise.race([exited, sleep(15_000).then(() => 'timeout' as const)]);
  assert.equal(code, 0, 'the primary exits 0');
  const left = await eventually(async () => {
    const alive = pids.filter((p) => {
      try {
        process.kill(p, 0);
        return true;
      } catch {
        return false;
      }
    });
    return alive.length ? `workers still running: ${alive.join(', ')}` : undefined;
  }, 5000);
  assert.equal(left, undefined, left);
});
