import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { NOT_A_CKR } from '../notACkr.js';
import type { ThreadsInfo } from './AsyncPkcs11.js';
import { decodeError, Pkcs11Error, QUICK_OPS, type ThreadCall, type ThreadData, type ThreadOp, type ThreadReply } from './threadProtocol.js';

interface Pending {
  resolve(value: unknown): void;
  reject(error: Error): void;
  thread: number;
  readonly startedAt: number;
  /** A quick op: only these teach the routing how long a call takes. */
  readonly quick: boolean;
}

/**
 * How much queued work (calls queued on a thread x their average duration) a thread may hold
 * before the next thread is used. Waking another thread costs context switches; queueing costs
 * latency: a local token's calls, a small fraction of this each, queue many deep on one thread;
 * round trips this long or longer go one per thread, so that they overlap.
 */
const SPILL_MS = 1;
/** A thread with work that has not answered for this long gets no more calls while another can take them (it may be stuck). */
const STUCK_MS = 5;

/**
 * The thread's code. Compiled (dist/), it is the .js beside this file, and its imports are files
 * beside it. From TypeScript sources (tsx), the thread file and the pure modules it imports are
 * bundled once per process with esbuild (tsx's own transpiler) and started as plain JavaScript:
 * registering tsx's loader in each thread would cost every thread a loader thread and tens of MB,
 * and a networked HSM wants dozens of threads. pkcs11js stays outside the bundle: the thread
 * loads it with require, resolved from this file.
 */
let bundled: URL | undefined;
function threadEntry(): URL {
  const own = new URL(import.meta.url);
  if (!own.pathname.endsWith('.ts')) return new URL('./pkcs11Thread.js', own);
  if (bundled) return bundled;
  const esbuild = createRequire(own)('esbuild') as typeof import('esbuild');
  const { outputFiles } = esbuild.buildSync({
    entryPoints: [fileURLToPath(new URL('./pkcs11Thread.ts', own))],
    bundle: true,
    write: false,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    external: ['pkcs11js'],
  });
  const [output] = outputFiles;
  if (output === undefined) throw new Error('esbuild gave no output file for pkcs11Thread.ts');
  bundled = new URL(`data:text/javascript,${encodeURIComponent(output.text)}`);
  return bundled;
}

/**
 * Runs PKCS#11 calls on a fixed set of threads. The number of threads is the number of HSM
 * calls that can be in flight at once in this process: against a networked HSM each one is a
 * round trip, so it is sized with the session pool (HSM_THREADS). A stalled HSM can hold at
 * most that many threads; everything else waits in JS, bounded by the session pool.
 *
 * Calls made in one turn of the event loop travel to a thread as one message (and its answers
 * come back together, at least every REPLY_EVERY_MS): under load the per-message cost (structured
 * clone, waking a sleeping thread, waking the loop again) is paid once per turn, not per call.
 */
export class HsmThreads {
  private readonly threads: Worker[] = [];
  private readonly load: number[] = [];
  private readonly outbox: ThreadCall[][] = [];
  private readonly pending = new Map<number, Pending>();
  private readonly entry = threadEntry();
  private nextId = 1;
  private flushScheduled = false;
  /** Moving average of how long a call runs on its thread (ms). */
  private callMs = 1;
  /** Per thread: when it last answered, or was given work while idle. */
  private readonly progressAt: number[] = [];
  private closed = false;

  /** Why fewer threads run than were configured, when they do. */
  private fewerThreadsReason: string | undefined;

  private constructor(
    private readonly modulePath: string,
    private readonly configured: number,
  ) {
    this.addThread();
  }

  private addThread(): number {
    const i = this.threads.length;
    this.threads.push(this.spawn(i));
    this.load.push(0);
    this.outbox.push([]);
    this.progressAt.push(0);
    return i;
  }

  private spawn(index: number): Worker {
    const { entry, modulePath } = this;
    // A data: URL module cannot resolve packages itself: it resolves pkcs11js from this file.
    // No resourceLimits: a thread keeps no state between calls that could grow, and V8 heap
    // limits this small make its garbage collector run often enough to cost signing throughput.
    const workerData: ThreadData = { modulePath, requireFrom: import.meta.url };
    const worker = new Worker(entry, { workerData });
    worker.unref();
    worker.on('message', (replies: ThreadReply[]) => {
      for (const reply of replies) this.settle(reply);
    });
    worker.on('error', () => undefined); // 'exit' follows and does the work
    worker.on('exit', () => this.onThreadExit(index, worker));
    return worker;
  }

  /**
   * Starts the threads and initializes the module in each (the first does the real C_Initialize).
   * A module that initializes afresh on a second thread keeps its state per loaded instance
   * (p11-kit-client.so opens one server connection per instance): a session opened on one
   * thread would be unknown on, or worse another session on, the next. Such a module gets one
   * thread, which loses nothing: p11-kit serves one connection's calls one at a time anyway.
   * The second thread tells, so the others are never started for it.
   */
  static async start(modulePath: string, threadCount: number, onWarning?: (message: string) => void): Promise<HsmThreads> {
    const p = new HsmThreads(modulePath, threadCount);
    try {
      await p.callOn(0, 'initialize', []);
      if (threadCount < 2) return p;
      const second = p.addThread();
      if ((await p.callOn(second, 'initialize', [])) === true) {
        await p.callOn(second, 'finalize', []).catch(() => undefined);
        const [extra] = p.threads.splice(second);
        await extra?.terminate();
        p.load.splice(second);
        p.outbox.splice(second);
        p.progressAt.splice(second);
        const reason =
          "the PKCS#11 module keeps separate state per loaded instance (e.g. p11-kit's client): one HSM thread per worker; more workers, not more threads, add HSM calls in flight";
        p.fewerThreadsReason = reason;
        onWarning?.(
          `the PKCS#11 module ${modulePath} keeps separate state per loaded instance (e.g. p11-kit's client): using 1 HSM thread instead of ${threadCount}`,
        );
        return p;
      }
      const rest: Promise<unknown>[] = [];
      for (let i = 2; i < threadCount; i++) rest.push(p.callOn(p.addThread(), 'initialize', []));
      await Promise.all(rest);
    } catch (e) {
      await p.close();
      throw e;
    }
    return p;
  }

  get threadCounts(): ThreadsInfo {
    const running = { configured: this.configured, running: this.threads.length };
    return this.fewerThreadsReason === undefined ? running : { ...running, reason: this.fewerThreadsReason };
  }

  get inFlight(): number {
    return this.pending.size;
  }

  /** How long the oldest unsettled call has been running: a stalled HSM keeps this growing. */
  get oldestCallAgeMs(): number {
    // A Map iterates in insertion order, and ids only grow: the first entry is the oldest call.
    const first = this.pending.values().next();
    return first.done ? 0 : performance.now() - first.value.startedAt;
  }

  private settle(reply: ThreadReply): void {
    const p = this.pending.get(reply.id);
    if (!p) return;
    this.pending.delete(reply.id);
    const load = this.load[p.thread];
    if (load === undefined) throw new Error(`HSM thread ${p.thread} has a pending call but no load count (a bug)`);
    this.load[p.thread] = load - 1;
    this.progressAt[p.thread] = performance.now();
    if (p.quick) this.callMs += (reply.ms - this.callMs) / 32;
    if (reply.ok) p.resolve(reply.result);
    else p.reject(decodeError(reply.error));
  }

  /**
   * A thread that dies takes its calls' outcomes with it: they fail as NOT_A_CKR.THREAD_EXITED (which the
   * KeyManager treats as a lost connection, so the module is re-initialized), and a new thread
   * takes its place so that calls routed to it do not wait forever.
   */
  private onThreadExit(index: number, worker: Worker): void {
    if (this.threads[index] !== worker) return;
    for (const [id, p] of this.pending) {
      if (p.thread !== index) continue;
      this.pending.delete(id);
      p.reject(this.closed ? new Error('PKCS#11 binding closed') : new Pkcs11Error(NOT_A_CKR.THREAD_EXITED, 'HSM thread'));
    }
    this.load[index] = 0;
    this.outbox[index] = [];
    if (this.closed) return;
    this.threads[index] = this.spawn(index);
    // Shared-state modules answer "already initialized"; if not, the KeyManager's recovery does it.
    this.callOn(index, 'initialize', []).catch(() => undefined);
  }

  private callOn(thread: number, op: ThreadOp, args: unknown[]): Promise<unknown> {
    if (this.closed) return Promise.reject(new Error('PKCS#11 binding closed'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const load = this.load[thread];
      const outbox = this.outbox[thread];
      if (load === undefined || outbox === undefined) throw new Error(`no HSM thread ${thread} to call ${op} on (a bug)`);
      const now = performance.now();
      this.pending.set(id, { resolve, reject, thread, startedAt: now, quick: QUICK_OPS.has(op) });
      this.load[thread] = load + 1;
      if (load === 0) this.progressAt[thread] = now;
      outbox.push({ id, op, args });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        // After this turn's I/O callbacks: every request read in this turn has made its call by then.
        setImmediate(this.flush);
      }
    });
  }

  private readonly flush = (): void => {
    this.flushScheduled = false;
    for (let i = 0; i < this.outbox.length; i++) {
      const calls = this.outbox[i];
      if (calls === undefined || calls.length === 0) continue;
      const thread = this.threads[i];
      if (thread === undefined) throw new Error(`HSM thread ${i} has an outbox but no thread (a bug)`);
      this.outbox[i] = [];
      thread.postMessage(calls);
    }
  };

  /**
   * The first thread whose queued work stays under SPILL_MS, else the least-loaded one: quick
   * calls (a local software token, tens of microseconds of CPU) share few threads, which take
   * queued calls without sleeping in between; slow ones (a networked HSM, each a round trip) are
   * spread so the threads overlap them. A thread that has stopped answering is passed over.
   */
  call(op: ThreadOp, args: unknown[]): Promise<unknown> {
    const now = performance.now();
    let best = -1;
    let bestLoad = 0;
    for (let i = 0; i < this.load.length; i++) {
      const load = this.load[i];
      const progressAt = this.progressAt[i];
      if (load === undefined || progressAt === undefined) throw new Error(`HSM thread ${i} has no load count or progress time (a bug)`);
      if (load > 0 && now - progressAt > STUCK_MS) continue;
      if (load * this.callMs < SPILL_MS) return this.callOn(i, op, args);
      if (best < 0 || load < bestLoad) {
        best = i;
        bestLoad = load;
      }
    }
    if (best < 0) {
      for (let i = 0; i < this.load.length; i++) {
        const load = this.load[i];
        if (load === undefined) throw new Error(`HSM thread ${i} has no load count (a bug)`);
        if (best < 0 || load < bestLoad) {
          best = i;
          bestLoad = load;
        }
      }
    }
    return this.callOn(best, op, args);
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.threads.map((t) => t.terminate()));
  }
}
