/**
 * An in-memory AsyncPkcs11 for KeyManager unit tests: two EC keys, a login, sessions, and the
 * failures a networked HSM shows. After C_Finalize the key handles are handed out anew, and
 * swapped: a handle kept from before then names the OTHER key, as a real module may do. Its
 * "signature" is the name of the key that made it, so a test can see which key was used.
 */
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import type {
  AsyncPkcs11,
  Attribute,
  ConnectRequest,
  ConnectResult,
  FoundObject,
  Handle,
  ObjectQuery,
  Mechanism,
  Pkcs11CallError,
  SignCall,
} from '../../../src/hsm/pkcs11/AsyncPkcs11.js';
import { P11 } from '../../../src/hsm/pkcs11/constants.js';
import { findToken } from '../../../src/hsm/pkcs11/findToken.js';
import { CKR } from '../../../src/hsm/errors.js';
import { ecParamsFor } from '../../../src/hsm/pkcs11/publicKey.js';
import { Pkcs11Error } from '../../../src/hsm/pkcs11/ThreadedPkcs11.js';

const P256_PARAMS = ecParamsFor('ECC_NIST_P256');

const ulong = (n: number): Buffer => {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(n, 0);
  return b;
};
const num = (h: Handle): number => h.readUInt32LE(0);

interface FakeKey {
  readonly name: string;
  readonly id: Buffer;
  readonly publicKey: KeyObject;
  readonly point: Buffer;
}

function makeKey(name: string, id: string): FakeKey {
  const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = publicKey.export({ format: 'jwk' });
  const point = Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x!, 'base64url'), Buffer.from(jwk.y!, 'base64url')]);
  return { name, id: Buffer.from(id), publicKey, point };
}

export class FakePkcs11 implements AsyncPkcs11 {
  readonly keys: FakeKey[] = [makeKey('a', 'id-a'), makeKey('b', 'id-b')];
  private initialized = false;
  /** Keys (by name) whose public-key object is not on the token (yet): another process is creating the pair. */
  readonly publicHidden = new Set<string>();
  /** The connection is down (like p11shim's down=1): calls fail until re-initialized while up. */
  down = false;
  private disconnected = false;
  private epoch = 0;
  private sessions = new Set<number>();
  private nextSession = 1;
  loggedIn = false;
  calls = new Map<string, number>();
  /** Failures to inject on the next sign calls, in order (undefined: that call succeeds). */
  readonly signFailures: (number | undefined)[] = [];
  /** When set, sign waits for it before answering (a slow or stalled HSM). */
  signGate: Promise<void> | undefined;
  private pending = 0;

  get inFlight(): number {
    return this.pending;
  }

  readonly oldestCallAgeMs = 0;

  private count(op: string): void {
    this.calls.set(op, (this.calls.get(op) ?? 0) + 1);
  }

  private guard(method: string): void {
    this.count(method);
    if (!this.initialized) throw new Pkcs11Error(CKR.CRYPTOKI_NOT_INITIALIZED, method);
    if (this.down) this.disconnected = true;
    if (this.disconnected) throw new Pkcs11Error(CKR.DEVICE_ERROR, method);
  }

  private session(method: string, s: Handle): void {
    this.guard(method);
    if (!this.sessions.has(num(s))) throw new Pkcs11Error(CKR.SESSION_HANDLE_INVALID, method);
  }

  /** Private key handle of key i in this epoch; the two keys swap numbers at every C_Finalize. */
  private privateHandle(i: number): number {
    return 100 + ((i + this.epoch) % 2) * 10;
  }

  private keyOf(handle: number): { key: FakeKey; isPrivate: boolean } | undefined {
    for (let i = 0; i < this.keys.length; i++) {
      if (handle === this.privateHandle(i)) return { key: this.keys[i]!, isPrivate: true };
      if (handle === this.privateHandle(i) + 1) return { key: this.keys[i]!, isPrivate: false };
    }
    return undefined;
  }

  async initialize(): Promise<void> {
    this.count('C_Initialize');
    if (this.initialized) return;
    this.initialized = true;
    if (!this.down) this.disconnected = false;
  }

  /** The same steps as the HSM thread's connect, through this fake's own calls (so their faults and counts apply). */
  async connect(req: ConnectRequest): Promise<ConnectResult> {
    if (req.finalizeFirst) await this.finalize();
    await this.initialize();
    const slots = await this.getSlotList();
    const label = await this.getTokenLabel();
    const found = findToken(slots, () => label, req);
    if ('noToken' in found) return found;
    const { slot } = found;
    const loginSession = await this.openSession();
    await this.login(loginSession).catch((e: unknown) => {
      if ((e as Pkcs11Error).code !== CKR.USER_ALREADY_LOGGED_IN) throw e;
    });
    const sessions: Handle[] = [];
    for (let i = 0; i < req.sessions; i++) sessions.push(await this.openSession());
    return { slot, loginSession, sessions };
  }

  async finalize(): Promise<void> {
    this.count('C_Finalize');
    this.initialized = false;
    this.sessions.clear();
    this.loggedIn = false;
    this.epoch++;
  }

  async getSlotList(): Promise<Handle[]> {
    this.guard('C_GetSlotList');
    return [ulong(1)];
  }

  async getTokenLabel(): Promise<string> {
    this.guard('C_GetTokenInfo');
    return 'tok';
  }

  async openSession(): Promise<Handle> {
    this.guard('C_OpenSession');
    const h = this.nextSession++;
    this.sessions.add(h);
    return ulong(h);
  }

  async closeSession(s: Handle): Promise<void> {
    this.session('C_CloseSession', s);
    this.sessions.delete(num(s));
  }

  /** Closes every session behind the application's back (and so logs out). */
  closeAllSessions(): void {
    this.sessions.clear();
    this.loggedIn = false;
  }

  async getSessionState(s: Handle): Promise<number> {
    this.session('C_GetSessionInfo', s);
    return this.loggedIn ? 3 : 2;
  }

  async login(s: Handle): Promise<void> {
    this.session('C_Login', s);
    if (this.loggedIn) throw new Pkcs11Error(CKR.USER_ALREADY_LOGGED_IN, 'C_Login');
    this.loggedIn = true;
  }

  async logout(): Promise<void> {
    this.count('C_Logout');
    this.loggedIn = false;
  }

  async findObjects(s: Handle, template: readonly Attribute[]): Promise<Handle[]> {
    this.session('C_FindObjects', s);
    const get = (type: number): Attribute['value'] => template.find((a) => a.type === type)?.value;
    const cls = get(P11.CKA_CLASS);
    const id = get(P11.CKA_ID) as Buffer | undefined;
    const matches = (k: FakeKey): boolean => id === undefined || k.id.equals(id);
    if (cls === P11.CKO_PRIVATE_KEY) {
      // Private objects are invisible to a session that is not logged in, as on a real token.
      if (!this.loggedIn) return [];
      return this.keys.flatMap((k, i) => (matches(k) ? [ulong(this.privateHandle(i))] : []));
    }
    if (cls === P11.CKO_PUBLIC_KEY)
      return this.keys.flatMap((k, i) => (matches(k) && !this.publicHidden.has(k.name) ? [ulong(this.privateHandle(i) + 1)] : []));
    return [];
  }

  async findAndRead(s: Handle, queries: readonly ObjectQuery[]): Promise<FoundObject[][]> {
    const found: FoundObject[][] = [];
    for (const q of queries) {
      const objects: FoundObject[] = [];
      for (const handle of (await this.findObjects(s, q.template)).slice(0, q.max ?? Infinity))
        objects.push({ handle, attributes: await this.getAttributes(s, handle, q.types) });
      found.push(objects);
    }
    return found;
  }

  async getAttributes(s: Handle, object: Handle, types: readonly number[]): Promise<Attribute[]> {
    this.session('C_GetAttributeValue', s);
    const found = this.keyOf(num(object));
    if (!found) throw new Pkcs11Error(CKR.OBJECT_HANDLE_INVALID, 'C_GetAttributeValue');
    const { key } = found;
    const value = (type: number): Buffer | undefined => {
      if (type === P11.CKA_LABEL) return Buffer.from(key.name);
      if (type === P11.CKA_ID) return key.id;
      if (type === P11.CKA_KEY_TYPE) return ulong(P11.CKK_EC);
      if (type === P11.CKA_EC_PARAMS) return P256_PARAMS;
      if (type === P11.CKA_EC_POINT) return Buffer.concat([Buffer.from([0x04, key.point.length]), key.point]);
      return undefined;
    };
    return types.map((type) => {
      const v = value(type);
      return v === undefined ? { type } : { type, value: v };
    });
  }

  async sign(s: Handle, _mechanism: Mechanism, key: Handle): Promise<Buffer> {
    this.pending++;
    try {
      if (this.signGate !== undefined) await this.signGate;
      this.session('C_Sign', s);
      const fail = this.signFailures.shift();
      if (fail !== undefined) throw new Pkcs11Error(fail, 'C_Sign');
      if (!this.loggedIn) throw new Pkcs11Error(CKR.USER_NOT_LOGGED_IN, 'C_SignInit');
      const found = this.keyOf(num(key));
      if (!found?.isPrivate) throw new Pkcs11Error(CKR.OBJECT_HANDLE_INVALID, 'C_SignInit');
      const sig = Buffer.alloc(64);
      sig.write(found.key.name);
      return sig;
    } finally {
      this.pending--;
    }
  }

  async signMany(s: Handle, items: readonly SignCall[]): Promise<{ signatures: Buffer[]; failure?: Pkcs11CallError }> {
    const signatures: Buffer[] = [];
    for (const item of items) {
      try {
        signatures.push(await this.sign(s, item.mechanism, item.key));
      } catch (e) {
        return { signatures, failure: e as Pkcs11CallError };
      }
    }
    return { signatures };
  }

  async verify(): Promise<boolean> {
    throw new Error('not used');
  }

  async generateKeyPair(): Promise<{ publicKey: Handle; privateKey: Handle }> {
    throw new Error('not used');
  }

  async createObject(): Promise<Handle> {
    throw new Error('not used');
  }

  async destroyObject(): Promise<void> {
    throw new Error('not used');
  }

  async close(): Promise<void> {
    // nothing to release
  }
}

/** Which key made a fake signature. */
export const signedBy = (signature: Buffer): string => signature.toString('utf8').replace(/\0+$/, '');
