/**
 * Issue #13: SIGTERM under load. 64 keep-alive connections sign in closed loops; SIGTERM comes
 * mid-run. /readyz answers 503 `draining` at once, the listener keeps serving for DRAIN_MS, then
 * refuses new connections; every request the service accepted is answered 200 with a signature
 * that verifies (the service's own request log agrees with the client's count), no request is
 * reset on a connection it was sent on, the process exits 0 and leaves no worker behind.
 * DRAIN_MS is 1500 here rather than the default 5000: long enough that well over a second of
 * signing happens while draining, short enough to keep the test quick.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { test, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from '../../testkit/localHttp.js';
import { clusterWorkerPids, processExists } from '../../testkit/processProbe.js';
import { REPO_ROOT } from '../../testkit/repoRoot.js';
import { FaultFixture } from '../support/faultFixture.js';
import { closedLoops, eventually, type HttpResult } from '../support/faultService.js';

const KEY = 'drain-ec';
const CONNECTIONS = 64;
const DRAIN_MS = 1500;

const f = FaultFixture.use({ key: KEY });

interface Failure {
  readonly at: number;
  readonly code: string;
  readonly reusedSocket: boolean;
}

async function drainUnderLoad(t: TestContext, workers: number | undefined): Promise<void> {
  // debug: one log line per request, for the service's own count of what it answered.
  const s = await f.start(
    { ...(workers !== undefined ? { workers } : {}), sessions: 8, logLevel: 'debug', env: { DRAIN_MS: String(DRAIN_MS) } },
    { maxSockets: CONNECTIONS },
  );
  const expectedWorkers = workers ?? 2;
  const workerPids = expectedWorkers > 1 ? await waitForWorkers(s.pid, expectedWorkers) : [];
  const d = s.driver;
  let sent = 0;
  let ok = 0;
  let badSignatures = 0;
  let okAfterSigterm = 0;
  const statuses = new Map<number, number>();
  const failures: Failure[] = [];
  let sigtermAt = Infinity;
  let exitedAt = Infinity;
  let running = true;

  const load = closedLoops(
    CONNECTIONS,
    () => running,
    async (caller, i) => {
      sent++;
      try {
        const { r, verified } = await f.sign(Buffer.from(`drain ${caller} ${i}`));
        if (r.status !== 200) statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
        else if (!verified) badSignatures++;
        else {
          ok++;
          if (r.start > sigtermAt) okAfterSigterm++;
        }
        return r.status === 200;
      } catch (e) {
        const err = e as NodeJS.ErrnoException & { reusedSocket?: boolean };
        failures.push({ at: d.now(), code: err.code ?? err.message, reusedSocket: err.reusedSocket === true });
        return false;
      }
    },
    // A refused connect fails at once: a client would back off rather than spin.
    20,
  );

  await sleep(2000);
  sigtermAt = d.now();
  process.kill(s.pid, 'SIGTERM');
  // Readiness goes at once, on a connection of its own; liveness stays.
  await sleep(100);
  const readyz = await d.request('GET', '/readyz', undefined, {}, 5000, { newConnection: true });
  const healthz = await d.request('GET', '/healthz', undefined, {}, 5000, { newConnection: true });
  const exited = await eventually(async () => (s.alive() ? 'still running' : undefined), 30_000, 20);
  exitedAt = d.now();
  // Past the exit: a few more refusals, then the loops stop.
  await sleep(300);
  running = false;
  await load;

  const lines = s.logs().map((l) => JSON.parse(l) as { msg?: string; path?: string; status?: number });
  const served = lines.filter((l) => l.msg === 'request' && l.path === `/v1/keys/${KEY}/sign`);
  const servedOk = served.filter((l) => l.status === 200).length;
  const servedOther = served.length - servedOk;
  const byKind = new Map<string, number>();
  for (const x of failures) {
    const kind = `${x.code}${x.reusedSocket ? ' on a kept-alive connection' : ' on a new connection'}${x.at < exitedAt ? ' (service still running)' : ' (after exit)'}`;
    byKind.set(kind, (byKind.get(kind) ?? 0) + 1);
  }
  const firstFailure = failures.length ? Math.min(...failures.map((x) => x.at)) - sigtermAt : NaN;
  const leftover = workerPids.filter(processExists);

  t.diagnostic(`WORKERS ${workers ?? 'default'} (${expectedWorkers}), ${CONNECTIONS} keep-alive connections, DRAIN_MS ${DRAIN_MS}`);
  t.diagnostic(`sent ${sent}; answered 200 with a verified signature ${ok} (${okAfterSigterm} of them sent after SIGTERM); bad signatures ${badSignatures}`);
  t.diagnostic(`non-200 answers: ${statuses.size ? [...statuses].map(([k, v]) => `${k}: ${v}`).join(', ') : 'none'}`);
  t.diagnostic(`the service logged ${served.length} sign requests: ${servedOk} answered 200, ${servedOther} other`);
  t.diagnostic(
    `connection errors: ${failures.length}${byKind.size ? ` (${[...byKind].map(([k, v]) => `${k}: ${v}`).join('; ')})` : ''}; first ${firstFailure.toFixed(0)} ms after SIGTERM`,
  );
  t.diagnostic(
    `/readyz 100 ms after SIGTERM: ${readyz.status} ${reasonOf(readyz)}; /healthz: ${healthz.status}; exit code ${s.exitCode()} after ${(exitedAt - sigtermAt).toFixed(0)} ms; workers before ${workerPids.join(', ') || '(none: one process)'}, left behind: ${leftover.length}`,
  );

  assert.equal(exited, undefined, 'the service exited');
  assert.equal(s.exitCode(), 0, 'exit code 0');
  assert.deepEqual(leftover, [], 'no worker left behind');
  assert.equal(readyz.status, 503);
  assert.equal(reasonOf(readyz), 'draining');
  assert.equal(healthz.status, 200, 'a draining worker is alive');
  assert.equal(badSignatures, 0, 'every 200 carries a signature that verifies');
  assert.deepEqual([...statuses], [], 'no answer other than 200');
  assert.ok(okAfterSigterm > CONNECTIONS, `signing went on while draining (${okAfterSigterm} after SIGTERM)`);
  // Every request the service took in was answered, and the client got each answer.
  assert.equal(servedOther, 0, 'the service answered every sign request it accepted with 200');
  assert.equal(servedOk, ok, "the service's count of 200s is the client's");
  // Nothing was lost in flight: no error on a connection a request had been sent on before.
  assert.deepEqual(
    failures.filter((x) => x.reusedSocket),
    [],
    'no request reset on a kept-alive connection',
  );
  // The listener served through the drain, then refused new connections.
  assert.ok(firstFailure >= DRAIN_MS - 50, `no connection failed before the drain's end (first ${firstFailure.toFixed(0)} ms after SIGTERM)`);
  assert.ok(failures.length > 0, 'connections were refused after the drain');
  assert.deepEqual([...new Set(failures.map((x) => x.code))], ['ECONNREFUSED'], 'new connections are refused, not reset');
}

function reasonOf(r: HttpResult): string {
  return (r.body as { reason?: string } | undefined)?.reason ?? '';
}

async function waitForWorkers(primary: number, n: number): Promise<number[]> {
  const late = await eventually(async () => (clusterWorkerPids(primary).length === n ? undefined : `${clusterWorkerPids(primary).length} workers`), 20_000);
  assert.equal(late, undefined, late);
  return clusterWorkerPids(primary);
}

test('SIGTERM under load, default WORKERS (one per CPU): drain, refuse, exit 0', { timeout: 90_000 }, (t) => drainUnderLoad(t, undefined));

test('SIGTERM under load, WORKERS=1: drain, refuse, exit 0', { timeout: 90_000 }, (t) => drainUnderLoad(t, 1));

/** A second SIGTERM/SIGINT (Ctrl-C twice) ends the drain at once: the exit comes long before DRAIN_MS has passed. */
async function secondSignal(t: TestContext, workers: number | undefined): Promise<void> {
  const longDrainMs = 60_000;
  const s = await f.start(
    // Info: the stop's log lines (signals seen, workers draining) are printed if the test fails.
    { ...(workers !== undefined ? { workers } : {}), sessions: 2, logLevel: 'info', env: { DRAIN_MS: String(longDrainMs) } },
    { maxSockets: 4 },
  );
  const pids = (workers ?? 2) > 1 ? await waitForWorkers(s.pid, workers ?? 2) : [];
  const start = performance.now();
  process.kill(s.pid, 'SIGINT');
  // The drain has begun: /readyz says so, the listener still serves.
  const draining = await eventually(async () => {
    const r = await s.driver.request('GET', '/readyz', undefined, {}, 5000, { newConnection: true });
    return reasonOf(r) === 'draining' ? undefined : `${r.status} ${r.text}`;
  }, 10_000);
  const showLogs = (): void => {
    for (const line of s.logs()) t.diagnostic(line.slice(0, 300));
  };
  if (draining !== undefined) showLogs();
  assert.equal(draining, undefined, `draining after the first signal: ${draining}`);
  process.kill(s.pid, 'SIGINT');
  const exited = await eventually(async () => (s.alive() ? 'still running' : undefined), 30_000, 20);
  const tookMs = performance.now() - start;
  t.diagnostic(`WORKERS ${workers ?? 'default'}: DRAIN_MS ${longDrainMs}; a second SIGINT: exit code ${s.exitCode()} ${tookMs.toFixed(0)} ms after the first`);
  if (exited !== undefined) showLogs();
  assert.equal(exited, undefined, 'exited after the second signal');
  assert.equal(s.exitCode(), 0);
  assert.ok(tookMs < longDrainMs / 2, `long before DRAIN_MS (${tookMs.toFixed(0)} ms)`);
  assert.deepEqual(pids.filter(processExists), [], 'no worker left behind');
}

test('a second SIGINT ends the drain at once, default WORKERS', { timeout: 60_000 }, (t) => secondSignal(t, undefined));

test('a second SIGINT ends the drain at once, WORKERS=1', { timeout: 60_000 }, (t) => secondSignal(t, 1));

/** Whether `pid` has loaded the PKCS#11 module: it is composing the service (its signal handlers are in place by then). */
function loadedModule(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/maps`, 'utf8').includes('libsofthsm2');
  } catch {
    return false;
  }
}

test('SIGTERM while starting (WORKERS=1): exits 0 without serving', { timeout: 60_000 }, async (t) => {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: REPO_ROOT,
    env: f.env({ WORKERS: '1', LOG_LEVEL: 'info', PORT: String(await freePort()), HOST: '127.0.0.1' }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr.on('data', (b: Buffer) => (out += b.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  try {
    // While it opens the HSM: after it loaded the module, before it has logged in, read the keys and listened.
    const composing = await eventually(async () => (loadedModule(child.pid!) ? undefined : 'the PKCS#11 module is not loaded yet'), 20_000, 5);
    assert.equal(composing, undefined, composing);
    child.kill('SIGTERM');
    const code = await Promise.race([exited, sleep(30_000).then(() => 'timeout' as const)]);
    const served = out.includes('"msg":"serving"');
    t.diagnostic(`exit code ${code}; served before the stop: ${served}`);
    assert.equal(code, 0, out);
    assert.ok(!served, 'stopped before it served');
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
});
