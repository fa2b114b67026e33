import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import { NOT_A_CKR } from '../errors.js';
import type { AsyncPkcs11, Attribute, ConnectRequest, ConnectResult, FoundObject, Handle, Mechanism, ObjectQuery, Pkcs11CallError, SignCall, ThreadsInfo } from './AsyncPkcs11.js';

interface Pending {
  resolve(value: unknown): void;
  reject(error: Error): void;
  thread: number;
  readonly startedAt: number;
  /** A sign or verify: only these teach the thread rule how long a call takes. */
  readonly quick: boolean;
}

/** The hot path's calls; a batch, a key scan or key generation would skew the average by orders of magnitude. */
const QUICK_OPS: ReadonlySet<string> = new Set(['sign', 'verify']);

interface Call {
  readonly id: number;
  readonly op: string;
  readonly args: unknown[];
}

interface Reply {
  id: number;
  ok: boolean;
  result?: unknown;
  error?: { code: number; method: string; message: string; operationOpen: boolean };
  ms: number;
}

export class Pkcs11Error extends Error implements Pkcs11CallError {
  override readonly name = 'Pkcs11Error';
  constructor(
    readonly code: number,
    readonly method: string,
    readonly operationOpen = false,
  ) {
    // The native message carries nothing the code does not; never include arguments (a PIN).
    super(`${method} failed with CK_RV 0x${code.toString(16)}`);
  }
}

/** A Buffer cut from Node's shared 8 KB pool would be cloned to the thread whole: send only its bytes. */
function compact(b: Buffer): Buffer | Uint8Array {
  return b.byteLength === b.buffer.byteLength ? b : Uint8Array.prototype.slice.call(b);
}

type RawAttribute = { type: number; value?: unknown };

function toAttributes(attrs: RawAttribute[]): Attribute[] {
  return attrs.map((a) => ({ type: a.type, value: a.value instanceof Uint8Array ? toBuffer(a.value) : (a.value as Attribute['value']) }));
}

function toBuffer(value: unknown): Buffer {
  const v = value as Uint8Array;
  return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
}

/**
 * How much queued work (calls queued on a thread x their average duration) a thread may hold
 * before the next thread is used. Waking another thread costs context switches; queueing costs
 * latency: a local token's 0.07 ms calls fill one thread ~14 deep, round trips of 1 ms and more
 * go one per thread, so that they overlap.
 */
const SPILL_MS = 1;
/** A thread with work that has not answered for this long gets no more calls while another can take them (it may be stuck). */
const STUCK_MS = 5;

/**
 * The thread's code. Compiled (dist/), it is the .js beside this file. From TypeScript sources
 * (tsx), the thread file is transpiled once here with esbuild (tsx's own transpiler) and started
 * as plain JavaScript: registering tsx's loader in each thread would cost every thread a loader
 * thread and ~25 MB, and a networked HSM wants dozens of threads.
 */
function threadEntry(): URL {
  const own = new URL(import.meta.url);
  if (!own.pathname.endsWith('.ts')) return new URL('./pkcs11Thread.js', own);
  const require = createRequire(own);
  const esbuild = require('esbuild') as typeof import('esbuild');
  const source = readFileSync(new URL('./pkcs11Thread.ts', own), 'utf8');
  const { code } = esbuild.transformSync(source, { loader: 'ts', format: 'esm', target: 'node20' });
  return new URL(`data:text/javascript,${encodeURIComponent(code)}`);
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
export class ThreadedPkcs11 implements AsyncPkcs11 {
  private readonly threads: Worker[] = [];
  private readonly load: number[] = [];
  private readonly outbox: Call[][] = [];
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
    // No resourceLimits: with V8 heap limits on these threads (2 MB young, 32 MB old generation)
    // the load test measured 62.2% / 48.3% efficiency (RSA / ECDSA at 64 connections) against
    // 70.7% / 52.2% without; a thread keeps no state between calls that could grow.
    const worker = new Worker(entry, { workerData: { modulePath, requireFrom: import.meta.url } });
    worker.unref();
    worker.on('message', (replies: Reply[]) => {
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
  static async start(modulePath: string, threadCount: number, onWarning?: (message: string) => void): Promise<ThreadedPkcs11> {
    const p = new ThreadedPkcs11(modulePath, threadCount);
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
        const reason = 'the PKCS#11 module keeps separate state per loaded instance (e.g. p11-kit\'s client): one HSM thread per worker; more workers, not more threads, add HSM calls in flight';
        p.fewerThreadsReason = reason;
        onWarning?.(`the PKCS#11 module ${modulePath} keeps separate state per loaded instance (e.g. p11-kit's client): using 1 HSM thread instead of ${threadCount}`);
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

  private settle(reply: Reply): void {
    const p = this.pending.get(reply.id);
    if (!p) return;
    this.pending.delete(reply.id);
    this.load[p.thread]!--;
    this.progressAt[p.thread] = performance.now();
    if (p.quick) this.callMs += (reply.ms - this.callMs) / 32;
    if (reply.ok) p.resolve(reply.result);
    else p.reject(new Pkcs11Error(reply.error!.code, reply.error!.method, reply.error!.operationOpen));
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

  private callOn(thread: number, op: string, args: unknown[]): Promise<unknown> {
    if (this.closed) return Promise.reject(new Error('PKCS#11 binding closed'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const now = performance.now();
      this.pending.set(id, { resolve, reject, thread, startedAt: now, quick: QUICK_OPS.has(op) });
      if (this.load[thread]!++ === 0) this.progressAt[thread] = now;
      this.outbox[thread]!.push({ id, op, args });
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
      const calls = this.outbox[i]!;
      if (calls.length === 0) continue;
      this.outbox[i] = [];
      this.threads[i]!.postMessage(calls);
    }
  };

  /**
   * The first thread whose queued work stays under SPILL_MS, else the least-loaded one: quick
   * calls (a local software token, tens of microseconds of CPU) share few threads, which take
   * queued calls without sleeping in between; slow ones (a networked HSM, each a round trip) are
   * spread so the threads overlap them. A thread that has stopped answering is passed over.
   */
  private call(op: string, args: unknown[]): Promise<unknown> {
    const now = performance.now();
    let best = -1;
    for (let i = 0; i < this.load.length; i++) {
      const load = this.load[i]!;
      if (load > 0 && now - this.progressAt[i]! > STUCK_MS) continue;
      if (load * this.callMs < SPILL_MS) return this.callOn(i, op, args);
      if (best < 0 || load < this.load[best]!) best = i;
    }
    if (best < 0) for (let i = 0; i < this.load.length; i++) if (best < 0 || this.load[i]! < this.load[best]!) best = i;
    return this.callOn(best, op, args);
  }

  async finalize(): Promise<void> {
    await this.call('finalize', []);
  }

  async connect(req: ConnectRequest): Promise<ConnectResult> {
    const r = (await this.call('connect', [req])) as { slot: Uint8Array; loginSession: Uint8Array; sessions: Uint8Array[] } | { noToken: true; tokens: number };
    if ('noToken' in r) return r;
    return { slot: toBuffer(r.slot), loginSession: toBuffer(r.loginSession), sessions: r.sessions.map(toBuffer) };
  }

  async getSlotList(tokenPresent: boolean): Promise<Handle[]> {
    return ((await this.call('getSlotList', [tokenPresent])) as Uint8Array[]).map(toBuffer);
  }

  async getTokenLabel(slot: Handle): Promise<string> {
    return (await this.call('getTokenLabel', [slot])) as string;
  }

  async openSession(slot: Handle, flags: number): Promise<Handle> {
    return toBuffer(await this.call('openSession', [slot, flags]));
  }

  async closeSession(session: Handle): Promise<void> {
    await this.call('closeSession', [session]);
  }

  async getSessionState(session: Handle): Promise<number> {
    return (await this.call('getSessionState', [session])) as number;
  }

  async login(session: Handle, userType: number, pin: string): Promise<void> {
    await this.call('login', [session, userType, pin]);
  }

  async logout(session: Handle): Promise<void> {
    await this.call('logout', [session]);
  }

  async findObjects(session: Handle, template: readonly Attribute[], max = 100_000): Promise<Handle[]> {
    return ((await this.call('findObjects', [session, template, max])) as Uint8Array[]).map(toBuffer);
  }

  async getAttributes(session: Handle, object: Handle, types: readonly number[]): Promise<Attribute[]> {
    return toAttributes((await this.call('getAttributes', [session, object, types])) as RawAttribute[]);
  }

  async findAndRead(session: Handle, queries: readonly ObjectQuery[]): Promise<FoundObject[][]> {
    const found = (await this.call('findAndRead', [session, queries])) as { handle: Uint8Array; attributes: RawAttribute[] }[][];
    return found.map((objects) => objects.map((o) => ({ handle: toBuffer(o.handle), attributes: toAttributes(o.attributes) })));
  }

  async sign(session: Handle, mechanism: Mechanism, key: Handle, data: Buffer, maxSignatureLength: number): Promise<Buffer> {
    return toBuffer(await this.call('sign', [compact(session), mechanism, compact(key), compact(data), maxSignatureLength]));
  }

  async signMany(session: Handle, items: readonly SignCall[]): Promise<{ signatures: Buffer[]; failure?: Pkcs11CallError }> {
    const r = (await this.call('signMany', [compact(session), items.map((i) => [i.mechanism, compact(i.key), compact(i.data), i.maxSignatureLength])])) as {
      signatures: Uint8Array[];
      error?: { code: number; method: string; operationOpen: boolean };
    };
    const signatures = r.signatures.map(toBuffer);
    return r.error ? { signatures, failure: new Pkcs11Error(r.error.code, r.error.method, r.error.operationOpen) } : { signatures };
  }

  async verify(session: Handle, mechanism: Mechanism, key: Handle, data: Buffer, signature: Buffer): Promise<boolean> {
    return (await this.call('verify', [compact(session), mechanism, compact(key), compact(data), compact(signature)])) as boolean;
  }

  async generateKeyPair(session: Handle, mechanism: Mechanism, publicTemplate: readonly Attribute[], privateTemplate: readonly Attribute[]): Promise<{ publicKey: Handle; privateKey: Handle }> {
    const r = (await this.call('generateKeyPair', [session, mechanism, publicTemplate, privateTemplate])) as { publicKey: Uint8Array; privateKey: Uint8Array };
    return { publicKey: toBuffer(r.publicKey), privateKey: toBuffer(r.privateKey) };
  }

  async createObject(session: Handle, template: readonly Attribute[]): Promise<Handle> {
    return toBuffer(await this.call('createObject', [session, template]));
  }

  async destroyObject(session: Handle, object: Handle): Promise<void> {
    await this.call('destroyObject', [session, object]);
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.threads.map((t) => t.terminate()));
  }
}
