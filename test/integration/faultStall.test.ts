/**
 * Issue #3, test 2: the HSM stops answering for 5 s (p11shim `stall=1`: every call blocks
 * without an error, like a hung network HSM) under 40 callers with a 500 ms deadline. 40 is
 * exactly what 8 sessions and a queue of 32 hold, so nothing is shed before the stall; during it
 * the sessions stay held by calls whose callers are gone, and the excess is refused at once.
 * Requests must end by their deadline, the waiting queue, the calls in flight and memory stay
 * bounded, and everything recovers once the HSM answers again.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { closedLoops, contractViolation, errorCode, eventually, percentile, perSecond, type Outcome } from '../support/faultService.js';
import { FaultFixture, sampleWhile } from '../support/faultFixture.js';

// WORKERS=1: the bounds checked here (one pool's sessions and waiters, the serving process's RSS) are per worker process.
const POOL = { workers: 1, sessions: 8, threads: 4, maxWaiting: 32, logLevel: 'warn' } as const;
const CALLERS = POOL.sessions + POOL.maxWaiting;
const DEADLINE_MS = 500;
const STALL_MS = 5000;
const KEY = 'stall-ec';
/** Slack for two processes sharing two noisy cores: the answer leaves the server at the deadline, the client sees it a little later. */
const LATE_MS = 250;
const RSS_GROWTH_MIB = 64;
/** Signing resumes within this long of the HSM answering again. */
const RESUME_MS = 2000;

const f = FaultFixture.use({ key: KEY, shim: true });

interface Sample {
  readonly at: number;
  readonly status: number;
  readonly reason?: string;
  readonly inUse: number;
  readonly waiting: number;
  readonly callsInFlight: number;
  readonly rss: number;
}

test('stall: the HSM stops answering for 5 s; requests end by their deadline, nothing grows without bound, all recovers', { timeout: 60_000 }, async (t) => {
  const s = await f.start(POOL, { maxSockets: CALLERS + 8 });
  const d = s.driver;
  const shim = f.shim;

  const outcomes: Outcome[] = [];
  const violations: string[] = [];
  let badSignatures = 0;
  const samples: Sample[] = [];
  let running = true;
  const t0 = d.now();

  const sampler = sampleWhile(
    () => running,
    200,
    async () => {
      const r = await s.readyz().catch(() => undefined);
      if (r) {
        const b = r.body as { reason?: string; sessions: { inUse: number; waiting: number }; callsInFlight: number };
        samples.push({
          at: d.now() - t0,
          status: r.status,
          ...(b.reason ? { reason: b.reason } : {}),
          inUse: b.sessions.inUse,
          waiting: b.sessions.waiting,
          callsInFlight: b.callsInFlight,
          rss: s.rssMiB(),
        });
      }
    },
  );

  const load = closedLoops(
    CALLERS,
    () => running,
    async (caller, i) => {
      const { r, verified } = await f.sign(Buffer.from(`stall ${caller} ${i}`), { 'X-Deadline-Ms': String(DEADLINE_MS) });
      outcomes.push({ start: r.start - t0, end: r.end - t0, status: r.status, code: errorCode(r) });
      if (r.status === 200) {
        if (!verified) badSignatures++;
        return true;
      }
      const v = contractViolation(r);
      if (v) violations.push(v);
      return false;
    },
    50,
  );

  await sleep(2000);
  const rssBefore = s.rssMiB();
  shim.stall(true);
  await shim.settle();
  const stallAt = d.now() - t0;
  await sleep(STALL_MS);
  shim.stall(false);
  await shim.settle();
  const resumeAt = d.now() - t0;
  // Long enough for the recovery check below (a signature within RESUME_MS of the HSM answering).
  await sleep(RESUME_MS + 500);
  running = false;
  await load;
  await sampler;
  const endAt = d.now() - t0;

  t.diagnostic(
    `stall from ${(stallAt / 1000).toFixed(2)} s to ${(resumeAt / 1000).toFixed(2)} s; ${CALLERS} callers, X-Deadline-Ms ${DEADLINE_MS}, HSM_SESSIONS ${POOL.sessions}, HSM_THREADS ${POOL.threads}, HSM_MAX_WAITING ${POOL.maxWaiting}`,
  );
  t.diagnostic('  s |  2xx | 503 OVERLOADED | 503 HSM_UNAVAILABLE | 504 | max waiting | max in use | max calls in flight | max RSS MiB | /readyz');
  for (const row of perSecond(outcomes, 0, endAt)) {
    const inSecond = samples.filter((x) => x.at >= row.second * 1000 && x.at < (row.second + 1) * 1000);
    const max = (f: (x: Sample) => number): string => (inSecond.length ? String(Math.max(...inSecond.map(f))) : '-');
    const last = inSecond[inSecond.length - 1];
    t.diagnostic(
      `${String(row.second).padStart(3)} | ${String(row.ok).padStart(4)} | ${String(row.overloaded).padStart(14)} | ${String(row.unavailable).padStart(19)} | ${String(row.deadline).padStart(3)} | ${max((x) => x.waiting).padStart(11)} | ${max((x) => x.inUse).padStart(10)} | ${max((x) => x.callsInFlight).padStart(19)} | ${max((x) => Math.round(x.rss)).padStart(11)} | ${last ? (last.status === 200 ? 'ready' : `503 ${last.reason}`) : ''}`,
    );
  }
  const failedLatency = outcomes.filter((o) => o.status !== 200).map((o) => o.end - o.start);
  const timedOut = outcomes.filter((o) => o.status === 504).map((o) => o.end - o.start);
  t.diagnostic(
    `504 latency: p50 ${percentile(timedOut, 50).toFixed(0)} ms, p99 ${percentile(timedOut, 99).toFixed(0)} ms, max ${Math.max(...timedOut).toFixed(0)} ms; all errors max ${Math.max(...failedLatency).toFixed(0)} ms`,
  );
  const during = samples.filter((x) => x.at > stallAt && x.at < resumeAt);
  const maxRss = Math.max(...during.map((x) => x.rss));
  t.diagnostic(`RSS before ${rssBefore.toFixed(0)} MiB, max during the stall ${maxRss.toFixed(0)} MiB`);

  assert.equal(badSignatures, 0, 'every 200 carries a signature that verifies');
  assert.deepEqual(
    outcomes
      .filter((o) => ![200, 503, 504].includes(o.status))
      .map((o) => o.status)
      .slice(0, 5),
    [],
    'only 200, 503 and 504',
  );
  assert.deepEqual(violations.slice(0, 5), [], "every 503/504 has the contract's body");
  // The stall was felt, and shed: waiting callers hit their deadline, the excess was refused at once.
  assert.ok(
    outcomes.some((o) => o.status === 504 && o.end > stallAt && o.end < resumeAt + DEADLINE_MS),
    'requests timed out during the stall',
  );
  assert.ok(
    outcomes.some((o) => o.code === 'OVERLOADED' && o.end > stallAt && o.end < resumeAt),
    'the bounded queue shed load during the stall',
  );
  // Nobody is held past the deadline.
  const late = outcomes.filter((o) => o.start > 1000 && o.end - o.start > DEADLINE_MS + LATE_MS);
  if (late.length)
    t.diagnostic(
      `answered more than ${LATE_MS} ms after the deadline: ${late
        .slice(0, 20)
        .map((o) => `${o.status} sent at ${(o.start / 1000).toFixed(3)} s took ${(o.end - o.start).toFixed(0)} ms`)
        .join('; ')}`,
    );
  assert.ok(
    late.length <= outcomes.length * 0.001,
    `${late.length} of ${outcomes.length} requests ended more than ${LATE_MS} ms after their deadline (worst ${Math.max(...late.map((o) => o.end - o.start), 0).toFixed(0)} ms)`,
  );
  // Bounded: the queue by HSM_MAX_WAITING, sessions by HSM_SESSIONS, calls by the sessions (each holds
  // one; the login session and a key scan may add one each). At most HSM_THREADS of them are inside
  // the module: each HSM thread runs one call at a time.
  assert.ok(during.length > 10);
  for (const x of during) {
    assert.ok(x.waiting <= POOL.maxWaiting, `waiting ${x.waiting} > ${POOL.maxWaiting}`);
    assert.ok(x.inUse <= POOL.sessions, `in use ${x.inUse} > ${POOL.sessions}`);
    assert.ok(x.callsInFlight <= POOL.sessions + 2, `calls in flight ${x.callsInFlight} > ${POOL.sessions + 2}`);
  }
  assert.ok(maxRss - rssBefore < RSS_GROWTH_MIB, `RSS grew by ${(maxRss - rssBefore).toFixed(0)} MiB during the stall`);
  assert.ok(
    during.some((x) => x.status === 503 && /not returned/.test(x.reason ?? '')),
    '/readyz reported the stall',
  );
  // Recovered: signing again within a second or two of the HSM answering, and the pool back to normal.
  assert.ok(
    outcomes.some((o) => o.status === 200 && o.start > resumeAt && o.end < resumeAt + RESUME_MS),
    'signing resumed after the stall',
  );
  const notNormal = await eventually(() => f.notBackToNormal(), 5000);
  assert.equal(notNormal, undefined, notNormal);
  assert.ok(s.alive(), 'the service process is still running');
});
