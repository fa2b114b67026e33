import { test } from 'node:test';
import assert from 'node:assert/strict';
import { availableParallelism } from 'node:os';
import { parseCommandLine, parseSeconds, UsageError } from '../../../loadtest/cliArgs.js';
import { DEFAULTS } from '../../../loadtest/defaults.js';
import { formatLatency, parseLatency } from '../../../loadtest/hsmLatency.js';
import { bar, formatEvent, formatLive, formatStepDone } from '../../../loadtest/progress.js';
import { percentile } from '../../../testkit/percentile.js';
import { basePath, latencyStats, sampleEvery } from '../../../loadtest/stepRunner.js';
import type { StepResult } from '../../../loadtest/results.js';

const run = (argv: string[], env: NodeJS.ProcessEnv = {}) => {
  const c = parseCommandLine(argv, env);
  assert.equal(c.kind, 'run');
  return c as Extract<typeof c, { kind: 'run' }>;
};

test("no arguments: the issue's sweep, both key types, on a local service, with ceilings", () => {
  const { options, outDir } = run([]);
  assert.deepEqual(options.urls, []);
  assert.deepEqual(options.connections, [1, 8, 25, 50, 75, 100, 150]);
  assert.deepEqual(options.batchConnections, [1, 2, 4, 8, 16], 'a batch request is 64 signatures in flight');
  assert.deepEqual(options.scenarios, [...DEFAULTS.scenarios]);
  assert.equal(options.durationSec, DEFAULTS.durationSec);
  assert.equal(options.warmupSec, DEFAULTS.warmupSec);
  assert.equal(options.sampleRate, 0.02);
  assert.equal(options.workers, availableParallelism());
  assert.equal(options.ceilings, true);
  assert.equal(options.hsmLatencyUs, undefined);
  assert.equal(options.auditLog, undefined, 'the audit set-up only when asked');
  assert.equal(outDir, 'reports');
  assert.equal(options.command, 'npm run loadtest');
});

test('flags override the defaults one by one', () => {
  const { options, outDir, comparePath } = run(
    [
      '--url',
      'http://a:1,http://b:2',
      '--url',
      'https://c/signer',
      '--scenario',
      'sign:RSA_2048',
      '--scenario',
      'batch:ECC_NIST_P256,verify:ECC_NIST_P256',
      '--connections',
      '64,100',
      '--batch-connections',
      '2,4',
      '--duration',
      '5s',
      '--warmup',
      '500ms',
      '--out',
      'x',
      '--target-ops',
      '5000',
      '--zones',
      '2',
      '--spare-hsms',
      '0',
      '--max-utilization',
      '0.7',
      '--hsms',
      '3',
      '--hsm-latency',
      '1ms',
      '--token-objects',
      '1000',
      '--audit-log',
      '--workers',
      '3',
      '--hsm-threads',
      '32',
      '--hsm-sessions',
      '48',
      '--sample-rate',
      '0.05',
      '--compare',
      'old.json',
      '--no-ceiling',
      '--cpu-prof',
      '/tmp/prof',
    ],
    { LOADTEST_AUTH_TOKEN: 'secret' },
  );
  assert.deepEqual(options.urls, ['http://a:1', 'http://b:2', 'https://c/signer']);
  assert.deepEqual(options.scenarios, ['sign:RSA_2048:RSASSA_PKCS1_V1_5_SHA_256', 'batch64:ECC_NIST_P256:ECDSA_SHA_256', 'verify:ECC_NIST_P256:ECDSA_SHA_256']);
  assert.deepEqual(options.connections, [64, 100]);
  assert.deepEqual(options.batchConnections, [2, 4]);
  assert.equal(options.durationSec, 5);
  assert.equal(options.warmupSec, 0.5);
  assert.equal(outDir, 'x');
  assert.equal(comparePath, 'old.json');
  assert.deepEqual(options.plan, { targetOpsPerSec: 5000, zones: 2, spareHsms: 0, maxUtilization: 0.7, hsms: 3 });
  assert.equal(options.hsmLatencyUs, 1000);
  assert.equal(options.tokenObjects, 1000);
  assert.equal(options.auditLog, true);
  assert.equal(options.workers, 3);
  assert.equal(options.hsmThreads, 32);
  assert.equal(options.hsmSessions, 48);
  assert.equal(options.sampleRate, 0.05);
  assert.equal(options.ceilings, false);
  assert.equal(options.cpuProfDir, '/tmp/prof');
  assert.equal(options.authToken, 'secret');
});

test('--quick is a tiny sweep for the test suite', () => {
  const { options } = run(['--quick']);
  assert.deepEqual(options.connections, [1, 8]);
  assert.equal(options.durationSec, 1);
  assert.ok(options.warmupSec < 1);
  assert.equal(options.ceilingDurationSec, 1);
});

test('hsm mode and compare', () => {
  const hsm = parseCommandLine(['hsm', '--hsm-latency', '250us', '--key', 'RSA_2048=payments-rsa']);
  assert.equal(hsm.kind, 'hsm');
  if (hsm.kind !== 'hsm') return;
  assert.equal(hsm.options.hsmLatencyUs, 250);
  assert.deepEqual(hsm.keyLabels, { RSA_2048: 'payments-rsa' });
  assert.equal(hsm.practiceDurationSec, DEFAULTS.practiceDurationSec);
  assert.deepEqual(parseCommandLine(['compare', 'a.json', 'b.json']), { kind: 'compare', oldPath: 'a.json', newPath: 'b.json' });
  assert.deepEqual(parseCommandLine(['--help']), { kind: 'help' });
  assert.deepEqual(parseCommandLine(['render', 'r/report.json']), { kind: 'render', path: 'r/report.json' });
});

test('bad usage names the flag', () => {
  const bad: Array<[string[], RegExp]> = [
    [['--connections', '0'], /--connections/],
    [['--connections', 'a,b'], /--connections/],
    [['--duration', 'ten'], /--duration/],
    [['--sample-rate', '0.001'], /--sample-rate/],
    [['--scenario', 'sign:RSA_1'], /--scenario/],
    [['--url', 'ftp://x'], /--url/],
    [['--hsm-latency', 'soon'], /--hsm-latency/],
    [['--max-utilization', '2', '--target-ops', '1'], /--max-utilization/],
    [['--bogus'], /bogus/],
    [['fly'], /unknown command/],
    [['compare', 'a.json'], /two report/],
    [['hsm', '--key', 'RSA_2048'], /--key/],
  ];
  for (const [argv, why] of bad)
    assert.throws(
      () => parseCommandLine(argv),
      (e: unknown) => e instanceof UsageError && why.test(e.message),
      argv.join(' '),
    );
});

test('durations and latencies', () => {
  assert.equal(parseSeconds('--duration', '10'), 10);
  assert.equal(parseSeconds('--duration', '2m'), 120);
  assert.equal(parseSeconds('--duration', '250ms'), 0.25);
  assert.equal(parseSeconds('--warmup', '0'), 0);
  assert.equal(parseLatency('1ms'), 1000);
  assert.equal(parseLatency('0.5ms'), 500);
  assert.equal(parseLatency('750µs'), 750);
  assert.equal(parseLatency('2'), 2000);
  assert.equal(formatLatency(1000), '1ms');
  assert.equal(formatLatency(250), '250us');
});

test('percentiles, sampling and URL prefixes', () => {
  const sorted = Float64Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  assert.equal(percentile(sorted, 50), 5);
  assert.equal(percentile(sorted, 90), 9);
  assert.equal(percentile(sorted, 99), 10);
  assert.equal(percentile(new Float64Array(0), 50), 0);
  assert.deepEqual(latencyStats(Float64Array.from([3, 1, 2])), { p50: 2, p90: 3, p99: 3, max: 3, mean: 2 });
  assert.equal(sampleEvery(0.02), 50);
  assert.equal(sampleEvery(0.01), 100);
  assert.equal(sampleEvery(0.3), 3);
  assert.equal(sampleEvery(1), 1);
  assert.equal(sampleEvery(0), 0);
  assert.equal(basePath(['http://a:1', 'http://b:2/']), '');
  assert.equal(basePath(['https://gw/signer/', 'https://gw2/signer']), '/signer');
  assert.throws(() => basePath(['http://a/x', 'http://b/y']), /same path/);
});

test('progress lines: a bar while running, one line per finished step, bad signatures shouted', () => {
  assert.equal(bar(0.5, 10), '█████░░░░░');
  assert.equal(bar(2, 4), '████');
  assert.equal(bar(Number.NaN, 4), '░░░░');
  const live = formatLive('sign:X', 64, false, { elapsedSec: 5, durationSec: 10, requests: 10, ok: 10, signatures: 5000, errors: 1, bad: 0 }, '[1/2]');
  assert.match(live, /^\[1\/2\] sign:X @ 64 conn █+░+ 5\/10 s {2}1,000 sig\/s {2}errors 1$/);
  const s: StepResult = {
    scenario: 'sign:X',
    connections: 64,
    durationSec: 10,
    requests: 100,
    okRequests: 98,
    signatures: 98,
    requestsPerSec: 9.8,
    signaturesPerSec: 9.8,
    latency: { p50: 1, p90: 2, p99: 3, max: 4, mean: 1 },
    errors: { '503 OVERLOADED': 2 },
    verified: { sampled: 2, bad: 0 },
    service: { poolInUse: 16, poolWaiting: 3 },
  };
  const done = formatStepDone(s, '[1/2]');
  assert.match(done, /9\.8 sig\/s/);
  assert.match(done, /503 OVERLOADED/);
  assert.match(done, /pool 16\/3 waiting/);
  assert.equal(formatEvent({ type: 'step-done', step: s, warmup: true }), undefined, 'warm-ups are not results');
  assert.match(formatEvent({ type: 'bad-signature', scenario: 'sign:X', reason: 'r' })!, /^!! BAD SIGNATURE/);
  assert.equal(
    formatEvent({
      type: 'step-progress',
      scenario: 's',
      connections: 1,
      warmup: false,
      progress: { elapsedSec: 0, durationSec: 1, requests: 0, ok: 0, signatures: 0, errors: 0, bad: 0 },
    }),
    undefined,
  );
});

test('hsm mode: --connections are the direct rate in-flight levels; elsewhere they leave the direct rate alone', () => {
  const inFlight = (argv: string[]): readonly number[] => {
    const c = parseCommandLine(argv);
    assert.equal(c.kind, 'hsm');
    return (c as Extract<typeof c, { kind: 'hsm' }>).options.directInFlight;
  };
  assert.deepEqual(inFlight(['hsm', '--connections', '1,8,32', '--key', 'RSA_2048=payments-rsa/v1']), [1, 8, 32]);
  assert.deepEqual(inFlight(['hsm']), [...DEFAULTS.directInFlight]);
  assert.deepEqual(run(['--connections', '1,8,32']).options.directInFlight, [...DEFAULTS.directInFlight]);
});
