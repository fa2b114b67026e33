/**
 * `npm run loadtest -- hsm` pointed at an HSM of the operator's (docs/CLOUDHSM.md, "Measure"):
 * here a SoftHSMv2 token of the test's own, named only by the environment the guide uses
 * (HSM_MODULE, HSM_SLOT, HSM_PIN_FILE) and keys by --key, as a CloudHSM cluster would be. Short
 * durations; no speed is asserted.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { parseReport } from '../../loadtest/report/json.js';
import { REPO_ROOT } from '../../testkit/repoRoot.js';
import { createTestToken, type TestToken } from '../support/testToken.js';

let token: TestToken;
let dir: string;

before(async () => {
  token = await createTestToken([
    { name: 'ext-ec', spec: 'ECC_NIST_P256' },
    { name: 'ext-rsa', spec: 'RSA_2048' },
  ]);
  dir = mkdtempSync(join(tmpdir(), 'hsm-signer-loadtest-hsm-'));
});
after(() => {
  token?.cleanup();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function loadtestHsm(args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', 'loadtest/cli.ts', 'hsm', ...args],
      {
        cwd: REPO_ROOT,
        env: {
          PATH: process.env.PATH ?? '',
          SOFTHSM2_CONF: token.conf,
          HSM_MODULE: token.modulePath,
          HSM_PIN_FILE: token.pinFile,
          // Its own token dir: an external HSM must not make the harness prepare its SoftHSMv2 token.
          LOADTEST_TOKEN_DIR: join(dir, 'harness-token'),
          ...env,
        },
        timeout: 150_000,
      },
      (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

const ARGS = ['--workers', '1', '--connections', '1,4', '--ceiling-duration', '0.5s', '--duration', '0.3s'];

test('loadtest hsm measures the HSM named by HSM_MODULE and HSM_SLOT: signatures/s and latency per key type and in-flight level', {
  timeout: 160_000,
}, async () => {
  const out = join(dir, 'reports');
  const r = await loadtestHsm(
    [...ARGS, '--scenario', 'sign:ECC_NIST_P256,sign:RSA_2048', '--key', 'ECC_NIST_P256=ext-ec/v1', '--key', 'RSA_2048=ext-rsa/v1', '--out', out],
    { HSM_SLOT: '0' },
  );
  assert.equal(r.code, 0, r.stderr);
  assert.ok(!r.stderr.includes(readFileSync(token.pinFile, 'utf8').trim()), 'the PIN is never printed');
  const report = parseReport(readFileSync(join(out, 'report.json'), 'utf8'));
  // The module it was given, not the harness's own token.
  assert.equal(report.machine.hsmModule, token.modulePath);
  assert.deepEqual(
    report.ceilings.map((c) => c.scenario),
    ['sign:ECC_NIST_P256:ECDSA_SHA_256', 'sign:RSA_2048:RSASSA_PKCS1_V1_5_SHA_256'],
  );
  for (const c of report.ceilings) assert.ok(c.directOpsPerSec > 0, JSON.stringify(c));
  for (const spec of ['ECC_NIST_P256:ECDSA_SHA_256', 'RSA_2048:RSASSA_PKCS1_V1_5_SHA_256']) {
    // Printed as it runs and kept in the report: each in-flight level with its rate and latency.
    const line = new RegExp(
      `Direct PKCS#11 ${spec}: [\\d,.]+ ops/s with 1 in flight \\(latency p50 [\\d.]+ ms, p99 [\\d.]+ ms;.*, [\\d,.]+ ops/s with 4 in flight \\(latency p50 [\\d.]+ ms, p99 [\\d.]+ ms;`,
    );
    assert.match(r.stderr, line);
    assert.ok(
      report.notes.some((n) => line.test(n)),
      `no note for ${spec}`,
    );
  }
  assert.equal(report.practices?.length, 8, 'four practices per key type');
});

test('loadtest hsm honours HSM_SLOT: a slot without a token fails, naming the index', { timeout: 60_000 }, async () => {
  const r = await loadtestHsm([...ARGS, '--scenario', 'sign:ECC_NIST_P256', '--key', 'ECC_NIST_P256=ext-ec/v1', '--out', join(dir, 'bad')], {
    HSM_SLOT: '5',
  });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /no token in slot index 5/);
});

test('loadtest hsm refuses a bad HSM_SLOT before measuring', { timeout: 60_000 }, async () => {
  const r = await loadtestHsm(['--scenario', 'sign:ECC_NIST_P256', '--key', 'ECC_NIST_P256=ext-ec/v1'], { HSM_SLOT: 'first' });
  assert.equal(r.code, 2);
  assert.match(r.stderr, /HSM_SLOT: must be an integer/);
});
