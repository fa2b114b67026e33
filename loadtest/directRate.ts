/**
 * The direct PKCS#11 rate: what the token does with no HTTP and no service in the way, measured
 * with as many processes as the service has workers (each process has its own PKCS#11 state, as
 * each service worker does), all started at the same moment. Note the path differs from the
 * service's: these processes use pkcs11js's own async calls on the libuv pool, the service runs
 * every call on worker threads of its own (ThreadedPkcs11).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { signatureLength, type SigningAlgorithm, type KeySpec } from '../src/crypto/algorithms.js';
import type { ChildMessage, DirectJob, ParentMessage, PracticeMeasurements } from './directRateWorker.js';
import type { DirectSetup } from './directToken.js';

const WORKER = fileURLToPath(new URL('./directRateWorker.ts', import.meta.url));

export interface DirectTarget {
  readonly modulePath: string;
  /** SOFTHSM2_CONF and, for the latency shim, P11SHIM_*. */
  readonly env: Record<string, string>;
  readonly tokenLabel: string;
  /** HSM_SLOT of an external HSM: the token by slot index instead of by label. */
  readonly slotIndex?: number;
  readonly pin: string;
  /** CKA_LABEL of the private key; the service's keys are labelled "<name>/v<version>". */
  readonly keyLabel: string;
  readonly keySpec: KeySpec;
  readonly algorithm: SigningAlgorithm;
}

interface Child {
  readonly proc: ChildProcess;
  next(): Promise<ChildMessage>;
}

function spawnChild(target: DirectTarget, threadpool: number): Child {
  const proc = fork(WORKER, [], {
    execArgv: ['--import', 'tsx'],
    env: { ...process.env, ...target.env, UV_THREADPOOL_SIZE: String(threadpool) },
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
  });
  let stderr = '';
  proc.stderr!.setEncoding('utf8');
  proc.stderr!.on('data', (d: string) => (stderr = (stderr + d).slice(-4000)));
  const queue: ChildMessage[] = [];
  const waiters: Array<{ resolve(m: ChildMessage): void; reject(e: Error): void }> = [];
  proc.on('message', (m: ChildMessage) => {
    const w = waiters.shift();
    if (w) w.resolve(m);
    else queue.push(m);
  });
  proc.on('exit', (code, signal) => {
    for (const w of waiters.splice(0)) w.reject(new Error(`direct-rate process exited (${code ?? signal}) early:\n${stderr.trim()}`));
  });
  return {
    proc,
    next: () => {
      const m = queue.shift();
      if (m) return Promise.resolve(m);
      if (proc.exitCode !== null || proc.signalCode !== null) return Promise.reject(new Error(`direct-rate process exited early:\n${stderr.trim()}`));
      return new Promise((resolve, reject) => waiters.push({ resolve, reject }));
    },
  };
}

function expect<T extends ChildMessage['type']>(m: ChildMessage, type: T): Extract<ChildMessage, { type: T }> {
  if (m.type === 'error') throw new Error(`direct PKCS#11 measurement failed: ${m.message}`);
  if (m.type !== type) throw new Error(`direct PKCS#11 measurement: expected ${type}, got ${m.type}`);
  return m as Extract<ChildMessage, { type: T }>;
}

function setupOf(t: DirectTarget): DirectSetup {
  return {
    modulePath: t.modulePath,
    tokenLabel: t.tokenLabel,
    ...(t.slotIndex !== undefined ? { slotIndex: t.slotIndex } : {}),
    pin: t.pin,
    keyLabel: t.keyLabel,
    algorithm: t.algorithm,
    signatureBytes: signatureLength(t.keySpec),
  };
}

async function runAll<T extends ChildMessage['type']>(
  target: DirectTarget,
  processes: number,
  threadpool: number,
  job: DirectJob,
  type: T,
): Promise<Extract<ChildMessage, { type: T }>[]> {
  const children = Array.from({ length: processes }, () => spawnChild(target, threadpool));
  try {
    const setup: ParentMessage = { type: 'setup', setup: setupOf(target), job };
    for (const c of children) c.proc.send(setup);
    for (const c of children) expect(await c.next(), 'ready');
    // Everyone starts together, so the processes overlap for the whole measurement.
    for (const c of children) c.proc.send({ type: 'go' } satisfies ParentMessage);
    const out: Extract<ChildMessage, { type: T }>[] = [];
    for (const c of children) out.push(expect(await c.next(), type));
    return out;
  } finally {
    for (const c of children) if (c.proc.exitCode === null) c.proc.kill();
  }
}

/** One in-flight setting of the direct rate, all processes together. */
export interface DirectRateTry {
  readonly inFlight: number;
  readonly opsPerSec: number;
  readonly cpuMsPerOp: number;
  /** C_SignInit to C_Sign's answer, ms: the slowest process's median and 99th percentile. */
  readonly p50Ms: number;
  readonly p99Ms: number;
}

export interface DirectRate {
  readonly opsPerSec: number;
  readonly processes: number;
  readonly inFlight: number;
  /** Every setting tried, for the report's notes. */
  readonly tried: readonly DirectRateTry[];
}

/** The best total rate over the in-flight settings (per process), all processes at once. */
export async function measureDirectRate(
  target: DirectTarget,
  o: { processes: number; inFlight: readonly number[]; threadpool: number; durationSec: number; warmupSec: number },
): Promise<DirectRate> {
  const tried: DirectRateTry[] = [];
  for (const inFlight of o.inFlight) {
    const results = await runAll(
      target,
      o.processes,
      o.threadpool,
      { kind: 'rate', inFlight, warmupMs: o.warmupSec * 1000, durationMs: o.durationSec * 1000 },
      'rate',
    );
    const ops = results.reduce((a, r) => a + r.ops, 0);
    tried.push({
      inFlight,
      opsPerSec: results.reduce((a, r) => a + r.ops / r.seconds, 0),
      cpuMsPerOp: ops > 0 ? (1000 * results.reduce((a, r) => a + r.cpuSec, 0)) / ops : 0,
      p50Ms: Math.max(...results.map((r) => r.p50Ms)),
      p99Ms: Math.max(...results.map((r) => r.p99Ms)),
    });
  }
  const best = tried.reduce((a, b) => (b.opsPerSec > a.opsPerSec ? b : a));
  return { opsPerSec: best.opsPerSec, processes: o.processes, inFlight: best.inFlight, tried };
}

/** The practice measurements in one process (see directRateWorker.ts). */
export async function measurePractices(target: DirectTarget, o: { inFlight: number; threadpool: number; durationSec: number }): Promise<PracticeMeasurements> {
  const [r] = await runAll(target, 1, o.threadpool, { kind: 'practices', inFlight: o.inFlight, durationMs: o.durationSec * 1000 }, 'practices');
  return r!.result;
}
