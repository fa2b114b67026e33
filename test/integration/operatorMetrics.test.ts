/**
 * The metrics an operator alerts on, in a real two-worker service (`npm run serve` from the
 * sources) on a real SoftHSMv2 token: the HSM call histogram, shed requests, module
 * initializations, build info and prom-client's process metrics, each merged by the primary as the
 * docs/METRICS.md says. Then the Prometheus rules (checked by promtool) and the Grafana dashboard: every
 * metric they name must be in a real scrape.
 */
import { spawnSync } from 'node:child_process';
import { createPublicKey, createVerify, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { parse } from 'yaml';
import { clusterWorkerPids, cpuSecondsOf, rssOf } from '../../testkit/processProbe.js';
import { REPO_ROOT } from '../../testkit/repoRoot.js';
import { eventually, startServiceProcess, type HttpResult, type ServiceProcess } from '../support/faultService.js';
import { createTestToken, type TestToken } from '../support/testToken.js';

const WORKERS = 2;
const COMMIT = 'test-commit-0123abc';
const RULES = join(REPO_ROOT, 'deploy/prometheus/alerts.yml');
const DASHBOARD = join(REPO_ROOT, 'deploy/grafana/hsm-signer.json');

let token: TestToken;
let svc: ServiceProcess;

/** The value of the sample `name{labels}` (labels exactly as prom-client prints them), NaN if absent. */
function sample(text: string, name: string, labels = ''): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels} `));
  return line === undefined ? NaN : Number(line.slice(line.lastIndexOf(' ') + 1));
}

/** One request on a new connection: the cluster hands each new connection to the next worker. */
function fresh(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<HttpResult> {
  return svc.driver.request(method, path, body, headers, 10_000, { newConnection: true });
}

const scrape = async (): Promise<string> => {
  const r = await fresh('GET', '/metrics');
  assert.equal(r.status, 200, r.text);
  return r.text;
};

/** The pid of the worker that served `requestId`, from its debug request line. */
async function servedBy(requestId: string): Promise<number | undefined> {
  for (let i = 0; i < 50; i++) {
    for (const line of svc.logs()) {
      if (!line.includes(requestId)) continue;
      const l = JSON.parse(line) as { msg?: string; requestId?: string; pid?: number };
      if (l.msg === 'request' && l.requestId === requestId) return l.pid;
    }
    await sleep(10);
  }
  return undefined;
}

const message = Buffer.from('operator metrics').toString('base64');

before(async () => {
  token = await createTestToken([
    { name: 'om-ec', spec: 'ECC_NIST_P256' },
    { name: 'om-rsa', spec: 'RSA_2048' },
  ]);
  // Two sessions per worker and no queue: concurrent signs beyond them are shed with OVERLOADED at once.
  svc = await startServiceProcess(
    token.env({ LOG_LEVEL: 'debug', WORKERS: String(WORKERS), HSM_SESSIONS: '2', HSM_THREADS: '2', HSM_MAX_WAITING: '0', GIT_COMMIT: COMMIT }),
  );
  // Ready is one worker; wait for both in the scrape, logged in.
  const complaint = await eventually(async () => {
    const text = await scrape();
    return sample(text, 'hsm_signer_metrics_workers_answered') === WORKERS && sample(text, 'hsm_signer_hsm_ready') === WORKERS ? undefined : text;
  }, 30_000);
  assert.equal(complaint, undefined, 'both workers ready in the scrape');
});

after(async () => {
  await svc?.stop();
  token?.cleanup();
});

test('two workers: the HSM call histogram is summed bucket by bucket and counts every sign exactly once', { timeout: 60_000 }, async (t) => {
  const before = await scrape();
  const sent = { ecdsa: 0, pss: 0 };
  const perWorker = new Map<number, number>();
  const info = (await fresh('GET', '/v1/keys/om-ec')).body as { versions: { publicKeyPem: string }[] };
  const ecKey = createPublicKey(info.versions[0]!.publicKeyPem);
  for (let i = 0; i < 12; i++) {
    const pss = i % 3 === 0;
    const id = `om-${i}-${randomUUID()}`;
    const r = await fresh(
      'POST',
      `/v1/keys/${pss ? 'om-rsa' : 'om-ec'}/sign`,
      { algorithm: pss ? 'RSASSA_PSS_SHA_256' : 'ECDSA_SHA_256', message },
      { 'x-request-id': id },
    );
    assert.equal(r.status, 200, r.text);
    if (!pss) {
      const sig = Buffer.from((r.body as { signature: string }).signature, 'base64');
      assert.ok(createVerify('sha256').update(Buffer.from(message, 'base64')).verify(ecKey, sig), 'a real ECDSA signature');
    }
    sent[pss ? 'pss' : 'ecdsa']++;
    const pid = await servedBy(id);
    assert.ok(pid !== undefined, 'the request left its log line');
    perWorker.set(pid, (perWorker.get(pid) ?? 0) + 1);
  }
  t.diagnostic(`signs per worker (pid: count): ${[...perWorker].map(([p, c]) => `${p}: ${c}`).join(', ')}`);
  assert.equal(perWorker.size, WORKERS, 'both workers signed');
  const text = await scrape();
  const delta = (name: string, labels: string): number => sample(text, name, labels) - (sample(before, name, labels) || 0);
  for (const [mechanism, n] of [
    ['CKM_ECDSA', sent.ecdsa],
    ['CKM_RSA_PKCS_PSS', sent.pss],
  ] as const) {
    const labels = `operation="sign",mechanism="${mechanism}",result="ok"`;
    assert.equal(delta('hsm_signer_hsm_call_duration_seconds_count', `{${labels}}`), n, `${mechanism}: the count is every sign, from both workers`);
    const buckets = text
      .split('\n')
      .filter((l) => l.startsWith('hsm_signer_hsm_call_duration_seconds_bucket{') && l.includes(labels))
      .map((l) => ({ le: /le="([^"]+)"/.exec(l)?.[1], value: Number(l.slice(l.lastIndexOf(' ') + 1)) }));
    assert.equal(buckets.length, 16, '15 bounds and +Inf');
    for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i]!.value >= buckets[i - 1]!.value, `${mechanism}: bucket le=${buckets[i]!.le} is cumulative`);
    assert.equal(buckets.at(-1)?.le, '+Inf');
    assert.equal(buckets.at(-1)?.value, sample(text, 'hsm_signer_hsm_call_duration_seconds_count', `{${labels}}`), '+Inf bucket = count');
    assert.ok(delta('hsm_signer_hsm_call_duration_seconds_sum', `{${labels}}`) > 0);
    t.diagnostic(`${mechanism}: ${n} signs; buckets ${buckets.map((b) => `${b.le}:${b.value}`).join(' ')}`);
  }
  // The HTTP duration histogram over the same signs: the count merged exactly too.
  const signRoute = '{route="/v1/keys/:name/sign"}';
  assert.equal(delta('hsm_signer_http_request_duration_seconds_count', signRoute), sent.ecdsa + sent.pss);
  // Each worker connected (initialized the module and logged in) once: summed over the workers.
  assert.equal(sample(text, 'hsm_signer_hsm_module_initializations_total', '{reason="start"}'), WORKERS);
  assert.equal(sample(text, 'hsm_signer_hsm_module_initializations_total', '{reason="recovery"}'), 0);
  assert.ok(sample(text, 'hsm_signer_hsm_call_duration_seconds_count', '{operation="connect",mechanism="none",result="ok"}') >= WORKERS);
  assert.ok(sample(text, 'hsm_signer_hsm_call_duration_seconds_count', '{operation="find",mechanism="none",result="ok"}') >= WORKERS, 'key scans');
});

test('two workers: concurrent signs beyond the sessions are shed, and every OVERLOADED is counted once', { timeout: 60_000 }, async (t) => {
  const before = await scrape();
  const statuses = new Map<string, number>();
  // 8 rounds of 20 concurrent signs over new connections (10 per worker, 2 sessions each, no queue).
  for (let round = 0; round < 8; round++) {
    const results = await Promise.all(Array.from({ length: 20 }, () => fresh('POST', '/v1/keys/om-rsa/sign', { algorithm: 'RSASSA_PSS_SHA_256', message })));
    for (const r of results) {
      const key = r.status === 200 ? '200' : `${r.status} ${(r.body as { error?: { code?: string } }).error?.code}`;
      statuses.set(key, (statuses.get(key) ?? 0) + 1);
    }
  }
  t.diagnostic(`answers: ${[...statuses].map(([k, n]) => `${k}: ${n}`).join(', ')}`);
  const overloaded = statuses.get('503 OVERLOADED') ?? 0;
  assert.ok(overloaded > 0, 'some signs were shed');
  assert.equal([...statuses.keys()].filter((k) => k !== '200' && k !== '503 OVERLOADED').length, 0, 'only 200 and OVERLOADED');
  const text = await scrape();
  const delta = (name: string, labels: string): number => sample(text, name, labels) - (sample(before, name, labels) || 0);
  assert.equal(delta('hsm_signer_requests_shed_total', '{reason="overloaded"}'), overloaded, 'shed counted once per OVERLOADED, over both workers');
  assert.equal(delta('hsm_signer_requests_shed_total', '{reason="client_limit"}'), 0);
  assert.equal(delta('hsm_signer_http_requests_total', '{method="POST",route="/v1/keys/:name/sign",status="503"}'), overloaded);
});

test('two workers: build info is one series, process metrics are merged as prom-client sets them', { timeout: 60_000 }, async (t) => {
  const workers = clusterWorkerPids(svc.pid);
  assert.equal(workers.length, WORKERS);
  const cpuNow = (): number => workers.reduce((s, p) => s + (cpuSecondsOf(p) ?? NaN), 0);
  // process_cpu_seconds_total counts from when the metrics started, so compare its increase between two
  // scrapes with the increase of both workers' /proc figures, read around each scrape (ticks are 10 ms).
  const b1 = cpuNow();
  const first = await scrape();
  const a1 = cpuNow();
  for (let i = 0; i < 100; i++) assert.equal((await fresh('POST', '/v1/keys/om-rsa/sign', { algorithm: 'RSASSA_PSS_SHA_256', message })).status, 200);
  const rssBefore = workers.map((p) => rssOf(p) ?? NaN);
  const b2 = cpuNow();
  const text = await scrape();
  const a2 = cpuNow();
  const rssAfter = workers.map((p) => rssOf(p) ?? NaN);
  const cpu = sample(text, 'process_cpu_seconds_total') - sample(first, 'process_cpu_seconds_total');
  assert.ok(cpu >= b2 - a1 - 0.05 && cpu <= a2 - b1 + 0.05, `process_cpu_seconds_total rose ${cpu} s: the workers' sum rose ${b2 - a1}..${a2 - b1} s`);
  t.diagnostic(
    `CPU between two scrapes: process_cpu_seconds_total +${cpu.toFixed(3)} s, the workers' /proc +${(b2 - a1).toFixed(2)}..${(a2 - b1).toFixed(2)} s`,
  );
  const module = 'libsofthsm2.so';
  assert.equal(
    sample(
      text,
      'hsm_signer_build_info',
      `{version="${JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')).version}",commit="${COMMIT}",node="${process.version}",module="${module}"}`,
    ),
    1,
    `build info merged by max:\n${text
      .split('\n')
      .filter((l) => l.startsWith('hsm_signer_build_info'))
      .join('\n')}`,
  );
  // RSS: summed, so near the sum of both workers' and well above either one's.
  const rss = sample(text, 'process_resident_memory_bytes');
  const sum = (a: number[]): number => a.reduce((s, x) => s + x, 0);
  assert.ok(
    rss > 0.8 * Math.min(sum(rssBefore), sum(rssAfter)) && rss < 1.2 * Math.max(sum(rssBefore), sum(rssAfter)),
    `RSS ${rss} vs workers' ${rssBefore} / ${rssAfter}`,
  );
  assert.ok(rss > 1.3 * Math.max(...rssBefore, ...rssAfter), 'RSS is summed, not one worker');
  t.diagnostic(`process_resident_memory_bytes ${rss}; the workers' VmRSS ${rssAfter.join(' + ')}`);
  // Heap summed, event-loop lag averaged (its min and max taken), the start time omitted, the Node version line one series.
  assert.ok(sample(text, 'nodejs_heap_size_used_bytes') > 0);
  assert.ok(sample(text, 'nodejs_eventloop_lag_seconds') >= 0);
  assert.ok(sample(text, 'nodejs_eventloop_lag_max_seconds') >= sample(text, 'nodejs_eventloop_lag_min_seconds'));
  assert.ok(!text.includes('\nprocess_start_time_seconds '), 'a start time cannot be merged: omitted');
  assert.equal(text.split('\n').filter((l) => l.startsWith('nodejs_version_info{')).length, 1);
});

/** Metric names in PromQL expressions: the service's and the process metrics (recording rules, with a colon, are not metrics). */
function metricNames(exprs: readonly string[]): Set<string> {
  const names = new Set<string>();
  for (const e of exprs) for (const m of e.matchAll(/(?<![\w:])((?:hsm_signer|process|nodejs)_[A-Za-z0-9_]+)(?![\w:(])/g)) names.add(m[1]!);
  return names;
}

/** The names not in the scrape: a histogram's _bucket, _sum and _count belong to its family. */
function missingFrom(text: string, names: Iterable<string>): string[] {
  const types = new Map([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1]!, m[2]!]));
  return [...names].filter((n) => {
    if (types.has(n)) return false;
    const family = n.replace(/_(bucket|sum|count)$/, '');
    return types.get(family) !== 'histogram';
  });
}

test('deploy/: promtool accepts the rules, and every metric the rules and the dashboard name is in a real scrape', async (t) => {
  const check = spawnSync('promtool', ['check', 'rules', RULES], { encoding: 'utf8' });
  assert.equal(check.error, undefined, 'promtool runs (Debian package prometheus)');
  t.diagnostic(`promtool check rules: ${(check.stdout + check.stderr).trim().replace(/\n/g, ' | ')}`);
  assert.equal(check.status, 0, check.stdout + check.stderr);
  assert.match(check.stdout, /SUCCESS: \d+ rules found/);
  // The alerts fire on the series they are about and stay quiet on a healthy service (promtool's rule unit tests).
  const unit = spawnSync('promtool', ['test', 'rules', join(REPO_ROOT, 'deploy/prometheus/alerts.test.yml')], { encoding: 'utf8' });
  t.diagnostic(`promtool test rules: ${(unit.stdout + unit.stderr).trim().replace(/\n/g, ' | ')}`);
  assert.equal(unit.status, 0, unit.stdout + unit.stderr);

  const text = await scrape();
  // The check itself: a misspelled name is caught, a histogram's series are not.
  assert.deepEqual(missingFrom(text, ['hsm_signer_http_request_duration_seconds_bucket', 'hsm_signer_hsm_call_duraton_seconds_count']), [
    'hsm_signer_hsm_call_duraton_seconds_count',
  ]);
  const rules = parse(readFileSync(RULES, 'utf8')) as { groups: { rules: { expr: string }[] }[] };
  const ruleExprs = rules.groups.flatMap((g) => g.rules.map((r) => r.expr));
  const fromRules = metricNames(ruleExprs);
  t.diagnostic(`rules name ${fromRules.size} metrics: ${[...fromRules].sort().join(', ')}`);
  assert.ok(fromRules.size >= 8);
  assert.deepEqual(missingFrom(text, fromRules), [], 'every metric in alerts.yml is in the scrape');

  const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as { panels: { title: string; targets?: { expr: string }[] }[] };
  const dashExprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((x) => x.expr));
  const fromDashboard = metricNames(dashExprs);
  t.diagnostic(`dashboard: ${dashboard.panels.length} panels name ${fromDashboard.size} metrics: ${[...fromDashboard].sort().join(', ')}`);
  assert.ok(fromDashboard.size >= 15);
  assert.deepEqual(missingFrom(text, fromDashboard), [], 'every metric in the dashboard is in the scrape');
});
