/**
 * Outage under load, across a real process boundary. SoftHSMv2 is served by `p11-kit server`;
 * the service (a separate process) reaches it through p11-kit's client module. 50 callers sign,
 * each at a steady 20 requests per second (1,000/s offered, about half of what one worker
 * sustains here: a saturating closed loop on two shared cores measures the machine's noise,
 * +-25% from one second to the next, not the recovery). The server and its per-connection
 * children are killed for 5 s (every call then fails with CKR_DEVICE_ERROR until the module is
 * finalized and initialized again) and a new server is started on the same socket.
 *
 * Three runs: one worker; the default configuration (one worker per CPU, each with its own HSM
 * connection); and the default with callers that ignore Retry-After and send again at once, so
 * the workers' event loops are busy answering 503s while they reconnect.
 */
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { availableParallelism } from 'node:os';
import { before, test, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { contractViolation, errorCode, eventually, percentile, perSecond, pacedLoops, rate, type Outcome } from '../support/faultService.js';
import { FaultFixture, sampleWhile } from '../support/faultFixture.js';
import { P11KitServer, p11kitMissing } from '../support/p11kit.js';

const CALLERS = 50;
const PER_CALLER_RATE = 20;
const SESSIONS = 16;
const KEY = 'outage-ec';
/** The issue's bounds. */
const BREAKER_ANSWER_MS = 50;
const RECOVERY_BOUND_MS = 5000;
const RECOVERED_SHARE = 0.9;
/**
 * The run's timeline: load starts, the rate before the fault is measured, the HSM is gone, then
 * back for as long as the recovery may take (every 1 s window ending by then is looked at).
 */
const TIMELINE_MS = { warmup: 2000, baseline: 3000, outage: 5000, after: RECOVERY_BOUND_MS } as const;

let server: P11KitServer;

interface OutageRun {
  /** WORKERS for the service; undefined: the default. */
  readonly workers?: string;
  /** Callers that send again at once after an error, as clients that ignore Retry-After do. */
  readonly noBackoff?: boolean;
}

before(() => {
  const missing = p11kitMissing();
  if (missing) throw new Error(`the outage test needs p11-kit's server and client module: ${missing}`);
});

const f = FaultFixture.use({
  key: KEY,
  setUp: async (token) => {
    server = new P11KitServer(join(token.dir, 'p11kit.sock'), token.label, { ...process.env, SOFTHSM2_CONF: token.conf });
    await server.start();
  },
  tearDown: async () => {
    await server?.stop();
  },
});

test('outage under load, one worker: the HSM connection is killed for 5 s and the service rides through it', { timeout: 90_000 }, (t) =>
  outage(t, { workers: '1' }),
);
test('outage under load, the default workers: each worker reconnects by itself', { timeout: 90_000 }, (t) => outage(t, {}));
test('outage under load, the default workers and callers that do not back off: reconnecting does not queue behind shedding', { timeout: 90_000 }, (t) =>
  outage(t, { noBackoff: true }),
);

async function outage(t: TestContext, run: OutageRun): Promise<void> {
  const s = await f.start(
    { env: server.clientEnv(), sessions: SESSIONS, logLevel: 'warn', ...(run.workers ? { workers: Number(run.workers) } : {}) },
    { maxSockets: CALLERS + 8 },
  );
  const workers = Number(run.workers ?? availableParallelism());
  const d = s.driver;
  const pidAtStart = s.pid;

  const outcomes: Outcome[] = [];
  const violations: string[] = [];
  const breakerLatencies: number[] = [];
  let badSignatures = 0;
  const states: { at: number; state: string }[] = [];

  let running = true;
  const loadStart = d.now();
  const sampler = sampleWhile(
    () => running,
    250,
    async () => {
      const r = await s.readyz().catch(() => undefined);
      const b = r?.body as { status?: string; breaker?: string; reason?: string } | undefined;
      states.push({ at: d.now() - loadStart, state: !r ? 'no answer' : b?.status === 'ready' ? `ready/${b.breaker}` : `${b?.breaker}: ${b?.reason ?? ''}` });
    },
  );

  const load = pacedLoops(
    CALLERS,
    PER_CALLER_RATE,
    () => running,
    async (caller, i) => {
      const { r, verified } = await f.sign(Buffer.from(`outage ${caller} ${i}`));
      const code = errorCode(r);
      const msg = (r.body as { error?: { message?: string } } | undefined)?.error?.message;
      outcomes.push({ start: r.start - loadStart, end: r.end - loadStart, status: r.status, code, message: msg });
      if (r.status === 200) {
        if (!verified) badSignatures++;
        return true;
      }
      const v = contractViolation(r);
      if (v) violations.push(v);
      if (msg?.includes('circuit breaker is open')) breakerLatencies.push(r.end - r.start);
      return false;
    },
    { retryAtOnce: run.noBackoff === true },
  );

  await sleep(TIMELINE_MS.warmup + TIMELINE_MS.baseline);
  const killAt = d.now() - loadStart;
  await server.kill();
  await sleep(TIMELINE_MS.outage);
  await server.start();
  const restoreAt = d.now() - loadStart;
  const restoreWall = Date.now();
  await sleep(TIMELINE_MS.after);
  running = false;
  await load;
  await sampler;
  const endAt = d.now() - loadStart;

  // The report: a line per second, then the figures the issue asks for.
  const baseline = rate(outcomes, TIMELINE_MS.warmup, TIMELINE_MS.warmup + TIMELINE_MS.baseline);
  const phase = (sec: number): string => {
    const [from, to] = [sec * 1000, (sec + 1) * 1000];
    if (to <= killAt) return from < TIMELINE_MS.warmup ? 'warm-up' : 'before';
    if (from < killAt) return 'HSM killed';
    if (to <= restoreAt) return 'OUTAGE';
    return from < restoreAt ? 'HSM back' : 'after';
  };
  t.diagnostic(
    `HSM killed at ${(killAt / 1000).toFixed(2)} s, back at ${(restoreAt / 1000).toFixed(2)} s; ${CALLERS} callers x ${PER_CALLER_RATE}/s = ${CALLERS * PER_CALLER_RATE}/s offered, ${SESSIONS} sessions, service pid ${s.pid}`,
  );
  t.diagnostic('  s | phase        |  2xx/s | 503 HSM_UNAVAILABLE | 503 OVERLOADED | 504 | other | /readyz at end of second');
  for (const row of perSecond(outcomes, 0, endAt)) {
    const state = [...states].reverse().find((x) => x.at < (row.second + 1) * 1000)?.state ?? '';
    t.diagnostic(
      `${String(row.second).padStart(3)} | ${phase(row.second).padEnd(12)} | ${String(row.ok).padStart(6)} | ${String(row.unavailable).padStart(19)} | ${String(row.overloaded).padStart(14)} | ${String(row.deadline).padStart(3)} | ${String(row.other).padStart(5)} | ${state}`,
    );
  }
  // Full throughput again: the first 1 s window after the HSM's return at >= 90% of the rate before the fault.
  let recoveredAt: number | undefined;
  for (let end = restoreAt + 100; end <= endAt; end += 50) {
    if (rate(outcomes, end - 1000, end) >= RECOVERED_SHARE * baseline) {
      recoveredAt = end;
      break;
    }
  }
  const recoveryMs = recoveredAt === undefined ? undefined : recoveredAt - restoreAt;
  const after = rate(outcomes, restoreAt + 3000, endAt);
  t.diagnostic(
    `throughput: before ${baseline.toFixed(0)}/s, during ${rate(outcomes, killAt + 500, restoreAt).toFixed(0)}/s, after (from +3 s) ${after.toFixed(0)}/s`,
  );
  t.diagnostic(
    `time from HSM return to >= ${RECOVERED_SHARE * 100}% throughput (1 s window): ${recoveryMs === undefined ? 'never' : `${recoveryMs.toFixed(0)} ms`}`,
  );
  t.diagnostic(
    `breaker-open answers: ${breakerLatencies.length}, latency p50 ${percentile(breakerLatencies, 50).toFixed(1)} ms, p90 ${percentile(breakerLatencies, 90).toFixed(1)} ms, p95 ${percentile(breakerLatencies, 95).toFixed(1)} ms, p99 ${percentile(breakerLatencies, 99).toFixed(1)} ms, max ${Math.max(...breakerLatencies).toFixed(1)} ms`,
  );
  const statuses = new Map<number, number>();
  for (const o of outcomes) statuses.set(o.status, (statuses.get(o.status) ?? 0) + 1);
  t.diagnostic(`answers: ${[...statuses].map(([k, v]) => `${k}: ${v}`).join(', ')}; signatures that did not verify: ${badSignatures}`);

  // Lose nothing, never a wrong result.
  assert.equal(badSignatures, 0, 'every 200 carries a signature that verifies');
  assert.deepEqual(
    [...statuses.keys()].filter((k) => ![200, 503, 504].includes(k)),
    [],
    'only 200, 503 and 504 (no 500)',
  );
  assert.deepEqual(violations.slice(0, 5), [], "every 503/504 has the contract's body (and Retry-After)");
  // The fault really happened, and the breaker did its job.
  assert.ok(
    outcomes.some((o) => o.code === 'HSM_UNAVAILABLE' && o.end > killAt && o.end < restoreAt),
    'the outage was visible to callers',
  );
  assert.ok(breakerLatencies.length > 0, 'the breaker opened');
  // p90, not the maximum: on two shared cores another process can stall any request for a while;
  // the tail is printed above.
  // Not with callers that never pause: then the loop is saturated with 503s by design, and their
  // latency measures the queue in front of it, not the breaker.
  if (!run.noBackoff) assert.ok(percentile(breakerLatencies, 90) < BREAKER_ANSWER_MS, `an open breaker answers within ${BREAKER_ANSWER_MS} ms (p90)`);
  assert.ok(
    states.some((x) => x.at > killAt && x.at < restoreAt && !x.state.startsWith('ready')),
    '/readyz reported the outage',
  );
  // And recovered by itself.
  assert.ok(baseline > 0);
  assert.ok(
    recoveryMs !== undefined && recoveryMs <= RECOVERY_BOUND_MS,
    `throughput back to ${RECOVERED_SHARE * 100}% within ${RECOVERY_BOUND_MS} ms of the HSM's return (took ${recoveryMs})`,
  );

  // No crash, and no leak: the pool, the calls and the HSM connections are back to normal.
  assert.ok(s.alive(), 'the service process is still running');
  assert.equal(s.pid, pidAtStart);
  const notNormal = await eventually(async () => {
    const r = await s.readyz();
    const b = r.body as { sessions: { inUse: number; idle: number; waiting: number; max: number }; callsInFlight: number; recoveries: number };
    if (r.status !== 200) return `readyz ${r.status} ${r.text}`;
    if (b.sessions.inUse !== 0 || b.sessions.waiting !== 0 || b.sessions.idle !== SESSIONS || b.callsInFlight !== 0) return `not back to normal: ${r.text}`;
    if (b.recoveries < 1) return `no recovery counted: ${r.text}`;
    return undefined;
  }, 5000);
  assert.equal(notNormal, undefined, notNormal);
  assert.equal(server.connections().length, workers, 'one connection to the HSM server per worker (the old ones are gone, no new ones leaked)');
  t.diagnostic(`after: ${(await s.readyz()).text}`);
  const byMessage = new Map<string, number>();
  const reconnectMs: number[] = [];
  const connectMs: number[] = [];
  for (const line of s.logs()) {
    const l = JSON.parse(line) as { msg?: string; time?: number; connectMs?: number };
    const msg = l.msg ?? '?';
    byMessage.set(msg, (byMessage.get(msg) ?? 0) + 1);
    if (msg === 'HSM connection re-established' && l.time !== undefined && l.time >= restoreWall - 1000) {
      reconnectMs.push(l.time - restoreWall);
      connectMs.push(l.connectMs ?? NaN);
    }
  }
  const firstOk = outcomes.filter((o) => o.status === 200 && o.end > restoreAt).reduce((m, o) => Math.min(m, o.end), Infinity) - restoreAt;
  t.diagnostic(
    `reconnected after the HSM's return, per worker: ${reconnectMs.map((ms, i) => `+${ms} ms (the successful attempt's PKCS#11 work: ${connectMs[i]} ms; the rest is its backoff)`).join(', ')}; first signature at +${firstOk.toFixed(0)} ms${run.noBackoff ? '; callers send again at once after a 503' : ''}`,
  );
  assert.equal(reconnectMs.length, workers, 'every worker logged its reconnection');
  t.diagnostic(`service log (warn and up), lines per message: ${[...byMessage].map(([m, k]) => `"${m}" x${k}`).join(', ')}`);
  // p11-kit's client keeps one connection per loaded instance: sessions must not cross HSM threads.
  assert.ok(
    [...byMessage.keys()].some((m) => m.includes('separate state per loaded instance')),
    'the service noticed and uses one HSM thread',
  );
  const threads = ((await s.readyz()).body as { threads: { configured: number; running: number; reason?: string } }).threads;
  assert.equal(threads.running, 1);
  assert.match(threads.reason ?? '', /separate state per loaded instance/, '/readyz says why one thread runs');
}
