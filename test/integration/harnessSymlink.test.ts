/**
 * Scripts decide whether they were started as the main script (src/isMainModule.ts): the admin
 * CLI, the bare-HTTP ceiling server, the machine probe, the profile summary. Node runs a script
 * from its real path, so a checkout reached through a symlinked directory must still start them.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { freePort, statusOf } from '../../testkit/localHttp.js';
import { REPO_ROOT } from '../../testkit/repoRoot.js';

test('the bare-HTTP ceiling server starts when its path goes through a symlink', { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'hsm-signer-link-'));
  const link = join(dir, 'checkout');
  symlinkSync(REPO_ROOT, link, 'dir');
  const port = await freePort();
  const child = spawn(process.execPath, ['--import', 'tsx', join(link, 'loadtest/httpCeilingServer.ts')], {
    cwd: REPO_ROOT,
    env: { ...process.env, PORT: String(port), WORKERS: '1' },
    stdio: 'ignore',
  });
  try {
    let status = 0;
    for (let i = 0; i < 150 && status === 0 && child.exitCode === null; i++) {
      await new Promise((r) => setTimeout(r, 100));
      status = await statusOf(`http://127.0.0.1:${port}/healthz`);
    }
    assert.equal(status, 200, 'the server answered through the symlinked path');
  } finally {
    child.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the admin CLI runs when its path goes through a symlink (it used to exit 0 doing nothing)', { timeout: 60_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'hsm-signer-link-'));
  try {
    const link = join(dir, 'checkout');
    symlinkSync(REPO_ROOT, link, 'dir');
    const r = spawnSync(process.execPath, ['--import', 'tsx', join(link, 'src/admin/cli.ts')], { cwd: REPO_ROOT, encoding: 'utf8' });
    assert.equal(r.status, 2, 'no command: a usage error');
    assert.match(r.stderr + r.stdout, /usage: hsm-signer-admin keys/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
