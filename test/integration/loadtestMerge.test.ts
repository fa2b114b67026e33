/**
 * Load from several generators, merged: the real service on a throwaway SoftHSMv2 token, loaded
 * first by one `loadtest --generator-only` process at 2C connections, then by two at C each, run
 * at the same time; `loadtest merge` of the two. The merge's throughput must match the single
 * generator's within a generous band (a shared machine: the numbers are printed), and its
 * percentiles must be exactly those of the two generators' answers together.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { JsHistogram } from 'hdr-histogram-js';
import { decodeLatencyHistogram, toMicros } from '../../loadtest/latencyHistogram.js';
import { serviceEnvFor, prepareToken } from '../../loadtest/harnessToken.js';
import { startLocalService, type LocalService } from '../../loadtest/localService.js';
import { parseReport } from '../../loadtest/report/json.js';
import type { LoadTestReport, StepResult } from '../../loadtest/results.js';
import { percentile } from '../../testkit/percentile.js';
import { REPO_ROOT } from '../../testkit/repoRoot.js';

const EC = 'sign:ECC_NIST_P256:ECDSA_SHA_256';
const PER_GENERATOR = 8;
/** Equal within noise, on a shared 2-core machine where the generators share the cores with the service. */
const BAND = 0.35;

let dir: string;
let service: LocalService | undefined;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'hsm-signer-loadmerge-'));
  const { token } = await prepareToken(join(dir, 'token'), 'merge-test', ['ECC_NIST_P256']);
  service = await startLocalService({ env: serviceEnvFor(token), workers: 1 });
});
after(async () => {
  await service?.stop();
  rmSync(dir, { recursive: true, force: true });
});

function loadtest(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', 'loadtest/cli.ts', ...args], { cwd: REPO_ROOT, timeout: 120_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

function generator(out: string, connections: number, startAt?: Date) {
  return loadtest([
    ...(startAt ? ['--start-at', startAt.toISOString()] : []),
    '--generator-only',
    '--url',
    service!.url,
    '--scenario',
    EC,
    '--connections',
    String(connections),
    '--duration',
    '4s',
    '--warmup',
    '1s',
    '--out',
    out,
  ]);
}

const read = (out: string): LoadTestReport => parseReport(readFileSync(join(out, 'report.json'), 'utf8'), out);

/** A histogram's values, each as often as it was recorded (at its precision: whole µs below 262 ms). */
function samplesOf(encoded: string): number[] {
  const h = decodeLatencyHistogram(encoded, 'test') as JsHistogram;
  const out: number[] = [];
  const it = h.recordedValuesIterator;
  it.reset();
  while (it.hasNext()) {
    const v = it.next();
    for (let i = 0; i < v.countAtValueIteratedTo; i++) out.push(v.valueIteratedTo);
  }
  return out;
}

function checkStep(s: StepResult, connections: number): void {
  assert.equal(s.scenario, EC);
  assert.equal(s.connections, connections);
  assert.ok(s.okRequests > 0, 'good answers');
  assert.equal(s.verified.bad, 0, 'no bad signatures');
  assert.deepEqual(s.errors, {}, JSON.stringify(s.errors));
  assert.ok(s.latencyHistogram, 'a latency histogram');
}

/** One generator at 2C connections: its step. */
async function singleRun(out: string): Promise<StepResult> {
  const r = await generator(out, 2 * PER_GENERATOR);
  assert.equal(r.code, 0, r.stderr);
  const report = read(out);
  assert.equal(report.generatorOnly, true);
  assert.equal(report.plan, undefined);
  assert.deepEqual(report.ceilings, []);
  checkStep(report.steps[0]!, 2 * PER_GENERATOR);
  return report.steps[0]!;
}

/** Two generators at C each, at once, then merged: the merged report and the two inputs. */
async function pairRun(round: string): Promise<{ report: LoadTestReport; parts: LoadTestReport[]; dirs: string[] }> {
  const dirs = [join(dir, `${round}-g0`), join(dir, `${round}-g1`)];
  // Both begin their warm-up at one moment a few seconds ahead (each process starts, probes the machine and reads the keys first).
  const startAt = new Date(Date.now() + 12_000);
  const runs = await Promise.all(dirs.map((out) => generator(out, PER_GENERATOR, startAt)));
  for (const r of runs) assert.equal(r.code, 0, r.stderr);
  const parts = dirs.map(read);
  for (const p of parts) {
    const s = p.steps[0]!;
    checkStep(s, PER_GENERATOR);
    // The histogram holds the generator's own answers: its percentiles are those of its latency
    // list, to the histogram's resolution (1 µs up to 262 ms, then at most 1/65,536 of the value).
    const h = decodeLatencyHistogram(s.latencyHistogram!, 'generator');
    assert.equal(h.totalCount, s.requests, 'one value per answer');
    for (const [q, ms] of [
      [50, s.latency.p50],
      [90, s.latency.p90],
      [99, s.latency.p99],
      [100, s.latency.max],
    ] as const) {
      const expected = toMicros(ms);
      const resolution = Math.max(1, Math.ceil(expected / 65_536));
      assert.ok(Math.abs(h.getValueAtPercentile(q) - expected) <= resolution, `p${q}: ${h.getValueAtPercentile(q)} µs vs ${expected} µs (±${resolution})`);
    }
  }
  const merged = join(dir, `${round}-merged`);
  const m = await loadtest(['merge', ...dirs, '--out', merged, '--target-ops', '2000']);
  assert.equal(m.code, 0, m.stderr);
  for (const f of ['report.json', 'report.md', 'report.html']) assert.ok(existsSync(join(merged, f)), f);
  const report = read(merged);
  const step = report.steps[0]!;
  assert.equal(step.connections, 2 * PER_GENERATOR);
  assert.equal(step.okRequests, parts[0]!.steps[0]!.okRequests + parts[1]!.steps[0]!.okRequests);
  assert.ok(report.plan, 'a capacity plan from the merged run');
  assert.match(readFileSync(join(merged, 'report.md'), 'utf8'), /Per load generator \(merged run\)/);

  // The merge's percentiles are those of the two generators' answers together (at the histogram's precision).
  const all = Float64Array.from(parts.flatMap((p) => samplesOf(p.steps[0]!.latencyHistogram!))).sort();
  assert.equal(all.length, step.requests);
  const concatenated = { p50: percentile(all, 50) / 1000, p90: percentile(all, 90) / 1000, p99: percentile(all, 99) / 1000, max: all[all.length - 1]! / 1000 };
  const { mean: _mean, ...mergedPercentiles } = step.latency;
  assert.deepEqual(mergedPercentiles, concatenated);
  console.log(
    `${round}: two generators @ ${PER_GENERATOR} each: ${parts.map((p) => p.steps[0]!.signaturesPerSec.toFixed(1)).join(' + ')} = merged ${step.signaturesPerSec.toFixed(1)} sig/s; ` +
      `merged p50/p90/p99/max ${JSON.stringify(mergedPercentiles)} == concatenated ${JSON.stringify(concatenated)} over ${all.length} answers; ` +
      `${report.notes.find((n) => n.startsWith('The generators began')) ?? ''}`,
  );
  return { report, parts, dirs };
}

test('two generators merged match one generator with their connections; merged percentiles are those of all their answers', { timeout: 400_000 }, async () => {
  // One generator then two; a second round only when the first is outside the band: the host's
  // load moves over seconds, and it only ever slows a run down, so the best of each is compared.
  const singles: StepResult[] = [];
  const merged: StepResult[] = [];
  let firstPair: string[] = [];
  const best = (xs: StepResult[]): number => Math.max(...xs.map((s) => s.signaturesPerSec));
  for (const round of ['round1', 'round2']) {
    if (singles.length > 0 && Math.abs(best(merged) / best(singles) - 1) <= BAND) break;
    const one = await singleRun(join(dir, `${round}-single`));
    console.log(`${round}: one generator @ ${2 * PER_GENERATOR}: ${one.signaturesPerSec.toFixed(1)} sig/s, latency ${JSON.stringify(one.latency)}`);
    singles.push(one);
    const pair = await pairRun(round);
    merged.push(pair.report.steps[0]!);
    if (firstPair.length === 0) firstPair = pair.dirs;
  }
  const ratio = best(merged) / best(singles);
  console.log(
    `best merged ${best(merged).toFixed(1)} sig/s vs best single ${best(singles).toFixed(1)} sig/s: ratio ${ratio.toFixed(3)} (band ±${BAND * 100}%)`,
  );
  assert.ok(Math.abs(ratio - 1) <= BAND, `merged ${best(merged).toFixed(1)} vs single ${best(singles).toFixed(1)} sig/s`);

  // Steps that do not line up are refused, naming the file and the field.
  const bad = await loadtest(['merge', firstPair[0]!, join(dir, 'round1-single'), '--out', join(dir, 'bad')]);
  assert.equal(bad.code, 2, bad.stderr);
  assert.match(bad.stderr, /round1-single\/report\.json: steps\[0\]\.connections is 16, .*round1-g0\/report\.json has 8/);
});
