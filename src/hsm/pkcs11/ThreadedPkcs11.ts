import type {
  AsyncPkcs11,
  Attribute,
  ConnectRequest,
  ConnectResult,
  FoundObject,
  Handle,
  Mechanism,
  ObjectQuery,
  Pkcs11CallError,
  SignCall,
  ThreadsInfo,
} from './AsyncPkcs11.js';
import { HsmThreads } from './HsmThreads.js';
import { decodeError, type ConnectReply, type SignManyReply } from './threadProtocol.js';

export { Pkcs11Error } from './threadProtocol.js';

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
 * AsyncPkcs11 on HSM threads (HsmThreads): each method is one message to a thread. Values cross
 * the boundary by structured clone, so handles and data come back as Uint8Arrays and are viewed
 * as Buffers again here.
 */
export class ThreadedPkcs11 implements AsyncPkcs11 {
  private constructor(private readonly threads: HsmThreads) {}

  /** Starts the threads and initializes the module on them (see HsmThreads.start). */
  static async start(modulePath: string, threadCount: number, onWarning?: (message: string) => void): Promise<ThreadedPkcs11> {
    return new ThreadedPkcs11(await HsmThreads.start(modulePath, threadCount, onWarning));
  }

  get threadCounts(): ThreadsInfo {
    return this.threads.threadCounts;
  }

  get inFlight(): number {
    return this.threads.inFlight;
  }

  /** How long the oldest unsettled call has been running: a stalled HSM keeps this growing. */
  get oldestCallAgeMs(): number {
    return this.threads.oldestCallAgeMs;
  }

  async finalize(): Promise<void> {
    await this.threads.call('finalize', []);
  }

  async connect(req: ConnectRequest): Promise<ConnectResult> {
    const r = (await this.threads.call('connect', [req])) as ConnectReply;
    if ('noToken' in r) return r;
    return { slot: toBuffer(r.slot), loginSession: toBuffer(r.loginSession), sessions: r.sessions.map(toBuffer) };
  }

  async getSlotList(tokenPresent: boolean): Promise<Handle[]> {
    return ((await this.threads.call('getSlotList', [tokenPresent])) as Uint8Array[]).map(toBuffer);
  }

  async getTokenLabel(slot: Handle): Promise<string> {
    return (await this.threads.call('getTokenLabel', [slot])) as string;
  }

  async openSession(slot: Handle, flags: number): Promise<Handle> {
    return toBuffer(await this.threads.call('openSession', [slot, flags]));
  }

  async closeSession(session: Handle): Promise<void> {
    await this.threads.call('closeSession', [session]);
  }

  async getSessionState(session: Handle): Promise<number> {
    return (await this.threads.call('getSessionState', [session])) as number;
  }

  async login(session: Handle, userType: number, pin: string): Promise<void> {
    await this.threads.call('login', [session, userType, pin]);
  }

  async logout(session: Handle): Promise<void> {
    await this.threads.call('logout', [session]);
  }

  async findObjects(session: Handle, template: readonly Attribute[], max = 100_000): Promise<Handle[]> {
    return ((await this.threads.call('findObjects', [session, template, max])) as Uint8Array[]).map(toBuffer);
  }

  async getAttributes(session: Handle, object: Handle, types: readonly number[]): Promise<Attribute[]> {
    return toAttributes((await this.threads.call('getAttributes', [session, object, types])) as RawAttribute[]);
  }

  async findAndRead(session: Handle, queries: readonly ObjectQuery[]): Promise<FoundObject[][]> {
    const found = (await this.threads.call('findAndRead', [session, queries])) as { handle: Uint8Array; attributes: RawAttribute[] }[][];
    return found.map((objects) => objects.map((o) => ({ handle: toBuffer(o.handle), attributes: toAttributes(o.attributes) })));
  }

  async sign(session: Handle, mechanism: Mechanism, key: Handle, data: Buffer, maxSignatureLength: number): Promise<Buffer> {
    return toBuffer(await this.threads.call('sign', [compact(session), mechanism, compact(key), compact(data), maxSignatureLength]));
  }

  async signMany(session: Handle, items: readonly SignCall[]): Promise<{ signatures: Buffer[]; failure?: Pkcs11CallError }> {
    const r = (await this.threads.call('signMany', [
      compact(session),
      items.map((i) => [i.mechanism, compact(i.key), compact(i.data), i.maxSignatureLength]),
    ])) as SignManyReply;
    const signatures = r.signatures.map(toBuffer);
    return r.error ? { signatures, failure: decodeError(r.error) } : { signatures };
  }

  async verify(session: Handle, mechanism: Mechanism, key: Handle, data: Buffer, signature: Buffer): Promise<boolean> {
    return (await this.threads.call('verify', [compact(session), mechanism, compact(key), compact(data), compact(signature)])) as boolean;
  }

  async generateKeyPair(
    session: Handle,
    mechanism: Mechanism,
    publicTemplate: readonly Attribute[],
    privateTemplate: readonly Attribute[],
  ): Promise<{ publicKey: Handle; privateKey: Handle }> {
    const r = (await this.threads.call('generateKeyPair', [session, mechanism, publicTemplate, privateTemplate])) as {
      publicKey: Uint8Array;
      privateKey: Uint8Array;
    };
    return { publicKey: toBuffer(r.publicKey), privateKey: toBuffer(r.privateKey) };
  }

  async createObject(session: Handle, template: readonly Attribute[]): Promise<Handle> {
    return toBuffer(await this.threads.call('createObject', [session, template]));
  }

  async destroyObject(session: Handle, object: Handle): Promise<void> {
    await this.threads.call('destroyObject', [session, object]);
  }

  close(): Promise<void> {
    return this.threads.close();
  }
}
