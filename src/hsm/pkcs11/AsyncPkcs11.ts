/**
 * The narrow, asynchronous seam to the native PKCS#11 library: only the calls the service
 * uses. The real implementation (ThreadedPkcs11) runs each call on a dedicated thread, so a
 * slow or networked HSM never blocks the event loop; unit tests substitute a fake.
 *
 * Handles are opaque byte strings (pkcs11js's representation).
 */
import type { TokenMissing, TokenSelector } from './findToken.js';

export type Handle = Buffer;

export interface Attribute {
  readonly type: number;
  readonly value?: Buffer | number | boolean | string;
}

export interface Mechanism {
  readonly mechanism: number;
  readonly parameter?: Record<string, unknown> | Buffer;
}

export interface SignCall {
  readonly mechanism: Mechanism;
  readonly key: Handle;
  readonly data: Buffer;
  readonly maxSignatureLength: number;
}

/** A failed call: `code` is the CK_RV. `operationOpen` marks a sign that may have left an operation active. */
export interface Pkcs11CallError extends Error {
  readonly code: number;
  readonly method: string;
  readonly operationOpen?: boolean;
}

/** HSM threads: how many were configured, how many run, and why fewer run when they do. */
export interface ThreadsInfo {
  readonly configured: number;
  readonly running: number;
  readonly reason?: string;
}

/** What connect() does in one go: the token to use, the signing user's PIN, and how many pool sessions to open. */
export interface ConnectRequest extends TokenSelector {
  readonly pin: string;
  readonly flags: number;
  readonly sessions: number;
  /** C_Finalize first (a recovery: the module's old state is dropped). */
  readonly finalizeFirst: boolean;
}

/** The token's slot, a logged-in session, and the pool's sessions; or no token to use (none, or an ambiguous label). */
export type ConnectResult = { readonly slot: Handle; readonly loginSession: Handle; readonly sessions: Handle[] } | TokenMissing;

/** One search of findAndRead(): the objects matching `template` (at most `max`), each with the attributes `types`. */
export interface ObjectQuery {
  readonly template: readonly Attribute[];
  readonly types: readonly number[];
  readonly max?: number;
}

export interface FoundObject {
  readonly handle: Handle;
  readonly attributes: Attribute[];
}

export interface AsyncPkcs11 {
  /**
   * [C_Finalize,] C_Initialize, find the token, open a session and log in on it (already logged
   * in is fine), open `sessions` more: as one call, so a recovery does not wait an event-loop turn
   * per step while the loop is busy answering callers.
   */
  connect(req: ConnectRequest): Promise<ConnectResult>;
  /** Finalize the module; tolerates "not initialized". Every session and the login are gone after it. */
  finalize(): Promise<void>;
  getSlotList(tokenPresent: boolean): Promise<Handle[]>;
  getTokenLabel(slot: Handle): Promise<string>;
  openSession(slot: Handle, flags: number): Promise<Handle>;
  closeSession(session: Handle): Promise<void>;
  getSessionState(session: Handle): Promise<number>;
  login(session: Handle, userType: number, pin: string): Promise<void>;
  logout(session: Handle): Promise<void>;
  /** FindObjectsInit + FindObjects until done + FindObjectsFinal, in one hop. */
  findObjects(session: Handle, template: readonly Attribute[], max?: number): Promise<Handle[]>;
  getAttributes(session: Handle, object: Handle, types: readonly number[]): Promise<Attribute[]>;
  /**
   * Several searches, each object found read at once, in one call: a key scan costs an
   * event-loop turn per findAndRead, not per object (a recovery's scan must not queue behind a
   * busy loop once per key).
   */
  findAndRead(session: Handle, queries: readonly ObjectQuery[]): Promise<FoundObject[][]>;
  /** SignInit + Sign in one hop. */
  sign(session: Handle, mechanism: Mechanism, key: Handle, data: Buffer, maxSignatureLength: number): Promise<Buffer>;
  /**
   * SignInit + Sign for each item, in order, on one session and in one hop. Stops at the first
   * failure: `signatures` holds the ones made before it, `failure` that item's error.
   */
  signMany(session: Handle, items: readonly SignCall[]): Promise<{ signatures: Buffer[]; failure?: Pkcs11CallError }>;
  /** VerifyInit + Verify in one hop; an invalid signature is `false`, not an error. */
  verify(session: Handle, mechanism: Mechanism, key: Handle, data: Buffer, signature: Buffer): Promise<boolean>;
  generateKeyPair(
    session: Handle,
    mechanism: Mechanism,
    publicTemplate: readonly Attribute[],
    privateTemplate: readonly Attribute[],
  ): Promise<{ publicKey: Handle; privateKey: Handle }>;
  createObject(session: Handle, template: readonly Attribute[]): Promise<Handle>;
  destroyObject(session: Handle, object: Handle): Promise<void>;
  /** Calls issued and not yet settled. */
  readonly inFlight: number;
  /** How long the oldest unsettled call has been running (0 when none): a stall shows here first. */
  readonly oldestCallAgeMs?: number;
  /** How many threads run the calls (a binding without threads leaves it out). */
  readonly threadCounts?: ThreadsInfo;
  close(): Promise<void>;
}
