/**
 * Issue #13: liveness. With the p11shim stalling every PKCS#11 call (a module wedged inside the
 * library), /healthz answers 503 once this worker's oldest HSM call has been unanswered for longer
 * than LIVENESS_STALL_MS, so an orchestrator restarts it; it answers at once all along (it makes
 * no HSM call), and 200 again once the calls return. LIVENESS_STALL_MS is 2000 here (the default
 * is 30000) to keep the test short; it must exceed REQUEST_DEADLINE_MS (500 here).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { FAULT_ALGORITHM, FaultFixture, type FaultServiceSettings, serviceEnv } from '../support/faultFixture.js';
import { eventually, type HttpResult, startServiceProcess } from '../support/faultService.js';

const KEY = 'liveness-ec';
const LIVENESS_STALL_MS = 2000;
const DEADLINE_MS = 500;

const f = FaultFixture.use({ key: KEY, shim: true });

test('a stalled HSM: /healthz 503 after LIVENESS_STALL_MS (not before), answered at once throughout, 200 once calls return', { timeout: 60_000 }, async (t) => {
  const s = await f.start(
    { workers: 1, sessions: 4, requestDeadlineMs: DEADLINE_MS, logLevel: 'error', env: { LIVENESS_STALL_MS: String(LIVENESS_STALL_MS) } },
    { maxSockets: 16 },
  );
  const d = s.driver;
  const before = await d.request('GET', '/healthz');
  assert.equal(before.status, 200);
  assert.deepEqual(before.body, { status: 'ok' });

  f.shim.stall(true);
  await f.shim.settle();
  const stallAt = d.now();
  // Calls that will not return: the requests end at their deadline (504), their PKCS#11 calls stay in the module.
  const signs = Array.from({ length: 4 }, (_, i) => f.sign(Buffer.from(`liveness ${i}`)).then(({ r }) => r.status));

  const probes: { at: number; healthz: HttpResult; readyz: number }[] = [];
  while (d.now() - stallAt < LIVENESS_STALL_MS + 4000) {
    const healthz = await d.request('GET', '/healthz', undefined, {}, 2000);
    const readyz = (await s.readyz()).status;
    probes.push({ at: d.now() - stallAt, healthz, readyz });
    if (healthz.status === 503) break;
    await sleep(100);
  }
  const statuses = await Promise.all(signs);
  const first503 = probes.find((p) => p.healthz.status === 503);
  const slowest = Math.max(...probes.map((p) => p.healthz.end - p.healthz.start));
  const firstReadyz503 = probes.find((p) => p.readyz === 503);

  f.shim.stall(false);
  await f.shim.settle();
  const resumedAt = d.now();
  const back = await eventually(async () => {
    const r = await d.request('GET', '/healthz', undefined, {}, 2000);
    return r.status === 200 ? undefined : `${r.status} ${r.text}`;
  }, 10_000);
  const backAfter = d.now() - resumedAt;

  t.diagnostic(
    `sign requests during the stall: ${statuses.join(', ')}; /readyz 503 from ${firstReadyz503?.at.toFixed(0)} ms; /healthz 503 from ${first503?.at.toFixed(0)} ms after the stall began (LIVENESS_STALL_MS ${LIVENESS_STALL_MS}): ${first503?.healthz.text}`,
  );
  t.diagnostic(`${probes.length} /healthz probes, slowest ${slowest.toFixed(0)} ms; 200 again ${backAfter.toFixed(0)} ms after the HSM answered`);

  assert.deepEqual(statuses, [504, 504, 504, 504], 'the stalled requests ended at their deadline');
  assert.ok(first503, '/healthz answered 503 during the stall');
  assert.ok(first503.at >= LIVENESS_STALL_MS, `not before LIVENESS_STALL_MS (${first503.at.toFixed(0)} ms)`);
  const body = first503.healthz.body as { status: string; reason: string; worker: { pid: number } };
  assert.equal(body.status, 'unavailable');
  assert.match(body.reason, /^HSM calls have not returned for \d+ ms \(LIVENESS_STALL_MS\)$/);
  assert.equal(typeof body.worker.pid, 'number');
  assert.ok(
    probes.filter((p) => p.at < LIVENESS_STALL_MS).every((p) => p.healthz.status === 200),
    'alive before LIVENESS_STALL_MS',
  );
  // Readiness went first: a stall past the deadline takes the worker out of rotation before liveness restarts it.
  assert.ok(firstReadyz503 && firstReadyz503.at < first503.at, '/readyz reported the stall before /healthz');
  assert.ok(slowest < 1000, `/healthz answered at once during the stall (slowest ${slowest.toFixed(0)} ms)`);
  assert.equal(back, undefined, back);
  assert.ok(s.alive());
});

test('a stop with the module wedged ends within its bound (DRAIN_MS + REQUEST_DEADLINE_MS + 10 s), not cleanly', { timeout: 90_000 }, async (t) => {
  // Both cases at once, on the one stalled module: each waits out the bound's fixed 10 s.
  const settings = (workers: number): FaultServiceSettings => ({
    workers,
    sessions: 2,
    requestDeadlineMs: DEADLINE_MS,
    logLevel: 'warn',
    env: { LIVENESS_STALL_MS: String(LIVENESS_STALL_MS), DRAIN_MS: '200' },
  });
  const startedAt = performance.now();
  const clusterStarting = startServiceProcess(f.env(serviceEnv(settings(2))), { maxSockets: 4 });
  const single = await f.start(settings(1), { maxSockets: 4 }).catch(async (e: unknown) => {
    await clusterStarting.then(
      (c) => c.stop(),
      () => undefined,
    );
    throw e;
  });
  const cluster = await clusterStarting;
  t.diagnostic(`both services ready ${(performance.now() - startedAt).toFixed(0)} ms after the first start`);
  try {
    f.shim.stall(true);
    await f.shim.settle();
    const stops = (
      [
        [1, single],
        [2, cluster],
      ] as const
    ).map(async ([workers, s]) => {
      // A call that will not return holds a session: the pool cannot drain it, logout and C_Finalize cannot run.
      const message = Buffer.from('wedged').toString('base64');
      const r = await s.driver.request('POST', `/v1/keys/${KEY}/sign`, { algorithm: FAULT_ALGORITHM, message });
      assert.equal(r.status, 504, `WORKERS ${workers}: ${r.text}`);
      const start = performance.now();
      process.kill(s.pid, 'SIGTERM');
      const exited = await eventually(async () => (s.alive() ? 'still running' : undefined), 40_000, 50);
      return { workers, s, exited, tookMs: performance.now() - start };
    });
    const stopped = await Promise.all(stops);
    t.diagnostic(`both stops over ${(performance.now() - startedAt).toFixed(0)} ms after the first start`);
    for (const { workers, s, exited, tookMs } of stopped) {
      t.diagnostic(`WORKERS ${workers}: exit code ${s.exitCode() ?? 'none (killed by a signal)'} ${tookMs.toFixed(0)} ms after SIGTERM`);
      assert.equal(exited, undefined, `WORKERS ${workers}: exited`);
      // One process kills itself (its stuck HSM thread would hold process.exit); a primary exits 1 once its worker has.
      assert.equal(s.exitCode(), workers === 1 ? null : 1, `WORKERS ${workers}: not a clean stop`);
      assert.ok(
        s.logs().some((l) => l.includes('stopping took too long')),
        `WORKERS ${workers}: it says why`,
      );
      assert.ok(tookMs >= 200 + DEADLINE_MS, `WORKERS ${workers}: not before the drain and the deadline`);
      // The worker's bound, or the primary's (2 s later), plus slack for a busy machine.
      assert.ok(tookMs < 200 + DEADLINE_MS + 10_000 + 2000 + 5000, `WORKERS ${workers}: within the bound (${tookMs.toFixed(0)} ms)`);
    }
  } finally {
    f.shim.stall(false);
    await f.shim.settle();
    await cluster.stop();
  }
});
