import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { AdminLock } from '../../../src/admin/AdminLock.js';

const dir = mkdtempSync(join(tmpdir(), 'admin-lock-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('a second holder waits until the first releases', async () => {
  const file = join(dir, 'a.lock');
  const first = await AdminLock.acquire(file);
  const waited: string[] = [];
  let acquired = false;
  const second = AdminLock.acquire(file, { onWait: (pid) => waited.push(pid) }).then((l) => {
    acquired = true;
    return l;
  });
  await new Promise((r) => setTimeout(r, 250));
  assert.equal(acquired, false);
  assert.deepEqual(waited, [String(process.pid)]);
  first.release();
  (await second).release();
  assert.equal(existsSync(file), false);
});

test("a dead holder's lock is taken over", async () => {
  const file = join(dir, 'b.lock');
  // The pid of a process that has exited.
  const gone = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout;
  writeFileSync(file, gone);
  const lock = await AdminLock.acquire(file, { timeoutMs: 1000 });
  lock.release();
});

test('a live holder past the timeout is an error naming it and the file', async () => {
  const file = join(dir, 'c.lock');
  const held = await AdminLock.acquire(file);
  await assert.rejects(
    AdminLock.acquire(file, { timeoutMs: 200 }),
    new RegExp(`pid ${process.pid}\\) still holds ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`),
  );
  held.release();
});

test('one lock file per token', () => {
  const a = AdminLock.fileFor({ modulePath: '/m.so', tokenLabel: 'a' });
  assert.equal(a, AdminLock.fileFor({ modulePath: '/m.so', tokenLabel: 'a' }));
  assert.notEqual(a, AdminLock.fileFor({ modulePath: '/m.so', tokenLabel: 'b' }));
  assert.notEqual(a, AdminLock.fileFor({ modulePath: '/m.so', tokenLabel: 'a', softhsmConf: '/x/softhsm2.conf' }));
});
