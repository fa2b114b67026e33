import { test } from 'node:test';
import assert from 'node:assert/strict';
import { kneeOf, medianStep, planFromReport, typicalSignatureBytes } from '../../../loadtest/analysis.js';
import { toMarkdown } from '../../../loadtest/report/markdown.js';
import type { CeilingResult, LoadTestReport, StepResult } from '../../../loadtest/results.js';
import { evaluateTargets, rssDrift, rssSpread } from '../../../loadtest/targets.js';

const RSA = 'sign:RSA_2048:RSASSA_PKCS1_V1_5_SHA_256';
const EC = 'sign:ECC_NIST_P256:ECDSA_SHA_256';
const BATCH = 'batch64:ECC_NIST_P256:ECDSA_SHA_256';

function step(scenario: string, connections: number, sigPerSec: number, extra: Partial<StepResult> = {}): StepResult {
  return {
    scenario,
    connections,
    durationSec: 10,
    requests: sigPerSec * 10,
    okRequests: sigPerSec * 10,
    signatures: sigPerSec * 10,
    requestsPerSec: sigPerSec,
    signaturesPerSec: sigPerSec,
    latency: { p50: 1, p90: 2, p99: 3, max: 4, mean: 1.5 },
    errors: {},
    verified: { sampled: 10, bad: 0 },
    ...extra,
  };
}

const ceiling = (scenario: string, direct: number, http: number, combined: number): CeilingResult => ({
  scenario,
  directOpsPerSec: direct,
  directProcesses: 2,
  directInFlight: 16,
  httpReqPerSec: http,
  combinedOpsPerSec: combined,
});

function report(steps: StepResult[], ceilings: CeilingResult[] = []): LoadTestReport {
  return {
    version: 1,
    startedAt: '2025-01-01T00:00:00.000Z',
    finishedAt: '2025-01-01T00:05:00.000Z',
    command: 'npm run loadtest',
    machine: {
      cpus: 2,
      cpuModel: 'x',
      totalMemBytes: 1,
      node: 'v20',
      platform: 'linux x64',
      hsmModule: 'softhsm2',
      workers: 2,
      sessionsPerWorker: 16,
      hsmLatencyUs: 0,
    },
    target: { urls: [], local: true },
    ceilings,
    steps,
    notes: [],
  };
}

test('every target is judged from the steps it needs, met or missed, with the numbers', () => {
  const r = report(
    [
      step(RSA, 64, 1800),
      step(RSA, 100, 1600),
      step(EC, 64, 3000),
      step(EC, 100, 2000),
      step(BATCH, 8, 12000),
      step(BATCH, 25, 16000),
      step(`${RSA}@hsm-latency=1000us`, 100, 1300),
      step(`${RSA}@token-objects=1000`, 64, 1750),
      step(`${RSA}@token-objects=1000`, 100, 1500),
      step(`${EC}@audit-log=on`, 64, 2760),
      step(EC, 8, 500, { durationSec: 300, service: { rssByWorker: { '11': [100, 104, 105, 100, 102], '12': [100, 130, 120, 125, 128] } } }),
    ],
    [ceiling(RSA, 2500, 6000, 2000), ceiling(EC, 25000, 4000, 3400), ceiling(BATCH, 20000, 600, 13000)],
  );
  const byId = new Map(evaluateTargets(r).map((t) => [t.id, t]));
  const eff = (s: string, c: number) => byId.get(`efficiency:${s}@${c}`)!;
  assert.equal(eff(RSA, 64).measured, 0.9);
  assert.equal(eff(RSA, 64).met, true);
  assert.equal(eff(RSA, 100).measured, 0.8);
  assert.equal(eff(RSA, 100).met, false);
  assert.equal(eff(EC, 100).met, false);
  assert.match(eff(RSA, 64).detail, /1,800 sig\/s of 2,000 combined/);

  // Best batch step against the direct rate, not the combined ceiling.
  assert.equal(byId.get('batch')!.measured, 0.8);
  assert.equal(byId.get('batch')!.met, true);
  assert.equal(byId.get('hsm-latency')!.measured, 1300 / 1600);
  assert.equal(byId.get('hsm-latency')!.met, true);
  // (1750 + 1500) / (1800 + 1600) = 0.956: within 5%.
  const objects = byId.get(`token-objects:${RSA}`)!;
  assert.ok(Math.abs(objects.measured! - 3250 / 3400) < 1e-12);
  assert.equal(objects.met, true);
  // Audit on ÷ off, ECDSA at 64 connections: 2,760 / 3,000 = 92%.
  const audit = byId.get('audit-log')!;
  assert.equal(audit.measured, 0.92);
  assert.equal(audit.met, true);
  assert.match(audit.detail, /2,760 sig\/s with the audit trail, 3,000 without/);
  const rss = byId.get(`rss:${EC}@8`)!;
  assert.equal(rss.measured, 0.3);
  assert.equal(rss.met, false);
  assert.match(rss.detail, /worker 12/);
});

test('targets a run did not measure are listed as such, never as met', () => {
  const targets = evaluateTargets(report([step(EC, 1, 100)]));
  assert.ok(targets.length >= 5);
  assert.ok(
    targets.every((t) => t.met === undefined && t.measured === undefined),
    JSON.stringify(targets, null, 1),
  );
  const md = toMarkdown({ ...report([step(EC, 1, 100)]), targets });
  assert.match(md, /## Targets/);
  assert.match(md, /Not measured in this run/);
});

test('rssDrift: medians of fifths against the first fifth, so a GC saw-tooth is not growth', () => {
  const sawTooth = [100, 110, 100, 110, 100, 110, 100, 110, 100, 110];
  const d = rssDrift(step(EC, 1, 1, { service: { rssByWorker: { a: sawTooth } } }))!;
  assert.equal(d.drift, 0);
  assert.deepEqual(d.medians, [110, 110, 110, 110, 110]);
  const leak = [100, 100, 110, 110, 120, 120, 130, 130, 140, 140];
  const l = rssDrift(step(EC, 1, 1, { service: { rssByWorker: { a: sawTooth, b: leak } } }))!;
  assert.equal(l.worker, 'b');
  assert.ok(Math.abs(l.drift - 0.4) < 1e-12);
  assert.equal(rssDrift(step(EC, 1, 1)), undefined);
});

test('rssSpread: the worst worker, (max − min) / min', () => {
  assert.equal(rssSpread(step(EC, 1, 1)), undefined);
  const s = rssSpread(step(EC, 1, 1, { service: { rssByWorker: { a: [200, 210], b: [100, 150, 125] } } }))!;
  assert.deepEqual(s, { spread: 0.5, worker: 'b', min: 100, max: 150 });
});

test('median step of repeats: the middle throughput, the lower middle of an even count', () => {
  const s = (v: number) => step(EC, 64, v);
  assert.equal(medianStep([s(3), s(1), s(2)])!.signaturesPerSec, 2);
  assert.equal(medianStep([s(4), s(1), s(3), s(2)])!.signaturesPerSec, 2);
  assert.equal(medianStep([s(5)])!.signaturesPerSec, 5);
  assert.equal(medianStep([]), undefined);
});

test('knee: the fewest connections within 10% of the best', () => {
  const steps = [step(EC, 1, 100), step(EC, 8, 900), step(EC, 25, 1000), step(EC, 50, 950)];
  assert.equal(kneeOf(steps)!.connections, 8);
  assert.equal(kneeOf(steps, 0.99)!.connections, 25);
  assert.equal(kneeOf([]), undefined);
});

test('plan from a report: per-HSM from the direct rate, per-instance from the best step, concurrency from the knee', () => {
  const r = report([step(EC, 8, 2900), step(EC, 64, 3000), step(`${EC}@hsm-latency=1000us`, 64, 9999)], [ceiling(EC, 20000, 4000, 3333)]);
  const { plan, notes } = planFromReport(r, { targetOpsPerSec: 10000 });
  assert.ok(plan);
  assert.equal(plan.inputs.perHsmOpsPerSec, 20000);
  assert.equal(plan.inputs.perInstanceOpsPerSec, 3000, 'variants are not used for the plan');
  assert.equal(plan.inputs.bestConnectionsPerInstance, 8);
  assert.equal(plan.inputs.scenario, EC);
  assert.ok(notes.some((n) => n.includes('direct PKCS#11 rate')));

  // Remote: no ceiling, so the service's throughput over the given number of HSMs.
  const remote = planFromReport(report([step(EC, 64, 3000)]), { targetOpsPerSec: 10000, hsms: 2 });
  assert.equal(remote.plan!.inputs.perHsmOpsPerSec, 1500);
  const given = planFromReport(report([step(EC, 64, 3000)]), { targetOpsPerSec: 10000, perHsmOpsPerSec: 700 });
  assert.equal(given.plan!.inputs.perHsmOpsPerSec, 700);
  assert.equal(planFromReport(report([]), { targetOpsPerSec: 1 }).plan, undefined);
});

test('canned signatures have realistic sizes', () => {
  assert.equal(typicalSignatureBytes('RSA_2048'), 256);
  assert.equal(typicalSignatureBytes('RSA_4096'), 512);
  assert.equal(typicalSignatureBytes('ECC_NIST_P256'), 71);
  assert.equal(typicalSignatureBytes('ECC_NIST_P384'), 103);
});
