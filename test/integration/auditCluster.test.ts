/**
 * Issue 12: several processes append to one audit log without interleaving lines, and the cluster
 * primary hands log rotation's signals (SIGUSR2, SIGHUP) to every worker.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { REPO_ROOT } from '../../testkit/repoRoot.js';
import { childPids } from '../../testkit/processProbe.js';
import { closedLoops, eventually, startServiceProcess, type ServiceProcess } from '../support/faultService.js';
import { createTestToken, type TestToken } from '../support/testToken.js';

let token: TestToken;
let svc: ServiceProcess | undefined;

before(async () => {
  token = await createTestToken([{ name: 'cluster-ec', spec: 'ECC_NIST_P256' }]);
});
after(async () => {
  await svc?.stop();
  token?.cleanup();
});

/** Every line of the file parsed; a line that is not one whole JSON object fails the test. */
function parseAll(file: string): Record<string, unknown>[] {
  if (!existsSync(file)) return [];
  const text = readFileSync(file, 'utf8');
  assert.ok(text === '' || text.endsWith('\n'), 'the file ends with a whole line');
  return text
    .split('\n')
    .filter(Boolean)
    .map((l, i) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        return assert.fail(`line ${i + 1} is not one JSON record (${l.length} chars): ${l.slice(0, 120)}...`);
      }
    });
}

test('two processes appending batches of 130 KB at once: every line whole, none lost', { timeout: 60_000 }, async (t) => {
  const file = join(token.dir, 'two-writers.log');
  const go = join(token.dir, 'two-writers.go');
  // Both started, both ready, then both released at once: their writes overlap whatever their start-up took.
  const writer = (tag: string): { ready: Promise<void>; done: Promise<string> } => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/support/auditWriter.ts', file, tag, '40', '100', go], {
      cwd: REPO_ROOT,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    let signal: () => void;
    const ready = new Promise<void>((r) => (signal = r));
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (out.startsWith('ready\n')) signal();
    });
    const done = new Promise<string>((resolve, reject) =>
      child.on('exit', (code) => (code === 0 ? resolve(out.slice('ready\n'.length)) : reject(new Error(`writer ${tag} exited ${code}`)))),
    );
    return { ready, done };
  };
  const writers = [writer('writer-a'), writer('writer-b')];
  await Promise.all(writers.map((w) => w.ready));
  writeFileSync(go, '');
  const done = await Promise.all(writers.map((w) => w.done));
  assert.deepEqual(done, ['done 4000\n', 'done 4000\n']);
  const records = parseAll(file);
  const seen = (tag: string): number[] => records.filter((r) => r.client === tag).map((r) => r.keyVersion as number);
  assert.deepEqual(
    seen('writer-a'),
    Array.from({ length: 4000 }, (_, i) => i),
    "writer a's records, all, in its order",
  );
  assert.deepEqual(
    seen('writer-b'),
    Array.from({ length: 4000 }, (_, i) => i),
  );
  // The writes really overlapped: the two writers' records alternate in runs somewhere in the file.
  let switches = 0;
  for (let i = 1; i < records.length; i++) if (records[i]!.client !== records[i - 1]!.client) switches++;
  t.diagnostic(`8,000 records of ${Math.round(readFileSync(file).length / 8000)} bytes each; the writer changes ${switches} times along the file`);
  assert.ok(switches >= 2, 'the two processes wrote at the same time');
});

test('the service with two workers: one whole line per request; SIGUSR2 and SIGHUP to the primary reopen the log in every worker', {
  timeout: 90_000,
}, async (t) => {
  const file = join(token.dir, 'cluster.log');
  svc = await startServiceProcess(token.env({ WORKERS: '2', AUDIT_LOG: file, LOG_LEVEL: 'info' }), { maxSockets: 32 });
  const s = svc;
  const ids = new Set<string>();
  const sign = async (id: string): Promise<boolean> => {
    const r = await s.driver.request(
      'POST',
      '/v1/keys/cluster-ec/sign',
      { algorithm: 'ECDSA_SHA_256', message: Buffer.from(id).toString('base64') },
      { 'x-request-id': id },
    );
    assert.equal(r.status, 200, r.text);
    ids.add(id);
    return true;
  };
  let n = 0;
  const end = Date.now() + 3000;
  await closedLoops(
    32,
    () => Date.now() < end,
    (c, i) => sign(`c${c}-${i}-${n++}`),
  );
  const records = parseAll(file);
  t.diagnostic(`${ids.size} signatures at 32 connections in 3 s, ${records.length} records`);
  assert.equal(records.length, ids.size, 'one record per request');
  assert.deepEqual(new Set(records.map((r) => r.requestId)), ids);
  assert.ok(records.every((r) => r.operation === 'sign' && r.outcome === 'ok' && r.client === 'dev'));

  // Log rotation as logrotate does it: move the file, then signal the primary.
  for (const [i, signal] of (['SIGUSR2', 'SIGHUP'] as const).entries()) {
    const rotated = `${file}.${i + 1}`;
    renameSync(file, rotated);
    process.kill(s.pid, signal);
    // Every worker reopens: the new file fills from both workers (a request on a new connection reaches either).
    const reopened = await eventually(async () => {
      const logs = s.logs().filter((l) => l.includes('audit log reopened')).length;
      return logs >= 2 * (i + 1) ? undefined : `${logs} worker(s) reopened after ${signal}`;
    }, 5000);
    assert.equal(reopened, undefined, reopened);
    const before = parseAll(rotated).length;
    const after: string[] = [];
    for (let k = 0; k < 20; k++) {
      const id = `after-${signal}-${k}`;
      await sign(id);
      after.push(id);
    }
    await sleep(50);
    assert.equal(parseAll(rotated).length, before, `no record went to the moved file after ${signal}`);
    assert.deepEqual(
      parseAll(file).map((r) => r.requestId),
      after,
      `the records after ${signal} are in the new file`,
    );
  }
  assert.ok(s.alive(), 'the service survived both signals');
});

test('AUDIT_LOG=stdout: the records go to standard output with the log lines, every line whole', { timeout: 60_000 }, async (t) => {
  const s = await startServiceProcess(token.env({ WORKERS: '2', AUDIT_LOG: 'stdout', LOG_LEVEL: 'info' }), { maxSockets: 16 });
  try {
    const ids = new Set<string>();
    let n = 0;
    await closedLoops(
      16,
      () => n < 400,
      async () => {
        const id = `stdout-${n++}`;
        const r = await s.driver.request('POST', '/v1/keys/cluster-ec/sign', { algorithm: 'ECDSA_SHA_256', message: 'YQ==' }, { 'x-request-id': id });
        assert.equal(r.status, 200, r.text);
        ids.add(id);
      },
    );
    // The service's stdout (and stderr) is a file here: pino's lines and the audit records, each line one JSON object.
    const all = s.logs().map((l) => JSON.parse(l) as Record<string, unknown>);
    const records = all.filter((l) => l.operation === 'sign');
    t.diagnostic(`${records.length} records among ${all.length} lines of standard output`);
    assert.deepEqual(new Set(records.map((r) => r.requestId)), ids);
    assert.ok(
      all.some((l) => l.msg === 'serving'),
      'the log lines are there too',
    );
  } finally {
    await s.stop();
  }
});

test('SIGUSR2 to the primary while its workers are still starting: no worker dies (logrotate may signal at any time)', { timeout: 90_000 }, async (t) => {
  const auditFile = join(token.dir, 'rotate-at-start.log');
  const workerPids = (primary: number): number[] =>
    childPids(primary).filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/environ`, 'latin1').includes('NODE_UNIQUE_ID=');
      } catch {
        return false;
      }
    });
  let signalled = 0;
  let sending: Promise<void> | undefined;
  const svc = await startServiceProcess(token.env({ WORKERS: '2', AUDIT_LOG: auditFile, LOG_LEVEL: 'info' }), {
    // As soon as the primary has forked its workers (its handlers are installed by then), and
    // while they load, log in and read the keys: a signal every 50 ms until the service is ready.
    onSpawn: (primary) => {
      sending = (async () => {
        for (const end = Date.now() + 20_000; Date.now() < end && workerPids(primary).length < 2; ) await sleep(5);
        for (let i = 0; i < 40; i++) {
          try {
            process.kill(primary, 'SIGUSR2');
            signalled++;
          } catch {
            return;
          }
          await sleep(50);
        }
      })();
    },
  });
  try {
    await sending;
    const died = svc.logs().filter((l) => l.includes('worker died'));
    t.diagnostic(`${signalled} SIGUSR2 sent to the primary from its workers' start on; 'worker died' lines: ${died.length}`);
    assert.ok(signalled > 0);
    assert.deepEqual(died, [], 'no worker died');
    assert.equal((await svc.driver.request('POST', '/v1/keys/cluster-ec/sign', { algorithm: 'ECDSA_SHA_256', message: 'eA==' })).status, 200);
    assert.ok(svc.alive());
  } finally {
    await svc.stop();
  }
});
