/**
 * Merging load generators: histograms added are the histogram of the concatenated samples (every
 * percentile equal), and `loadtest merge` adds steps that line up and refuses those that do not,
 * naming the file and the field.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseCommandLine, UsageError } from '../../../loadtest/cliArgs.js';
import {
  decodeLatencyHistogram,
  encodeLatencyHistogram,
  latencyStatsOf,
  mergeLatencyHistograms,
  newLatencyHistogram,
  recordLatencyMs,
  toMicros,
} from '../../../loadtest/latencyHistogram.js';
import { mergeGeneratorResults, MergeError, type GeneratorResult } from '../../../loadtest/merge.js';
import type { LoadTestReport, StepResult } from '../../../loadtest/results.js';
import { toMarkdown } from '../../../loadtest/report/markdown.js';
import { percentile } from '../../../testkit/percentile.js';
import { seededRandom } from '../../../testkit/seededRandom.js';

const EC = 'sign:ECC_NIST_P256:ECDSA_SHA_256';

/** Latencies in ms with a long tail: most a few ms, some hundreds, a few seconds. */
function samples(n: number, seed: number, scale = 1): number[] {
  const r = seededRandom(seed);
  return Array.from({ length: n }, () => {
    const u = r();
    const base = u < 0.98 ? 0.3 + 8 * r() : u < 0.998 ? 20 + 400 * r() : 1000 + 3000 * r();
    return base * scale;
  });
}

function histogramOf(values: readonly number[]) {
  const h = newLatencyHistogram();
  for (const v of values) recordLatencyMs(h, v);
  return h;
}

const PERCENTILES = [0.1, 1, 5, 10, 25, 33.3, 50, 66.7, 75, 90, 95, 99, 99.5, 99.9, 99.99, 100];

test('two histograms merged (through their encoding) are the histogram of the concatenated samples', () => {
  for (const seed of [1, 2, 3]) {
    const a = samples(20_000, seed);
    const b = samples(7_000, seed + 100, 1.7);
    const merged = mergeLatencyHistograms([
      decodeLatencyHistogram(encodeLatencyHistogram(histogramOf(a)), 'a'),
      decodeLatencyHistogram(encodeLatencyHistogram(histogramOf(b)), 'b'),
    ]);
    const whole = histogramOf([...a, ...b]);
    assert.equal(merged.totalCount, a.length + b.length);
    for (const p of PERCENTILES) assert.equal(merged.getValueAtPercentile(p), whole.getValueAtPercentile(p), `seed ${seed}, p${p}`);
    assert.deepEqual(latencyStatsOf(merged), latencyStatsOf(whole));
  }
});

test('below 262 ms the histogram keeps every microsecond: its percentiles are the nearest-rank ones of the samples', () => {
  const a = samples(15_000, 7).map((v) => Math.min(v, 250));
  const b = samples(9_000, 8, 0.6).map((v) => Math.min(v, 250));
  const merged = mergeLatencyHistograms([histogramOf(a), histogramOf(b)]);
  const sorted = Float64Array.from([...a, ...b].map(toMicros)).sort();
  const stats = latencyStatsOf(merged);
  assert.equal(stats.p50, percentile(sorted, 50) / 1000);
  assert.equal(stats.p90, percentile(sorted, 90) / 1000);
  assert.equal(stats.p99, percentile(sorted, 99) / 1000);
  assert.equal(stats.max, sorted[sorted.length - 1]! / 1000);
  for (const p of PERCENTILES) assert.equal(merged.getValueAtPercentile(p), percentile(sorted, p), `p${p}`);
  const mean = sorted.reduce((x, y) => x + y, 0) / sorted.length / 1000;
  assert.ok(Math.abs(stats.mean - mean) < 1e-9, `${stats.mean} vs ${mean}`);
});

function generatorStep(connections: number, values: readonly number[], extra: Partial<StepResult> = {}): StepResult {
  const sorted = Float64Array.from(values.map(toMicros)).sort();
  return {
    scenario: EC,
    connections,
    durationSec: 10,
    requests: values.length,
    okRequests: values.length,
    signatures: values.length,
    requestsPerSec: values.length / 10,
    signaturesPerSec: values.length / 10,
    latency: { p50: percentile(sorted, 50) / 1000, p90: percentile(sorted, 90) / 1000, p99: percentile(sorted, 99) / 1000, max: 0, mean: 0 },
    errors: { '503 OVERLOADED': 2 },
    verified: { sampled: 10, bad: 0 },
    cpu: { clientSec: 6 },
    startedAt: '2025-01-02T03:04:10.000Z',
    latencyHistogram: encodeLatencyHistogram(histogramOf(values)),
    ...extra,
  };
}

function generator(source: string, steps: StepResult[], extra: Partial<LoadTestReport> = {}): GeneratorResult {
  return {
    source,
    report: {
      version: 1,
      startedAt: '2025-01-02T03:04:05.000Z',
      finishedAt: '2025-01-02T03:06:10.000Z',
      command: 'npm run loadtest -- --url https://signer:8443 --generator-only',
      machine: {
        cpus: 2,
        cpuModel: 'Test CPU',
        totalMemBytes: 8 * 1024 ** 3,
        node: 'v20.0.0',
        platform: 'linux x64',
        hsmModule: 'remote service',
        workers: 0,
        sessionsPerWorker: 16,
        hsmLatencyUs: 0,
      },
      target: { urls: ['https://signer:8443'], local: false },
      ceilings: [],
      steps,
      notes: ['Against a remote service: no ceilings.'],
      generatorOnly: true,
      ...extra,
    },
  };
}

test("merge adds the generators' steps, recomputes the percentiles from all their answers, and plans", () => {
  const a1 = samples(3000, 11);
  const b1 = samples(5000, 12, 1.3);
  const a2 = samples(4000, 13);
  const b2 = samples(4500, 14, 2);
  const report = mergeGeneratorResults(
    [generator('a/report.json', [generatorStep(4, a1), generatorStep(32, a2)]), generator('b/report.json', [generatorStep(4, b1), generatorStep(32, b2)])],
    { command: 'npm run loadtest -- merge a b', plan: { targetOpsPerSec: 5000 } },
  );
  assert.deepEqual(
    report.steps.map((s) => [s.scenario, s.connections, s.signatures, s.signaturesPerSec]),
    [
      [EC, 8, 8000, 800],
      [EC, 64, 8500, 850],
    ],
  );
  const [first] = report.steps;
  assert.deepEqual(first!.latency, latencyStatsOf(histogramOf([...a1, ...b1])));
  assert.deepEqual(first!.errors, { '503 OVERLOADED': 4 });
  assert.deepEqual(first!.verified, { sampled: 20, bad: 0 });
  assert.deepEqual(first!.cpu, { clientSec: 12 });
  assert.equal(first!.generators?.length, 2);
  assert.equal(first!.generators?.[0]?.clientCores, 0.6);
  // The merged histogram travels on, so merges can be merged again.
  assert.deepEqual(latencyStatsOf(decodeLatencyHistogram(first!.latencyHistogram!, 'merged')), first!.latency);
  assert.deepEqual(report.mergedFrom, ['a/report.json', 'b/report.json']);
  assert.equal(report.generatorOnly, undefined);
  assert.ok(report.plan, 'a capacity plan from the merged steps');
  assert.equal(report.plan.inputs.perInstanceOpsPerSec, 850);
  assert.ok(report.notes.some((n) => n.startsWith('Merged from 2 load generator(s)')));
  assert.ok(report.notes.some((n) => n.startsWith('The generators began each step within 0.0 s')));
  const md = toMarkdown(report);
  assert.match(md, /Per load generator \(merged run\)/);
  assert.match(md, /## Capacity plan/);
});

test('merge refuses inputs that do not line up, naming the file and the field', () => {
  const ok = (src: string) => generator(src, [generatorStep(4, samples(100, 1))]);
  const cases: Array<[GeneratorResult[], RegExp]> = [
    [[ok('a'), generator('b', [generatorStep(8, samples(100, 2))])], /^b: steps\[0\]\.connections is 8, a has 4/],
    [[ok('a'), generator('b', [generatorStep(4, samples(100, 2), { scenario: 'sign:RSA_2048:RSASSA_PKCS1_V1_5_SHA_256' })])], /^b: steps\[0\]\.scenario is/],
    [[ok('a'), generator('b', [generatorStep(4, samples(100, 2)), generatorStep(8, samples(100, 3))])], /^b: steps has 2 step\(s\), a has 1/],
    [[ok('a'), generator('b', [generatorStep(4, samples(100, 2), { latencyHistogram: undefined })])], /^b: steps\[0\]\.latencyHistogram is missing/],
    [[ok('a'), generator('b', [generatorStep(4, samples(100, 2))], { generatorOnly: undefined })], /^b: generatorOnly is not true/],
    [
      [ok('a'), generator('b', [generatorStep(4, samples(100, 2), { latencyHistogram: 'bm90IGEgaGlzdG9ncmFt' })])],
      /^b: steps\[0\]\.latencyHistogram: not an encoded HdrHistogram/,
    ],
  ];
  for (const [inputs, message] of cases) {
    assert.throws(
      () => mergeGeneratorResults(inputs, { command: 'merge' }),
      (e: unknown) => e instanceof MergeError && message.test(e.message),
      String(message),
    );
  }
});

test('command line: --generator-only needs --url and leaves the plan to merge; merge takes directories and plan flags', () => {
  assert.throws(
    () => parseCommandLine(['--generator-only']),
    (e: unknown) => e instanceof UsageError && /--generator-only: give --url/.test(e.message),
  );
  assert.throws(
    () => parseCommandLine(['--generator-only', '--url', 'https://s:8443', '--target-ops', '100']),
    (e: unknown) => e instanceof UsageError && /--target-ops belongs to merge/.test(e.message),
  );
  const run = parseCommandLine(['--generator-only', '--url', 'https://s:8443', '--out', 'g0']);
  assert.equal(run.kind === 'run' && run.options.generatorOnly, true);
  const merge = parseCommandLine(['merge', 'g0', 'g1', '--out', 'all', '--target-ops', '5000', '--hsms', '6']);
  assert.deepEqual(merge.kind === 'merge' && [merge.paths, merge.outDir, merge.plan], [['g0', 'g1'], 'all', { targetOpsPerSec: 5000, hsms: 6 }]);
  assert.throws(
    () => parseCommandLine(['merge']),
    (e: unknown) => e instanceof UsageError && /merge: give the output directories/.test(e.message),
  );
});
