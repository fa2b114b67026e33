/**
 * The harness's scripts decide whether they were started as the main script (the bare-HTTP ceiling
 * server, the machine probe). Node runs a script from its real path, so a checkout reached through
 * a symlinked directory must still start them: here the ceiling server, started through a link.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import assert from 'node:assert/strict';
import { test } from 'node:test';

const REPO = resolve(import.meta.dirname, '../..');

async function freePort(): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  const { port } = server.address() as AddressInfo;
  await new Promise((r) => server.close(r));
  return port;
}

test('the bare-HTTP ceiling server starts when its path goes through a symlink', { timeout: 60_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'hsm-signer-link-'));
  const link = join(dir, 'checkout');
  symlinkSync(REPO, link, 'dir');
  const port = await freePort();
  const child = spawn(process.execPath, ['--import', 'tsx', join(link, 'loadtest/httpCeilingServer.ts')], {
    cwd: REPO,
    env: { ...process.env, PORT: String(port), WORKERS: '1' },
    stdio: 'ignore',
  });
  try {
    let status: number | undefined;
    for (let i = 0; i < 150 && status === undefined && child.exitCode === null; i++) {
      await new Promise((r) => setTimeout(r, 100));
      status = await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.status, () => undefined);
    }
    assert.equal(status, 200, 'the server answered through the symlinked path');
  } finally {
    child.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
});
