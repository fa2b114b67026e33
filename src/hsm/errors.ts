import { ServiceError } from '../errors.js';
import { NOT_A_CKR } from './notACkr.js';

/**
 * The one place where a PKCS#11 return code (CK_RV) becomes a domain error.
 * Values are from the PKCS#11 v2.40 specification (pkcs11t.h); kept here as data so this
 * folder does not depend on the native binding.
 */
export const CKR = {
  OK: 0x0,
  HOST_MEMORY: 0x2,
  SLOT_ID_INVALID: 0x3,
  GENERAL_ERROR: 0x5,
  FUNCTION_FAILED: 0x6,
  ARGUMENTS_BAD: 0x7,
  ATTRIBUTE_READ_ONLY: 0x10,
  ATTRIBUTE_SENSITIVE: 0x11,
  ATTRIBUTE_TYPE_INVALID: 0x12,
  ATTRIBUTE_VALUE_INVALID: 0x13,
  DATA_INVALID: 0x20,
  DATA_LEN_RANGE: 0x21,
  DEVICE_ERROR: 0x30,
  DEVICE_MEMORY: 0x31,
  DEVICE_REMOVED: 0x32,
  ACTION_PROHIBITED: 0x1b,
  FUNCTION_CANCELED: 0x50,
  FUNCTION_NOT_SUPPORTED: 0x54,
  KEY_HANDLE_INVALID: 0x60,
  KEY_SIZE_RANGE: 0x62,
  KEY_TYPE_INCONSISTENT: 0x63,
  KEY_FUNCTION_NOT_PERMITTED: 0x68,
  MECHANISM_INVALID: 0x70,
  MECHANISM_PARAM_INVALID: 0x71,
  OBJECT_HANDLE_INVALID: 0x82,
  OPERATION_ACTIVE: 0x90,
  OPERATION_NOT_INITIALIZED: 0x91,
  PIN_INCORRECT: 0xa0,
  PIN_INVALID: 0xa1,
  PIN_LEN_RANGE: 0xa2,
  PIN_EXPIRED: 0xa3,
  PIN_LOCKED: 0xa4,
  SESSION_CLOSED: 0xb0,
  SESSION_COUNT: 0xb1,
  SESSION_HANDLE_INVALID: 0xb3,
  SESSION_READ_ONLY: 0xb5,
  SIGNATURE_INVALID: 0xc0,
  SIGNATURE_LEN_RANGE: 0xc1,
  TEMPLATE_INCOMPLETE: 0xd0,
  TEMPLATE_INCONSISTENT: 0xd1,
  TOKEN_NOT_PRESENT: 0xe0,
  TOKEN_NOT_RECOGNIZED: 0xe1,
  TOKEN_WRITE_PROTECTED: 0xe2,
  USER_ALREADY_LOGGED_IN: 0x100,
  USER_NOT_LOGGED_IN: 0x101,
  USER_PIN_NOT_INITIALIZED: 0x102,
  USER_TYPE_INVALID: 0x103,
  USER_ANOTHER_ALREADY_LOGGED_IN: 0x104,
  USER_TOO_MANY_TYPES: 0x105,
  DOMAIN_PARAMS_INVALID: 0x130,
  CURVE_NOT_SUPPORTED: 0x140,
  BUFFER_TOO_SMALL: 0x150,
  CRYPTOKI_NOT_INITIALIZED: 0x190,
  CRYPTOKI_ALREADY_INITIALIZED: 0x191,
  FUNCTION_REJECTED: 0x200,
} as const;

/** Not CK_RVs: what the HSM thread reports when a call failed outside the module. */
export { NOT_A_CKR };

/**
 * What the service does about a failed call:
 * - client: the request cannot succeed (never retried, never trips the breaker);
 * - sessionFatal: destroy the session, retry on a fresh one;
 * - loginLost: log in again once (CKR_USER_ALREADY_LOGGED_IN counts as success), retry;
 * - handleStale: drop the cached handle, look the key up again, retry;
 * - connectionLost: finalize and re-initialize the module, log in, rebuild pool and cache;
 * - throttled: the HSM is busy (CloudHSM SDK 5 says CKR_FUNCTION_FAILED): back off and retry;
 * - credentials: the PIN is wrong or locked: an operator must act, retrying makes it worse;
 * - keyUnusable: this key may not be used by the service's HSM user (on CloudHSM: a key its owner
 *   has not shared with the signing user): one key version's problem, for an operator to fix; not
 *   retried, never trips the breaker (the HSM is fine). A stale handle that the re-lookup does not
 *   cure becomes this too (Pkcs11KeyManager).
 */
export type FailureClass = 'client' | 'sessionFatal' | 'loginLost' | 'handleStale' | 'connectionLost' | 'throttled' | 'credentials' | 'keyUnusable';

// CKR_USER_ALREADY_LOGGED_IN (C_Login) and CKR_CRYPTOKI_ALREADY_INITIALIZED (C_Initialize) are
// successes where they can occur, and are handled there; they are not failures to classify.
const CLASS_OF = new Map<number, FailureClass>([
  [CKR.ARGUMENTS_BAD, 'client'],
  [CKR.ATTRIBUTE_READ_ONLY, 'client'],
  [CKR.ACTION_PROHIBITED, 'client'],
  // The module cannot do it at all: no retry or recovery will change that.
  [CKR.FUNCTION_NOT_SUPPORTED, 'client'],
  [CKR.FUNCTION_REJECTED, 'client'],
  [CKR.DOMAIN_PARAMS_INVALID, 'client'],
  [CKR.CURVE_NOT_SUPPORTED, 'client'],
  [CKR.SIGNATURE_INVALID, 'client'],
  [CKR.TOKEN_WRITE_PROTECTED, 'client'],
  [CKR.ATTRIBUTE_SENSITIVE, 'client'],
  [CKR.ATTRIBUTE_TYPE_INVALID, 'client'],
  [CKR.ATTRIBUTE_VALUE_INVALID, 'client'],
  [CKR.DATA_INVALID, 'client'],
  [CKR.DATA_LEN_RANGE, 'client'],
  [CKR.KEY_SIZE_RANGE, 'client'],
  [CKR.KEY_TYPE_INCONSISTENT, 'client'],
  // The service only signs with keys whose CKA_SIGN is true and with mechanisms their type takes, so a
  // refusal is the key's (its policy, or its owner not sharing it), not the caller's input.
  [CKR.KEY_FUNCTION_NOT_PERMITTED, 'keyUnusable'],
  [CKR.MECHANISM_INVALID, 'client'],
  [CKR.MECHANISM_PARAM_INVALID, 'client'],
  [CKR.SIGNATURE_LEN_RANGE, 'client'],
  [CKR.TEMPLATE_INCOMPLETE, 'client'],
  [CKR.TEMPLATE_INCONSISTENT, 'client'],
  [CKR.SESSION_CLOSED, 'sessionFatal'],
  [CKR.SESSION_HANDLE_INVALID, 'sessionFatal'],
  [CKR.OPERATION_ACTIVE, 'sessionFatal'],
  [CKR.OPERATION_NOT_INITIALIZED, 'sessionFatal'],
  [CKR.SESSION_READ_ONLY, 'sessionFatal'],
  [CKR.BUFFER_TOO_SMALL, 'sessionFatal'],
  [CKR.USER_NOT_LOGGED_IN, 'loginLost'],
  [CKR.KEY_HANDLE_INVALID, 'handleStale'],
  [CKR.OBJECT_HANDLE_INVALID, 'handleStale'],
  [CKR.DEVICE_ERROR, 'connectionLost'],
  [CKR.DEVICE_REMOVED, 'connectionLost'],
  [CKR.TOKEN_NOT_PRESENT, 'connectionLost'],
  [CKR.TOKEN_NOT_RECOGNIZED, 'connectionLost'],
  [CKR.SLOT_ID_INVALID, 'connectionLost'],
  [CKR.CRYPTOKI_NOT_INITIALIZED, 'connectionLost'],
  [CKR.FUNCTION_FAILED, 'throttled'],
  [CKR.GENERAL_ERROR, 'throttled'],
  [CKR.DEVICE_MEMORY, 'throttled'],
  [CKR.HOST_MEMORY, 'throttled'],
  [CKR.SESSION_COUNT, 'throttled'],
  [CKR.FUNCTION_CANCELED, 'throttled'],
  [CKR.PIN_INCORRECT, 'credentials'],
  [CKR.PIN_INVALID, 'credentials'],
  [CKR.PIN_LEN_RANGE, 'credentials'],
  [CKR.PIN_EXPIRED, 'credentials'],
  [CKR.PIN_LOCKED, 'credentials'],
  [CKR.USER_PIN_NOT_INITIALIZED, 'credentials'],
  [CKR.USER_TYPE_INVALID, 'credentials'],
  [CKR.USER_ANOTHER_ALREADY_LOGGED_IN, 'credentials'],
  [CKR.USER_TOO_MANY_TYPES, 'credentials'],
]);

/** Session-invalid codes: the session is already gone, so it must not be closed (its handle may be reused). */
export const SESSION_GONE: ReadonlySet<number> = new Set([CKR.SESSION_HANDLE_INVALID, CKR.SESSION_CLOSED]);

const NAME_OF = new Map<number, string>([
  ...Object.entries(CKR).map(([k, v]): [number, string] => [v, `CKR_${k}`]),
  ...Object.entries(NOT_A_CKR).map(([k, v]): [number, string] => [v, k]),
]);

export function ckrName(code: number): string {
  return NAME_OF.get(code) ?? (code >= 0 ? `CKR_0x${code.toString(16).padStart(8, '0')}` : `ERROR_${code}`);
}

/**
 * Any code the table does not know (vendor-defined codes, NOT_A_CKR) is treated as a lost
 * connection: re-initializing the module is the safe bet, and recoveries are rate-limited.
 */
export function classify(code: number): FailureClass {
  return CLASS_OF.get(code) ?? 'connectionLost';
}

/** Classes worth another attempt at the application level (with backoff, within budget and deadline). */
export const RETRYABLE: ReadonlySet<FailureClass> = new Set(['sessionFatal', 'loginLost', 'handleStale', 'connectionLost', 'throttled']);

export function isPkcs11Failure(e: unknown): e is { code: number; method: string; operationOpen?: boolean } {
  return e instanceof Error && typeof (e as { code?: unknown }).code === 'number' && typeof (e as { method?: unknown }).method === 'string';
}

/** What a request meets while the module is being re-initialized: retryable, counts against the HSM. */
export function recoveringError(): HsmError {
  return new HsmError('connectionLost', 'RECOVERING', 'the HSM connection is being re-established; retry later');
}

/** Seconds a caller is told to wait before trying an unusable key version again: an operator has to act first. */
export const KEY_UNUSABLE_RETRY_AFTER_S = 30;

/**
 * Signing with a key version the service's HSM user cannot use: 503 HSM_UNAVAILABLE with
 * Retry-After, since nothing in the request can fix it and an operator can (share the key); the
 * message names the key version and the CK_RV, which `usable`/`unusableReason` also show.
 */
export function keyUnusableError(name: string, version: number, reason: string): HsmError {
  return new HsmError(
    'keyUnusable',
    reason,
    `key '${name}' version ${version} cannot be used by the service (${reason}); an operator must make it usable (on CloudHSM: share it with the signing user), or sign with another version`,
    KEY_UNUSABLE_RETRY_AFTER_S,
  );
}

/** A failed HSM operation, as the rest of the service sees it. */
export class HsmError extends ServiceError {
  constructor(
    readonly failure: FailureClass,
    readonly ckr: string,
    message: string,
    retryAfterSeconds = 1,
  ) {
    super(failure === 'client' ? 'INVALID_ARGUMENT' : 'HSM_UNAVAILABLE', message, failure === 'client' ? undefined : retryAfterSeconds);
  }

  get retryable(): boolean {
    return RETRYABLE.has(this.failure);
  }
}

/** Maps a PKCS#11 failure to a domain error; the CK_RV name is kept for logs and metrics, the PIN never is. */
export function toHsmError(e: { code: number; method: string }): HsmError {
  const failure = classify(e.code);
  const ckr = ckrName(e.code);
  const message =
    failure === 'client'
      ? `the HSM rejected the request (${ckr}): the key does not allow this operation or input`
      : failure === 'credentials'
        ? // Callers learn only that the HSM is unavailable; the log tells operators why (HSM_PIN).
          'the HSM is unavailable; retry later'
        : `the HSM is unavailable (${ckr}); retry later`;
  return new HsmError(failure, ckr, message);
}
