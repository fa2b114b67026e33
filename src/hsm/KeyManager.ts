import type { KeyObject } from 'node:crypto';
import type { KeySpec, SigningAlgorithm } from '../crypto/algorithms.js';
import type { ServiceError } from '../errors.js';

/** The HSM contract the service depends on. Nothing here knows PKCS#11. */
export interface KeyVersion {
  readonly version: number;
  readonly keySpec: KeySpec;
  readonly publicKey: KeyObject;
  readonly publicKeyPem: string;
  readonly hasCertificate: boolean;
  /**
   * Set when signing with this version failed in a way only an operator can fix (the service's
   * HSM user may not use the key: on CloudHSM, not shared with it), with the CK_RV; absent: usable,
   * or not known to be unusable. Learned per worker from signing outcomes and a probe.
   */
  readonly unusableReason?: string;
}

export interface KeyInfo {
  readonly name: string;
  readonly keySpec: KeySpec;
  readonly currentVersion: number;
  /** Ascending by version. */
  readonly versions: readonly KeyVersion[];
}

/**
 * A caller's "stop waiting", as the HSM layer reads it: an AbortSignal fits, and so does the
 * service's per-request Cancellation (src/service/deadline.ts), which costs far less than an
 * AbortController (an EventTarget with state of its own, made for every request). An 'abort'
 * listener runs at most once.
 */
export interface CancelSignal {
  readonly aborted: boolean;
  readonly reason: unknown;
  addEventListener(type: 'abort', listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: 'abort', listener: () => void): void;
}

export interface SignRequest {
  readonly name: string;
  /** Default: the current (highest) version. */
  readonly version?: number;
  readonly algorithm: SigningAlgorithm;
  /** The digest, already checked to be of the algorithm's length. */
  readonly digest: Buffer;
  /** Aborted when the caller stops waiting (its deadline): no HSM call is started after that. */
  readonly signal?: CancelSignal;
}

export interface SignResult {
  readonly name: string;
  readonly version: number;
  readonly keySpec: KeySpec;
  /** RSA: the signature; ECDSA: raw r||s as PKCS#11 returns it. */
  readonly signature: Buffer;
}

export interface VerifyDigestRequest extends SignRequest {
  /** RSA: the signature; ECDSA: raw r||s. */
  readonly signature: Buffer;
}

export interface HsmHealth {
  /** Logged in and the key cache loaded at least once. */
  readonly ready: boolean;
  readonly reason?: string;
  readonly recovering: boolean;
  readonly sessions: { readonly inUse: number; readonly idle: number; readonly waiting: number; readonly max: number };
  /** HSM calls issued and not yet settled (a stalled HSM keeps this up). */
  readonly callsInFlight: number;
  /** How long the oldest of those has been unanswered, in ms (0: none); liveness reads it. */
  readonly oldestCallMs: number;
  readonly keys: number;
  readonly recoveries: number;
  /** HSM threads configured and running; `reason` says why fewer run (a module with state per loaded instance). */
  readonly threads: { readonly configured: number; readonly running: number; readonly reason?: string };
  /** Key versions this worker found it cannot sign with (see KeyVersion.unusableReason). */
  readonly unusableVersions?: readonly { readonly name: string; readonly version: number; readonly reason: string }[];
}

/**
 * One item of signMany: its signature, or its error: a key that does not exist or does not fit
 * the algorithm, an input the HSM refuses, or the HSM failure that ended the call at this item
 * or before it (then the item was not tried; a retryable error says it may be sent again).
 */
export type SignManyOutcome = SignResult | ServiceError;

export interface KeyManager {
  listKeys(): Promise<KeyInfo[]>;
  /** Throws ServiceError NOT_FOUND when the key (or a requested version) does not exist. */
  getKey(name: string, version?: number): Promise<KeyInfo>;
  sign(req: SignRequest): Promise<SignResult>;
  /**
   * Signs several digests with one session and one HSM hop (a batch's chunk), in order. A failure
   * that stops the call (no session in time, the HSM recovering, a lost connection) becomes the
   * outcome of every item not yet signed; it rejects only on an HSM-wide failure while looking
   * the keys up.
   */
  signMany(reqs: readonly Omit<SignRequest, 'signal'>[], signal?: CancelSignal): Promise<SignManyOutcome[]>;
  /**
   * Verifies a signature over a digest on the HSM with the key's public object. Only for what
   * node:crypto cannot do itself (a prehashed RSA-PSS or ECDSA digest); everything else verifies
   * in the service with the cached public key.
   */
  verifyDigest(req: VerifyDigestRequest): Promise<boolean>;
  health(): HsmHealth;
  close(): Promise<void>;
}
