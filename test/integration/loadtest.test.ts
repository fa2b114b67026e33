/**
 * One short real run of the harness (a few seconds): the real service on a throwaway SoftHSMv2
 * token, the ceilings, a two-step sweep, the three report files with sane numbers. Speed targets
 * are not checked here; they live in the benchmark (BENCHMARKS.md).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseReport } from '../../loadtest/report/json.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const EC = 'sign:ECC_NIST_P256:ECDSA_SHA_256';
let dir: string;

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'hsm-signer-loadtest-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

function loadtest(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', 'loadtest/cli.ts', ...args],
      // Its own token under the temp dir, so a benchmark or `npm start` running meanwhile is not disturbed.
      { cwd: ROOT, env: { ...process.env, LOADTEST_TOKEN_DIR: join(dir, 'token') }, timeout: 180_000 },
      (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

test('a quick run writes report.json, report.md and report.html with sane numbers', { timeout: 200_000 }, async () => {
  const out = join(dir, 'run');
  const r = await loadtest(['--quick', '--workers', '1', '--scenario', EC, '--target-ops', '2000', '--out', out]);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(!/\[\d+\/\d+\].*\n.*\[\d+\/\d+\].*\n.*\[\d+\/\d+\].*\n.*\[\d+\/\d+\]/.test(r.stderr), 'no more than one line per step');
  for (const f of ['report.json', 'report.md', 'report.html']) assert.ok(existsSync(join(out, f)), f);

  const report = parseReport(readFileSync(join(out, 'report.json'), 'utf8'));
  assert.equal(report.machine.workers, 1);
  assert.ok(report.machine.cpus >= 1);
  assert.match(report.machine.node, /^v\d+/);
  assert.match(report.machine.hsmModule, /softhsm/);
  for (const when of ['start', 'end'] as const) {
    const p = report.machine.probe?.[when];
    assert.ok(p && p.computeMs.length === 6 && p.memoryMs.length === 6, `machine probe at the ${when}`);
    assert.ok(
      [...p.computeMs, ...p.memoryMs].every((ms) => ms > 0 && ms < 10_000),
      JSON.stringify(p),
    );
  }
  assert.ok(
    report.notes.some((n) => n.startsWith('Machine steadiness')),
    'steadiness note',
  );
  assert.deepEqual(
    report.steps.map((s) => [s.scenario, s.connections]),
    [
      [EC, 1],
      [EC, 8],
    ],
  );
  for (const s of report.steps) {
    assert.ok(s.okRequests > 0, `${s.connections}: no good answers`);
    assert.equal(s.signatures, s.okRequests, 'one signature per sign request');
    assert.ok(s.signaturesPerSec > 0 && Number.isFinite(s.signaturesPerSec));
    assert.equal(s.verified.bad, 0, 'no bad signatures');
    assert.ok(s.verified.sampled > 0, 'some answers were verified');
    assert.ok(s.verified.sampled >= Math.floor(s.okRequests * 0.01), 'at least 1% verified');
    assert.deepEqual(s.errors, {}, JSON.stringify(s.errors));
    assert.ok(s.latency.p50 > 0 && s.latency.p50 <= s.latency.p90 && s.latency.p90 <= s.latency.p99 && s.latency.p99 <= s.latency.max);
    assert.ok(
      s.service?.rssBytes?.every((b) => b > 10 * 1024 * 1024),
      'worker RSS sampled',
    );
    assert.equal(s.service?.breakerState, 'closed');
  }
  const [c] = report.ceilings;
  assert.equal(c?.scenario, EC);
  assert.ok(c!.directOpsPerSec > 100, `direct ${c!.directOpsPerSec}`);
  assert.ok(c!.httpReqPerSec > 100, `http ${c!.httpReqPerSec}`);
  assert.ok(c!.combinedOpsPerSec < Math.min(c!.directOpsPerSec, c!.httpReqPerSec));
  assert.ok(report.plan && report.plan.hsms.total >= 2, 'a plan for --target-ops');
  assert.ok(report.targets && report.targets.length > 0);

  const md = readFileSync(join(out, 'report.md'), 'utf8');
  assert.match(md, new RegExp(`## Scenario \`${EC}\``));
  assert.match(md, /## Ceilings/);
  assert.match(md, /## Capacity plan/);
  const html = readFileSync(join(out, 'report.html'), 'utf8');
  assert.equal((html.match(/<svg/g) ?? []).length, 2, 'throughput and latency charts');
  assert.ok(!/https?:\/\//.test(html.replace(/xmlns="http:\/\/www\.w3\.org\/2000\/svg"/g, '')), 'no network references');
});

test('hsm mode measures the four practices on the token', { timeout: 120_000 }, async () => {
  const out = join(dir, 'hsm');
  const r = await loadtest(['hsm', '--quick', '--workers', '1', '--scenario', EC, '--out', out]);
  assert.equal(r.code, 0, r.stderr);
  const report = parseReport(readFileSync(join(out, 'report.json'), 'utf8'));
  const practices = report.practices ?? [];
  assert.equal(practices.length, 4);
  for (const p of practices) {
    assert.ok(p.goodOpsPerSec > 0 && p.badOpsPerSec > 0, JSON.stringify(p));
    assert.ok(Math.abs(p.ratio - p.goodOpsPerSec / p.badOpsPerSec) < 1e-9);
  }
  // A login per operation costs a login, a find and a logout each time: never cheaper.
  assert.ok(practices.find((p) => p.practice.startsWith('login'))!.ratio > 1);
  assert.ok(report.ceilings[0]!.directOpsPerSec > 0);
});
