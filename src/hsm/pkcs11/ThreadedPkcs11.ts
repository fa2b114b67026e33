import { Worker } from 'node:worker_threads';
import type { AsyncPkcs11, Attribute, Handle, Mechanism, Pkcs11CallError } from './AsyncPkcs11.js';

interface Pending {
  resolve(value: unknown): void;
  reject(error: Error): void;
  thread: number;
}

interface Reply {
  id: number;
  ok: boolean;
  result?: unknown;
  error?: { code: number; method: string; message: string; operationOpen: boolean };
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

function toBuffer(value: unknown): Buffer {
  const v = value as Uint8Array;
  return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
}

function threadEntry(): { url: URL; eval: boolean; source?: string } {
  const url = new URL(import.meta.url.endsWith('.ts') ? './pkcs11Thread.ts' : './pkcs11Thread.js', import.meta.url);
  if (!import.meta.url.endsWith('.ts')) return { url, eval: false };
  // Running from TypeScript sources (tsx): a worker does not inherit the loader, so register it first.
  const tsxApi = import.meta.resolve('tsx/esm/api');
  return {
    url,
    eval: true,
    source: `import(${JSON.stringify(tsxApi)}).then((api) => { api.register(); return import(${JSON.stringify(url.href)}); })`,
  };
}

/**
 * Runs PKCS#11 calls on a fixed set of threads. The number of threads is the number of HSM
 * calls that can be in flight at once in this process: against a networked HSM each one is a
 * round trip, so it is sized with the session pool (HSM_THREADS).
 */
export class ThreadedPkcs11 implements AsyncPkcs11 {
  private readonly threads: Worker[] = [];
  private readonly load: number[] = [];
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private closed = false;

  private constructor(modulePath: string, threadCount: number) {
    const entry = threadEntry();
    for (let i = 0; i < threadCount; i++) {
      const worker = entry.eval
        ? new Worker(entry.source!, { eval: true, workerData: { modulePath } })
        : new Worker(entry.url, { workerData: { modulePath } });
      worker.unref();
      worker.on('message', (reply: Reply) => this.settle(reply));
      worker.on('error', (err) => this.failThread(i, err));
      worker.on('exit', (code) => this.failThread(i, new Error(`HSM thread exited with code ${code}`)));
      this.threads.push(worker);
      this.load.push(0);
    }
  }

  /** Starts the threads and initializes the module in each (the first does the real C_Initialize). */
  static async start(modulePath: string, threadCount: number): Promise<ThreadedPkcs11> {
    const p = new ThreadedPkcs11(modulePath, threadCount);
    for (let i = 0; i < threadCount; i++) await p.callOn(i, 'initialize', []);
    return p;
  }

  get inFlight(): number {
    return this.pending.size;
  }

  private settle(reply: Reply): void {
    const p = this.pending.get(reply.id);
    if (!p) return;
    this.pending.delete(reply.id);
    this.load[p.thread]!--;
    if (reply.ok) p.resolve(reply.result);
    else p.reject(new Pkcs11Error(reply.error!.code, reply.error!.method, reply.error!.operationOpen));
  }

  private failThread(index: number, err: Error): void {
    for (const [id, p] of this.pending) {
      if (p.thread !== index) continue;
      this.pending.delete(id);
      p.reject(this.closed ? new Error('PKCS#11 binding closed') : err);
    }
  }

  private callOn(thread: number, op: string, args: unknown[]): Promise<unknown> {
    if (this.closed) return Promise.reject(new Error('PKCS#11 binding closed'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, thread });
      this.load[thread]!++;
      this.threads[thread]!.postMessage({ id, op, args });
    });
  }

  private call(op: string, args: unknown[]): Promise<unknown> {
    // Least-loaded thread: a thread stuck in a slow call does not delay the others' work.
    let best = 0;
    for (let i = 1; i < this.load.length; i++) if (this.load[i]! < this.load[best]!) best = i;
    return this.callOn(best, op, args);
  }

  async initialize(): Promise<void> {
    await this.call('initialize', []);
  }

  async finalize(): Promise<void> {
    await this.call('finalize', []);
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
    const attrs = (await this.call('getAttributes', [session, object, types])) as { type: number; value?: unknown }[];
    return attrs.map((a) => ({ type: a.type, value: a.value instanceof Uint8Array ? toBuffer(a.value) : (a.value as Attribute['value']) }));
  }

  async sign(session: Handle, mechanism: Mechanism, key: Handle, data: Buffer, maxSignatureLength: number): Promise<Buffer> {
    return toBuffer(await this.call('sign', [session, mechanism, key, data, maxSignatureLength]));
  }

  async verify(session: Handle, mechanism: Mechanism, key: Handle, data: Buffer, signature: Buffer): Promise<boolean> {
    return (await this.call('verify', [session, mechanism, key, data, signature])) as boolean;
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
