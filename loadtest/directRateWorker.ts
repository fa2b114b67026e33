/**
 * A child process that signs on the token with pkcs11js and nothing else: no HTTP, no service.
 * Forked by directRate.ts (one per service worker, with UV_THREADPOOL_SIZE set at spawn, since
 * pkcs11js runs C_SignAsync on the libuv pool). Two jobs:
 *  - rate: many operations in flight (C_SignInit + C_SignAsync per session) - the ceiling;
 *  - practices: the same token used the right way and the wrong way, one rule at a time.
 * It talks to its parent over IPC only; it never prints.
 */
import { P11 } from '../src/hsm/pkcs11/constants.js';
import { percentile } from '../testkit/percentile.js';
import { DirectToken as Token, type DirectSetup } from './directToken.js';

export type DirectJob =
  | { readonly kind: 'rate'; readonly inFlight: number; readonly warmupMs: number; readonly durationMs: number }
  | { readonly kind: 'practices'; readonly inFlight: number; readonly durationMs: number };

export interface PracticeMeasurements {
  /** ops/s with `inFlight` C_SignAsync outstanding. */
  readonly inFlight: number;
  /** ops/s of a plain loop, one synchronous C_SignInit + C_Sign at a time, logged in, cached handle, one session. */
  readonly sequential: number;
  readonly loginPerOp: number;
  readonly findPerOp: number;
  readonly sessionPerOp: number;
}

export type ParentMessage = { readonly type: 'setup'; readonly setup: DirectSetup; readonly job: DirectJob } | { readonly type: 'go' };
export type ChildMessage =
  | { readonly type: 'ready' }
  | { readonly type: 'rate'; readonly ops: number; readonly seconds: number; readonly cpuSec: number; readonly p50Ms: number; readonly p99Ms: number }
  | { readonly type: 'practices'; readonly result: PracticeMeasurements }
  | { readonly type: 'error'; readonly message: string };

/**
 * ops/s of `inFlight` lanes, each signing on its own session as fast as the module answers, and
 * the latency of each counted signature (C_SignInit to C_SignAsync's answer, event-loop delay included).
 */
async function asyncRate(
  t: Token,
  sessions: Buffer[],
  warmupMs: number,
  durationMs: number,
): Promise<{ ops: number; seconds: number; cpuSec: number; p50Ms: number; p99Ms: number }> {
  let counting = false;
  let ops = 0;
  let stop = false;
  const latencies: number[] = [];
  const lane = async (session: Buffer): Promise<void> => {
    const out = Buffer.allocUnsafe(t.setup.signatureBytes);
    while (!stop) {
      const started = performance.now();
      t.lib.C_SignInit(session, t.mechanism, t.key);
      await t.lib.C_SignAsync(session, t.data, out);
      if (counting) {
        ops++;
        latencies.push(performance.now() - started);
      }
    }
  };
  const lanes = sessions.map(lane);
  await new Promise((r) => setTimeout(r, warmupMs));
  counting = true;
  const started = performance.now();
  // The whole process, libuv pool included: what one signature costs in CPU without HTTP.
  const cpuStart = process.cpuUsage();
  await new Promise((r) => setTimeout(r, durationMs));
  const seconds = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpuStart);
  const counted = ops;
  stop = true;
  await Promise.all(lanes);
  const sorted = Float64Array.from(latencies.slice(0, counted)).sort();
  return { ops: counted, seconds, cpuSec: (cpu.user + cpu.system) / 1e6, p50Ms: percentile(sorted, 50), p99Ms: percentile(sorted, 99) };
}

/** ops/s of a synchronous loop of `op` for durationMs. */
function loopRate(durationMs: number, op: () => void): number {
  // A short untimed start so the first call's one-off costs do not count.
  const warmEnd = performance.now() + Math.min(200, durationMs / 5);
  while (performance.now() < warmEnd) op();
  let n = 0;
  const started = performance.now();
  const end = started + durationMs;
  while (performance.now() < end) {
    op();
    n++;
  }
  return n / ((performance.now() - started) / 1000);
}

async function practices(t: Token, inFlight: number, durationMs: number): Promise<PracticeMeasurements> {
  const warm = Math.min(300, durationMs / 4);
  const pool = t.openSessions(inFlight);
  const many = await asyncRate(t, pool, warm, durationMs);
  const session = pool[0]!;
  const sequential = loopRate(durationMs, () => t.signSync(session));
  const findPerOp = loopRate(durationMs, () => t.signSync(session, t.findKey(session)));
  const sessionPerOp = loopRate(durationMs, () => {
    const [s] = t.openSessions(1) as [Buffer];
    try {
      t.signSync(s);
    } finally {
      t.lib.C_CloseSession(s);
    }
  });
  // Login is per application: log out everywhere first, then each operation logs in and out
  // itself. A private key's handle does not survive a logout, so it has to be found again too.
  t.lib.C_Logout(t.loginSession);
  const loginPerOp = loopRate(durationMs, () => {
    t.lib.C_Login(session, P11.CKU_USER, t.setup.pin);
    try {
      t.signSync(session, t.findKey(session));
    } finally {
      t.lib.C_Logout(session);
    }
  });
  return { inFlight: many.ops / many.seconds, sequential, loginPerOp, findPerOp, sessionPerOp };
}

function send(m: ChildMessage): void {
  process.send?.(m);
}

let token: Token | undefined;
let job: DirectJob | undefined;
let sessions: Buffer[] = [];

process.on('message', (m: ParentMessage) => {
  void (async () => {
    try {
      if (m.type === 'setup') {
        token = new Token(m.setup);
        job = m.job;
        if (job.kind === 'rate') sessions = token.openSessions(job.inFlight);
        send({ type: 'ready' });
        return;
      }
      if (!token || !job) throw new Error('go before setup');
      if (job.kind === 'rate') {
        const r = await asyncRate(token, sessions, job.warmupMs, job.durationMs);
        send({ type: 'rate', ...r });
      } else {
        send({ type: 'practices', result: await practices(token, job.inFlight, job.durationMs) });
      }
      token.close();
      process.disconnect?.();
    } catch (e) {
      const err = e as { message?: string; code?: number };
      send({ type: 'error', message: `${err.message ?? String(e)}${typeof err.code === 'number' ? ` (CK_RV 0x${err.code.toString(16)})` : ''}` });
      token?.close();
      process.disconnect?.();
    }
  })();
});
