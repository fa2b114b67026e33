/**
 * What the event loop (ThreadedPkcs11) and an HSM thread (pkcs11Thread) say to each other. Both
 * import this module; the thread runs alone, without the service's modules, so this one imports
 * only types and the pure NOT_A_CKR.
 */
import { NOT_A_CKR } from '../notACkr.js';
import type { Pkcs11CallError } from './AsyncPkcs11.js';
import type { TokenMissing } from './findToken.js';

/** The operations a thread runs; each is one or more PKCS#11 functions in one hop. */
export type ThreadOp =
  | 'initialize'
  | 'finalize'
  | 'connect'
  | 'getSlotList'
  | 'getTokenLabel'
  | 'openSession'
  | 'closeSession'
  | 'getSessionState'
  | 'login'
  | 'logout'
  | 'findObjects'
  | 'getAttributes'
  | 'findAndRead'
  | 'sign'
  | 'signMany'
  | 'verify'
  | 'generateKeyPair'
  | 'createObject'
  | 'destroyObject';

/**
 * The hot path's calls. The loop learns how long a call takes from these only (a batch, a key
 * scan or key generation would skew the average by orders of magnitude); the thread holds
 * answers back for these only, since anything else may take long.
 */
export const QUICK_OPS: ReadonlySet<ThreadOp> = new Set<ThreadOp>(['sign', 'verify']);

/** What each thread is started with: the module to load, and where to resolve pkcs11js from. */
export interface ThreadData {
  readonly modulePath: string;
  readonly requireFrom: string;
}

/** One call; the calls made in one turn of the event loop travel to a thread as one message (an array). */
export interface ThreadCall {
  readonly id: number;
  readonly op: ThreadOp;
  readonly args: unknown[];
}

/** A failed call as a value that crosses the thread boundary (no arguments, no stack). */
export interface CallError {
  readonly code: number;
  readonly method: string;
  readonly message: string;
  /** A sign that may have left an operation active on its session. */
  readonly operationOpen: boolean;
}

/** One answer, a result or an error (ok tells which); answers travel back as arrays too. */
export type ThreadReply = {
  readonly id: number;
  /** How long the call ran on the thread, in ms (the loop learns from it whether calls are quick or round trips). */
  readonly ms: number;
} & ({ readonly ok: true; readonly result: unknown } | { readonly ok: false; readonly error: CallError });

/** connect's answer (handles arrive as Uint8Arrays). */
export type ConnectReply = { readonly slot: Uint8Array; readonly loginSession: Uint8Array; readonly sessions: Uint8Array[] } | TokenMissing;

/** signMany's answer: the signatures made, and the failure that stopped it, if one did. */
export interface SignManyReply {
  readonly signatures: Uint8Array[];
  readonly error?: CallError;
}

/**
 * A thrown pkcs11js error, encoded. `codeOf` reads a CK_RV out of an error that carries it only in
 * its text (pkcs11js's own parser, which the thread has and this module must not load).
 */
export function encodeError(e: unknown, method: string, operationOpen: boolean, codeOf: (message: string) => number): CallError {
  const err = e as { code?: number; method?: string; message?: string };
  let code = err.code;
  // pkcs11js 2.1 throws the failures of C_CreateObject (and of C_SetAttributeValue and C_CopyObject,
  // which bypass its error wrapper) as a plain Error "CKR_TEMPLATE_INCONSISTENT:209", without the code.
  if (typeof code !== 'number' && e instanceof Error && !(e instanceof TypeError)) {
    const parsed = codeOf(e.message);
    if (parsed !== 0) code = parsed;
  }
  return { code: typeof code === 'number' ? code : NOT_A_CKR.BINDING_ERROR, method: err.method ?? method, message: String(err.message ?? e), operationOpen };
}

/** A failed PKCS#11 call on the loop's side: the CK_RV and the function that returned it. */
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

export function decodeError(e: CallError): Pkcs11Error {
  return new Pkcs11Error(e.code, e.method, e.operationOpen);
}
