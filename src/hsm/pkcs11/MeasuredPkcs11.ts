import type { HsmMetrics } from '../HsmMetrics.js';
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
import { P11 } from './constants.js';

/** CKM_* number -> name, from pkcs11js's constants: a bounded label (an unknown number is 'other'). */
const MECHANISM_NAMES = new Map<number, string>();
for (const [name, value] of Object.entries(P11)) {
  if (name.startsWith('CKM_') && typeof value === 'number' && !MECHANISM_NAMES.has(value)) MECHANISM_NAMES.set(value, name);
}
const mechanismName = (m: Mechanism): string => MECHANISM_NAMES.get(m.mechanism) ?? 'other';

/** A batch's mechanism: the items' one, or 'mixed'. */
function batchMechanism(items: readonly SignCall[]): string {
  const names = new Set(items.map((i) => mechanismName(i.mechanism)));
  return names.size === 1 ? ([...names][0] ?? 'none') : names.size === 0 ? 'none' : 'mixed';
}

/**
 * AsyncPkcs11 that times every call of the one it wraps into HsmMetrics. The `operation` label is
 * the PKCS#11 function family of the method: connect (C_Initialize, login, sessions, as one call),
 * finalize, slot (C_GetSlotList, C_GetTokenInfo), session (C_OpenSession, C_CloseSession,
 * C_GetSessionInfo), login, logout, find (C_FindObjects*, with attribute reads in findAndRead),
 * attributes, sign, sign_batch (several C_SignInit + C_Sign in one call: its duration is the
 * batch's), verify, generate, create, destroy.
 */
export class MeasuredPkcs11 implements AsyncPkcs11 {
  constructor(
    private readonly inner: AsyncPkcs11,
    private readonly metrics: HsmMetrics,
  ) {}

  private timed<T>(operation: string, mechanism: string, call: Promise<T>): Promise<T> {
    const start = process.hrtime.bigint();
    const seconds = (): number => Number(process.hrtime.bigint() - start) / 1e9;
    return call.then(
      (v) => {
        this.metrics.hsmCall(operation, mechanism, seconds(), true);
        return v;
      },
      (e: unknown) => {
        this.metrics.hsmCall(operation, mechanism, seconds(), false);
        throw e;
      },
    );
  }

  get inFlight(): number {
    return this.inner.inFlight;
  }

  get oldestCallAgeMs(): number | undefined {
    return this.inner.oldestCallAgeMs;
  }

  get threadCounts(): ThreadsInfo | undefined {
    return this.inner.threadCounts;
  }

  async connect(req: ConnectRequest): Promise<ConnectResult> {
    const r = await this.timed('connect', 'none', this.inner.connect(req));
    if (!('noToken' in r)) this.metrics.moduleInitialized(req.finalizeFirst ? 'recovery' : 'start');
    return r;
  }

  finalize(): Promise<void> {
    return this.timed('finalize', 'none', this.inner.finalize());
  }

  getSlotList(tokenPresent: boolean): Promise<Handle[]> {
    return this.timed('slot', 'none', this.inner.getSlotList(tokenPresent));
  }

  getTokenLabel(slot: Handle): Promise<string> {
    return this.timed('slot', 'none', this.inner.getTokenLabel(slot));
  }

  openSession(slot: Handle, flags: number): Promise<Handle> {
    return this.timed('session', 'none', this.inner.openSession(slot, flags));
  }

  closeSession(session: Handle): Promise<void> {
    return this.timed('session', 'none', this.inner.closeSession(session));
  }

  getSessionState(session: Handle): Promise<number> {
    return this.timed('session', 'none', this.inner.getSessionState(session));
  }

  login(session: Handle, userType: number, pin: string): Promise<void> {
    return this.timed('login', 'none', this.inner.login(session, userType, pin));
  }

  logout(session: Handle): Promise<void> {
    return this.timed('logout', 'none', this.inner.logout(session));
  }

  findObjects(session: Handle, template: readonly Attribute[], max?: number): Promise<Handle[]> {
    return this.timed('find', 'none', this.inner.findObjects(session, template, max));
  }

  getAttributes(session: Handle, object: Handle, types: readonly number[]): Promise<Attribute[]> {
    return this.timed('attributes', 'none', this.inner.getAttributes(session, object, types));
  }

  findAndRead(session: Handle, queries: readonly ObjectQuery[]): Promise<FoundObject[][]> {
    return this.timed('find', 'none', this.inner.findAndRead(session, queries));
  }

  sign(session: Handle, mechanism: Mechanism, key: Handle, data: Buffer, maxSignatureLength: number): Promise<Buffer> {
    return this.timed('sign', mechanismName(mechanism), this.inner.sign(session, mechanism, key, data, maxSignatureLength));
  }

  async signMany(session: Handle, items: readonly SignCall[]): Promise<{ signatures: Buffer[]; failure?: Pkcs11CallError }> {
    const mechanism = batchMechanism(items);
    const start = process.hrtime.bigint();
    const seconds = (): number => Number(process.hrtime.bigint() - start) / 1e9;
    try {
      const r = await this.inner.signMany(session, items);
      // A failure inside the batch is a value, not a rejection: an error all the same.
      this.metrics.hsmCall('sign_batch', mechanism, seconds(), r.failure === undefined);
      return r;
    } catch (e) {
      this.metrics.hsmCall('sign_batch', mechanism, seconds(), false);
      throw e;
    }
  }

  verify(session: Handle, mechanism: Mechanism, key: Handle, data: Buffer, signature: Buffer): Promise<boolean> {
    return this.timed('verify', mechanismName(mechanism), this.inner.verify(session, mechanism, key, data, signature));
  }

  generateKeyPair(
    session: Handle,
    mechanism: Mechanism,
    publicTemplate: readonly Attribute[],
    privateTemplate: readonly Attribute[],
  ): Promise<{ publicKey: Handle; privateKey: Handle }> {
    return this.timed('generate', mechanismName(mechanism), this.inner.generateKeyPair(session, mechanism, publicTemplate, privateTemplate));
  }

  createObject(session: Handle, template: readonly Attribute[]): Promise<Handle> {
    return this.timed('create', 'none', this.inner.createObject(session, template));
  }

  destroyObject(session: Handle, object: Handle): Promise<void> {
    return this.timed('destroy', 'none', this.inner.destroyObject(session, object));
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
