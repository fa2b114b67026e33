/**
 * One HSM thread. It owns a pkcs11js binding to the process-wide module and runs the calls
 * it is sent synchronously, one at a time, off the event loop. PKCS#11 state (initialization,
 * login, sessions, handles) is per process, so every thread sees the same sessions.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { createRequire } from 'node:module';
import type * as Pkcs11Types from 'pkcs11js';
// Besides types, the thread imports only pure modules (bundled with it when run from sources): no service code.
import type { ConnectRequest } from './AsyncPkcs11.js';
import { openToken, type TokenMissing } from './findToken.js';
import { encodeError, QUICK_OPS, type CallError, type ThreadCall, type ThreadData, type ThreadOp, type ThreadReply } from './threadProtocol.js';

const { modulePath, requireFrom } = workerData as ThreadData;
const pkcs11js = createRequire(requireFrom)('pkcs11js') as typeof Pkcs11Types;

const lib = new pkcs11js.PKCS11();
lib.load(modulePath);

/**
 * Returns false when the module was already initialized. A module whose state is per process
 * says so on every thread but the first; one whose state is per loaded instance (p11-kit's
 * client: one server connection per C_GetFunctionList) initializes afresh on every thread.
 */
function initialize(): boolean {
  try {
    // Default flags make SoftHSMv2 crash under concurrent calls: the module must use OS locking.
    lib.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
    return true;
  } catch (e) {
    if ((e as { code?: number }).code !== pkcs11js.CKR_CRYPTOKI_ALREADY_INITIALIZED) throw e;
    return false;
  }
}

function finalize(): void {
  try {
    lib.C_Finalize();
  } catch (e) {
    if ((e as { code?: number }).code !== pkcs11js.CKR_CRYPTOKI_NOT_INITIALIZED) throw e;
  }
}

/** AsyncPkcs11.connect: every step of (re)connecting in one message; a failure names its PKCS#11 function. */
function connect(req: ConnectRequest): { slot: Buffer; loginSession: Buffer; sessions: Buffer[] } | TokenMissing {
  if (req.finalizeFirst) finalize();
  initialize();
  const token = openToken(lib, pkcs11js, req, req.flags, req.pin);
  if ('noToken' in token) return token;
  const sessions: Buffer[] = [];
  for (let i = 0; i < req.sessions; i++) sessions.push(lib.C_OpenSession(token.slot, req.flags));
  return { ...token, sessions };
}

function findObjects(session: Buffer, template: Pkcs11Types.Template, max: number): Buffer[] {
  lib.C_FindObjectsInit(session, template);
  try {
    const found: Buffer[] = [];
    for (;;) {
      const batch = lib.C_FindObjects(session, Math.min(256, max - found.length));
      found.push(...batch);
      if (batch.length === 0 || found.length >= max) return found;
    }
  } finally {
    lib.C_FindObjectsFinal(session);
  }
}

/** AsyncPkcs11.findAndRead: each query's objects with their attributes, in one message. */
function findAndRead(
  session: Buffer,
  queries: { template: Pkcs11Types.Template; types: number[]; max?: number }[],
): { handle: Buffer; attributes: Pkcs11Types.Template }[][] {
  return queries.map((q) =>
    findObjects(session, q.template, q.max ?? 100_000).map((handle) => ({
      handle,
      attributes: lib.C_GetAttributeValue(
        session,
        handle,
        q.types.map((type) => ({ type })),
      ),
    })),
  );
}

let signInitDone = false;
function sign(session: Buffer, mechanism: Pkcs11Types.Mechanism, key: Buffer, data: Buffer, maxLen: number): Buffer {
  signInitDone = false;
  lib.C_SignInit(session, mechanism, key);
  signInitDone = true;
  // Not allocUnsafe: a pooled Buffer's answer would clone the whole 8 KB pool slab back to the loop.
  const signature = lib.C_Sign(session, data, Buffer.allocUnsafeSlow(maxLen));
  signInitDone = false;
  return signature;
}

/** pkcs11js's own Pkcs11Error reads the code out of an error's text, as it does for every other call. */
const codeOf = (message: string): number => new pkcs11js.Pkcs11Error(message).code;

function callError(e: unknown, method: string, operationOpen: boolean): CallError {
  return encodeError(e, method, operationOpen, codeOf);
}

/**
 * Signs several inputs on one session, one after another, and stops at the first failure: the
 * answer holds the signatures made before it, and that failure (as a value, with whether an
 * operation may have been left active).
 */
function signMany(session: Buffer, items: [Pkcs11Types.Mechanism, Buffer, Buffer, number][]): { signatures: Buffer[]; error?: CallError } {
  const signatures: Buffer[] = [];
  for (const [mechanism, key, data, maxLen] of items) {
    try {
      signatures.push(sign(session, mechanism, key, data, maxLen));
    } catch (e) {
      return { signatures, error: callError(e, 'C_Sign', signInitDone) };
    }
  }
  return { signatures };
}

function verify(session: Buffer, mechanism: Pkcs11Types.Mechanism, key: Buffer, data: Buffer, signature: Buffer): boolean {
  lib.C_VerifyInit(session, mechanism, key);
  try {
    return lib.C_Verify(session, data, signature);
  } catch (e) {
    const code = (e as { code?: number }).code;
    // An invalid signature is an answer, not a failure (and it ends the operation).
    if (code === pkcs11js.CKR_SIGNATURE_INVALID || code === pkcs11js.CKR_SIGNATURE_LEN_RANGE) return false;
    throw e;
  }
}

/** Any op, whatever its parameters (every parameter list accepts never[]). */
type Op = (...args: never[]) => unknown;
/** How run calls an op: with the arguments the loop sent, which the protocol makes the op's own. */
type Invoke = (...args: unknown[]) => unknown;
const ops: Record<ThreadOp, Op> = {
  initialize,
  finalize,
  connect,
  getSlotList: (present: boolean) => lib.C_GetSlotList(present),
  getTokenLabel: (slot: Buffer) => lib.C_GetTokenInfo(slot).label.trim(),
  openSession: (slot: Buffer, flags: number) => lib.C_OpenSession(slot, flags),
  closeSession: (session: Buffer) => lib.C_CloseSession(session),
  getSessionState: (session: Buffer) => lib.C_GetSessionInfo(session).state,
  login: (session: Buffer, userType: number, pin: string) => lib.C_Login(session, userType, pin),
  logout: (session: Buffer) => lib.C_Logout(session),
  findObjects,
  getAttributes: (session: Buffer, object: Buffer, types: number[]) =>
    lib.C_GetAttributeValue(
      session,
      object,
      types.map((type) => ({ type })),
    ),
  findAndRead,
  sign,
  signMany,
  verify,
  generateKeyPair: (session: Buffer, mech: Pkcs11Types.Mechanism, pub: Pkcs11Types.Template, priv: Pkcs11Types.Template) =>
    lib.C_GenerateKeyPair(session, mech, pub, priv),
  createObject: (session: Buffer, template: Pkcs11Types.Template) => lib.C_CreateObject(session, template),
  destroyObject: (session: Buffer, object: Buffer) => lib.C_DestroyObject(session, object),
};

// Values cross the thread boundary by structured clone: Buffers arrive as Uint8Arrays.
function revive(value: unknown): unknown {
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  if (Array.isArray(value)) return value.map(revive);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, revive(v)]));
  }
  return value;
}

/**
 * Answers go back together, but not held longer than this: against a networked HSM, where each
 * call takes a round trip, every answer leaves as soon as it is known.
 */
const REPLY_EVERY_MS = 0.5;
function run(req: ThreadCall): ThreadReply {
  const op = ops[req.op] as Invoke | undefined;
  const start = performance.now();
  try {
    if (!op) throw Object.assign(new Error(`unknown op ${req.op}`), { method: req.op });
    const result = op(...req.args.map(revive));
    return { id: req.id, ok: true, result, ms: performance.now() - start };
  } catch (e) {
    return { id: req.id, ok: false, error: callError(e, req.op, req.op === 'sign' && signInitDone), ms: performance.now() - start };
  }
}

const port = parentPort;
if (port === null) throw new Error('pkcs11Thread runs only as a worker thread (parentPort is null)');

port.on('message', (calls: ThreadCall[]) => {
  let replies: ThreadReply[] = [];
  let since = performance.now();
  for (const call of calls) {
    // Answers held so far leave before a kind of call that may be slow (a batch, key generation),
    // so a quick answer does not wait behind it; behind a sign it waits at most that one sign.
    if (replies.length > 0 && !QUICK_OPS.has(call.op)) {
      port.postMessage(replies);
      replies = [];
      since = performance.now();
    }
    replies.push(run(call));
    const now = performance.now();
    if (now - since >= REPLY_EVERY_MS) {
      port.postMessage(replies);
      replies = [];
      since = now;
    }
  }
  if (replies.length > 0) port.postMessage(replies);
});
