import { constants, publicDecrypt, timingSafeEqual, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { algorithmInfo, KEY_SPEC_INFO, signatureLength, type SigningAlgorithm } from '../crypto/algorithms.js';
import { digestInfo, hash } from '../crypto/digest.js';
import { ecdsaDerToRaw, ecdsaRawToDer } from '../crypto/ecdsaSignature.js';
import { invalid, notFound, ServiceError } from '../errors.js';
import { checkAlgorithm } from '../hsm/checkAlgorithm.js';
import { HsmError } from '../hsm/errors.js';
import type { CancelSignal, HsmHealth, KeyInfo, KeyManager, KeyVersion, SignManyOutcome, SignRequest, SignResult } from '../hsm/KeyManager.js';
import { countsAgainstHsm, throughBreaker, breakerState, type HsmBreaker } from '../resilience/hsmBreaker.js';
import { retry } from '../resilience/retry.js';
import type { RetryBudget } from '../resilience/retryBudget.js';
import { Cancellation, withDeadline } from './deadline.js';

export type SignatureFormat = 'der' | 'raw';

export interface SignInput {
  readonly keyName: string;
  readonly keyVersion?: number;
  readonly algorithm: SigningAlgorithm;
  /** Exactly one of message and digest. */
  readonly message?: Buffer;
  readonly digest?: Buffer;
  readonly signatureFormat?: SignatureFormat;
}

export interface SignOutput {
  readonly keyName: string;
  readonly keyVersion: number;
  readonly algorithm: SigningAlgorithm;
  readonly signature: Buffer;
  /** The digest the HSM signed, for the audit trail (never sent to the caller). */
  readonly digest: Buffer;
}

export interface VerifyInput extends SignInput {
  readonly signature: Buffer;
}

export interface ResilienceSettings {
  readonly breaker: HsmBreaker;
  readonly breakerResetMs: number;
  readonly budget: RetryBudget;
  readonly maxAttempts: number;
  readonly backoff: { readonly baseMs: number; readonly capMs: number };
  readonly onRetry?: (attempt: number, e: unknown) => void;
}

export interface ServiceHealth extends HsmHealth {
  readonly breaker: 'closed' | 'open' | 'halfOpen';
}

const isRetryable = (e: unknown): boolean => e instanceof HsmError && e.retryable;

/**
 * Batch items per HSM call. One call runs its items one after another on one thread, so a chunk
 * bounds how long a batch keeps a thread (16 x 2 round trips on a networked HSM) while the
 * chunks of a batch run in parallel on the other sessions and threads.
 */
const BATCH_CHUNK = 16;

/**
 * Sign, verify and batch sign: input rules, hashing, signature encodings, and the resilience
 * around every HSM call (retry with full-jitter backoff inside a retry budget, through one
 * circuit breaker, bounded by the request deadline).
 */
export class SigningService {
  constructor(
    private readonly keys: KeyManager,
    private readonly resilience: ResilienceSettings,
  ) {}

  /**
   * An HSM operation with retries, breaker and deadline. The signal aborts at the deadline so
   * that an attempt still waiting for a session gives up its place instead of signing for nobody.
   */
  private guarded<T>(op: (signal: CancelSignal) => Promise<T>, deadline: number): Promise<T> {
    const r = this.resilience;
    const { onRetry } = r;
    const cancel = new Cancellation();
    const work = retry(() => throughBreaker(r.breaker, () => op(cancel), r.breakerResetMs), {
      maxAttempts: r.maxAttempts,
      backoff: r.backoff,
      deadline,
      budget: r.budget,
      isRetryable,
      ...(onRetry ? { onRetry: (attempt: number, _delay: number, e: unknown) => onRetry(attempt, e) } : {}),
    });
    return withDeadline(work, deadline, { cancel });
  }

  listKeys(deadline: number): Promise<KeyInfo[]> {
    return this.guarded(() => this.keys.listKeys(), deadline);
  }

  getKey(name: string, deadline: number, version?: number): Promise<KeyInfo> {
    return this.guarded(() => this.keys.getKey(name, version), deadline);
  }

  private digestOf(input: SignInput): Buffer {
    const { digestLength } = algorithmInfo(input.algorithm);
    if (input.digest !== undefined && input.digest.length !== digestLength) {
      throw invalid(`digest: must be ${digestLength} bytes for ${input.algorithm}, got ${input.digest.length}`);
    }
    return digestOfInput(input);
  }

  private static checkFormat(input: SignInput): void {
    if (input.signatureFormat !== undefined && algorithmInfo(input.algorithm).padding !== 'ECDSA') {
      throw invalid('signatureFormat: only applies to ECDSA algorithms');
    }
  }

  async sign(input: SignInput, deadline: number): Promise<SignOutput> {
    SigningService.checkFormat(input);
    const digest = this.digestOf(input);
    const r = await this.guarded((signal) => this.keys.sign({ ...signRequest(input, digest), signal }), deadline);
    return this.output(input, r, digest);
  }

  /**
   * One bad item does not fail the others: each result is a signature or that item's error.
   * Items go to the HSM in chunks: one guarded call, one session and one HSM hop per chunk, so a
   * batch costs little more than its signatures. A retry re-sends only the items still unsigned.
   */
  async signBatch(items: readonly (SignInput | ServiceError)[], deadline: number): Promise<(SignOutput | ServiceError)[]> {
    const results: (SignOutput | ServiceError)[] = new Array(items.length);
    const ready: { index: number; input: SignInput; digest: Buffer }[] = [];
    items.forEach((item, index) => {
      if (item instanceof ServiceError) {
        results[index] = item;
        return;
      }
      try {
        SigningService.checkFormat(item);
        ready.push({ index, input: item, digest: this.digestOf(item) });
      } catch (e) {
        // A bug is not an item's answer: it fails the request, and the error handler logs it.
        if (!(e instanceof ServiceError)) throw e;
        results[index] = e;
      }
    });
    const chunks: (typeof ready)[] = [];
    for (let i = 0; i < ready.length; i += BATCH_CHUNK) chunks.push(ready.slice(i, i + BATCH_CHUNK));
    await Promise.all(
      chunks.map(async (chunk) => {
        const outcomes = await this.signChunk(chunk, deadline);
        chunk.forEach(({ index, input, digest }, j) => {
          const o = outcomes[j];
          // signChunk answers once per item of the chunk, in order.
          if (o === undefined) throw new Error(`signBatch: no outcome for item ${j} of a chunk of ${chunk.length}`);
          results[index] = o instanceof ServiceError ? o : this.output(input, o, digest);
        });
      }),
    );
    return results;
  }

  private async signChunk(chunk: readonly { input: SignInput; digest: Buffer }[], deadline: number): Promise<(SignResult | ServiceError)[]> {
    const outcomes: (SignManyOutcome | undefined)[] = new Array<SignManyOutcome | undefined>(chunk.length).fill(undefined);
    const unsettled = (o: SignManyOutcome | undefined): boolean => o === undefined || isRetryable(o);
    try {
      await this.guarded(async (signal) => {
        // The chunk's positions still unsettled, and their requests (outcomes has one entry per item).
        const todo: number[] = [];
        const requests: Omit<SignRequest, 'signal'>[] = [];
        chunk.forEach(({ input, digest }, j) => {
          if (!unsettled(outcomes[j])) return;
          todo.push(j);
          requests.push(signRequest(input, digest));
        });
        const got = await this.keys.signMany(requests, signal);
        // The KeyManager answers once per request, in order; anything else is a bug, not an item's answer.
        if (got.length !== todo.length) throw new Error(`signMany answered ${got.length} outcomes for ${todo.length} requests`);
        todo.forEach((j, k) => {
          outcomes[j] = got[k];
        });
        // An HSM failure ends this attempt, through the breaker like a single sign's; items signed stay
        // signed, and the retry (if the failure is retryable) re-sends only the others.
        const failure = got.find((o) => isRetryable(o) || countsAgainstHsm(o));
        if (failure) throw failure;
      }, deadline);
    } catch (e) {
      // A bug is not an item's answer: it fails the request, and the error handler logs it.
      if (!(e instanceof ServiceError)) throw e;
      outcomes.forEach((o, j) => {
        if (unsettled(o)) outcomes[j] = e;
      });
    }
    return outcomes as (SignResult | ServiceError)[];
  }

  private output(input: SignInput, r: SignResult, digest: Buffer): SignOutput {
    const ecdsa = algorithmInfo(input.algorithm).padding === 'ECDSA';
    const signature = ecdsa && input.signatureFormat !== 'raw' ? ecdsaRawToDer(r.signature) : r.signature;
    return { keyName: r.name, keyVersion: r.version, algorithm: input.algorithm, signature, digest };
  }

  async verify(input: VerifyInput, deadline: number): Promise<{ valid: boolean; keyVersion: number }> {
    SigningService.checkFormat(input);
    const info = algorithmInfo(input.algorithm);
    // The cached public key, without the breaker and retries: verifying needs no HSM, so an open
    // breaker must not fail it (only a key the cache does not know yet makes the KeyManager look).
    const key = await withDeadline(this.keys.getKey(input.keyName, input.keyVersion), deadline);
    const version = pickVersion(key, input.keyVersion);
    checkAlgorithm(input.algorithm, key.name, version.keySpec);
    const fieldBytes = Math.ceil(KEY_SPEC_INFO[version.keySpec].bits / 8);
    // A signature in the wrong encoding is simply not valid: callers get valid:false, not an error.
    let der: Buffer | undefined;
    let raw: Buffer | undefined;
    if (info.padding === 'ECDSA') {
      try {
        raw = input.signatureFormat === 'raw' ? input.signature : ecdsaDerToRaw(input.signature, fieldBytes);
        if (raw.length !== 2 * fieldBytes) return { valid: false, keyVersion: version.version };
        der = ecdsaRawToDer(raw);
        // A signature has one DER form: the parser tolerates trailing and padding bytes, which must not
        // make a signature valid (callers use signature bytes as identifiers; OpenSSL rejects them too).
        if (input.signatureFormat !== 'raw' && !der.equals(input.signature)) return { valid: false, keyVersion: version.version };
      } catch {
        return { valid: false, keyVersion: version.version };
      }
    }
    if (input.message !== undefined) {
      const valid = cryptoVerify(info.hash, input.message, verifyKey(version.publicKey, input.algorithm), der ?? input.signature);
      return { valid, keyVersion: version.version };
    }
    const digest = this.digestOf(input);
    if (info.padding === 'PKCS1_V1_5') return { valid: pkcs1DigestValid(version.publicKey, digest, info.hash, input.signature), keyVersion: version.version };
    // A PSS signature of the wrong length is not valid; the HSM would answer with a code of its own choosing.
    if (info.padding === 'PSS' && input.signature.length !== signatureLength(version.keySpec)) return { valid: false, keyVersion: version.version };
    // node:crypto cannot verify a prehashed PSS or ECDSA signature: the HSM does, with the public key object.
    const valid = await this.guarded(
      (signal) =>
        this.keys.verifyDigest({ name: key.name, version: version.version, algorithm: input.algorithm, digest, signature: raw ?? input.signature, signal }),
      deadline,
    );
    return { valid, keyVersion: version.version };
  }

  health(): ServiceHealth {
    return { ...this.keys.health(), breaker: breakerState(this.resilience.breaker) };
  }
}

/** The digest a sign or verify input stands for: the one sent, or the message's hash (for the audit trail; unchecked). */
export function digestOfInput(input: SignInput): Buffer {
  if (input.digest !== undefined) return input.digest;
  // Validation lets exactly one of digest and message through.
  if (input.message === undefined) throw new Error('digestOfInput: the input has neither a digest nor a message');
  return hash(algorithmInfo(input.algorithm).hash, input.message);
}

/** What the KeyManager needs to sign `input`'s digest. */
function signRequest(input: SignInput, digest: Buffer): Omit<SignRequest, 'signal'> {
  return { name: input.keyName, ...(input.keyVersion !== undefined ? { version: input.keyVersion } : {}), algorithm: input.algorithm, digest };
}

export function pickVersion(key: KeyInfo, version?: number): KeyVersion {
  const v = key.versions.find((x) => x.version === (version ?? key.currentVersion));
  if (!v) throw notFound(`key '${key.name}' has no version ${version}`);
  return v;
}

function verifyKey(publicKey: KeyObject, algorithm: SigningAlgorithm): KeyObject | { key: KeyObject; padding: number; saltLength: number } {
  const info = algorithmInfo(algorithm);
  return info.padding === 'PSS' ? { key: publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: info.digestLength } : publicKey;
}

/** PKCS#1 v1.5 over a digest: recover the DigestInfo with the public key and compare. */
function pkcs1DigestValid(publicKey: KeyObject, digest: Buffer, hashName: 'sha256' | 'sha384' | 'sha512', signature: Buffer): boolean {
  try {
    const recovered = publicDecrypt({ key: publicKey, padding: constants.RSA_PKCS1_PADDING }, signature);
    const expected = digestInfo(hashName, digest);
    return recovered.length === expected.length && timingSafeEqual(recovered, expected);
  } catch {
    return false;
  }
}
