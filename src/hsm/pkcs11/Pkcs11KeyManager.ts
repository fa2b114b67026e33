import { createHash } from 'node:crypto';
import { KEY_SPEC_INFO, signatureLength, type KeySpec, type SigningAlgorithm } from '../../crypto/algorithms.js';
import { invalid, ServiceError } from '../../errors.js';
import { checkAlgorithm } from '../checkAlgorithm.js';
import { HsmError, keyUnusableError } from '../errors.js';
import type { HsmMetrics } from '../HsmMetrics.js';
import type { CancelSignal, HsmHealth, KeyInfo, KeyManager, SignManyOutcome, SignRequest, SignResult, VerifyDigestRequest } from '../KeyManager.js';
import type { AsyncPkcs11, Handle, SignCall } from './AsyncPkcs11.js';
import { KeyCache, type KeyEntry } from './KeyCache.js';
import { assertLoggedIn } from './LoginSession.js';
import { signingInput } from './mechanisms.js';
import { TokenConnection, type TokenConnectionOptions } from './TokenConnection.js';

export interface Pkcs11KeyManagerOptions extends TokenConnectionOptions {
  /** How often the token is rescanned for new keys and versions. */
  readonly keyRefreshMs: number;
  /** Where handle re-lookups are counted (the adapter's calls are counted by MeasuredPkcs11). */
  readonly metrics?: Pick<HsmMetrics, 'handleRelookup'>;
}

/**
 * Key versions no one has signed with yet are probed after a key scan, at most this many per scan
 * (newest first; the rest at the next scans): one signature each, of PROBE_DIGEST, thrown away.
 */
export const PROBE_MAX_PER_SCAN = 16;
const PROBE_DIGEST = createHash('sha256').update('hsm-signer key usability probe').digest();
const PROBE_ALGORITHM: Record<'RSA' | 'EC', SigningAlgorithm> = { RSA: 'RSASSA_PKCS1_V1_5_SHA_256', EC: 'ECDSA_SHA_256' };
const probeAlgorithm = (spec: KeySpec): SigningAlgorithm => PROBE_ALGORITHM[KEY_SPEC_INFO[spec].keyType];

/**
 * KeyManager on a PKCS#11 token: the keys (KeyCache) and signing, on a TokenConnection that
 * keeps the sessions and the login and repairs what the HSM reports broken. A handle the HSM no
 * longer knows is looked up again for the caller's retry; the retry itself is the caller's.
 */
export class Pkcs11KeyManager implements KeyManager {
  readonly connection: TokenConnection;
  readonly keys: KeyCache;
  private refreshTimer: NodeJS.Timeout | undefined;
  private probing = false;

  constructor(
    private readonly p11: AsyncPkcs11,
    private readonly options: Pkcs11KeyManagerOptions,
  ) {
    // Every (re)connect ends with a key scan; a new generation's keys are found anew.
    this.connection = new TokenConnection(p11, options, {
      // Ready means usability known too: probes of a (re)connect run before it (PROBE_MAX_PER_SCAN bounds them).
      afterConnect: () => this.keys.refresh().then(() => this.probeUntried(true)),
      onNewGeneration: () => this.keys.clear(),
    });
    // Scans check the login first: a logged-out session sees no private keys, and an empty scan
    // would otherwise replace the cache and turn every key into a 404 until the next scan.
    this.keys = new KeyCache(
      p11,
      (fn) =>
        this.connection.withSession(
          async (s) => {
            await assertLoggedIn(p11, s);
            return fn(s);
          },
          { internal: true },
        ),
      {
        // A key another tool made in a form the service cannot serve would otherwise just be a 404.
        onSkip: (label, reason) => options.logger.warn({ label, reason }, 'a signing key on the token is not served'),
        available: () => this.connection.available,
      },
    );
  }

  /** Connects, logs in and loads the keys. Throws if the token or the credentials are wrong. */
  async start(): Promise<void> {
    await this.connection.start();
    this.refreshTimer = setInterval(() => {
      if (!this.connection.isRecovering)
        this.keys
          .refresh()
          .then(() => this.probeUntried())
          .catch((e: unknown) => this.connection.onFailure(e));
    }, this.options.keyRefreshMs);
    this.refreshTimer.unref();
  }

  async listKeys(): Promise<KeyInfo[]> {
    await this.keys.load();
    return this.keys.list();
  }

  /** With a version, a version the cache does not know yet triggers a rescan, as for sign. */
  async getKey(name: string, version?: number): Promise<KeyInfo> {
    const entry = await this.keys.resolve(name, version);
    const info = this.keys.info(entry.name);
    if (info === undefined) throw new Error(`key cache: '${entry.name}' resolved but has no key info (a bug)`);
    return info;
  }

  /** The PKCS#11 sign call for a request: a key that does not fit the algorithm throws. */
  private callFor(entry: KeyEntry, req: Omit<SignRequest, 'signal'>): SignCall {
    checkAlgorithm(req.algorithm, entry.name, entry.keySpec);
    const { mechanism, data } = signingInput(req.algorithm, req.digest);
    return { mechanism, key: entry.privateHandle, data, maxSignatureLength: signatureLength(entry.keySpec) };
  }

  /**
   * What a failed call with `entry` means, as the error to throw. A handle the HSM no longer knows
   * is looked up again for the caller's retry. A sign (`signedWith`: the handle it used) that the
   * HSM refuses for the key's sake, or that fails as stale with the handle the re-lookup found,
   * marks the version unusable: it is then not retried, and does not count against the HSM.
   */
  private async afterFailure(e: unknown, entry: KeyEntry, signedWith?: Handle): Promise<unknown> {
    if (!(e instanceof HsmError)) return e;
    if (signedWith !== undefined && (e.failure === 'keyUnusable' || (e.failure === 'handleStale' && entry.relookedUp?.equals(signedWith)))) {
      entry.tried = true;
      if (entry.unusableReason !== e.ckr) {
        this.options.logger.warn({ key: entry.name, version: entry.version, label: entry.label, reason: e.ckr }, 'a key version cannot be used for signing');
      }
      entry.unusableReason = e.ckr;
      return keyUnusableError(entry.name, entry.version, e.ckr);
    }
    if (e.failure === 'handleStale') {
      this.options.metrics?.handleRelookup();
      await this.keys.relookup(entry).catch(() => undefined);
    }
    return e;
  }

  /** A good signature: the version is usable (again). Written only when something changes: this is the hot path. */
  private signedWith(entry: KeyEntry): void {
    if (entry.tried && entry.unusableReason === undefined && entry.relookedUp === undefined) return;
    if (entry.unusableReason !== undefined) this.options.logger.info({ key: entry.name, version: entry.version }, 'a key version is usable again');
    entry.tried = true;
    entry.unusableReason = undefined;
    entry.relookedUp = undefined;
  }

  /**
   * Signs once with each key version no one has signed with yet (a new version, or every version
   * after a (re)connect), off the hot path, so that `unusableReason` is known before a caller
   * meets it. One at a time, at most PROBE_MAX_PER_SCAN per scan; an HSM failure ends the round.
   */
  private probeUntried(connecting = false): Promise<void> {
    if (this.probing || (this.connection.isRecovering && !connecting)) return Promise.resolve();
    const entries = this.keys.untried(PROBE_MAX_PER_SCAN);
    if (entries.length === 0) return Promise.resolve();
    this.probing = true;
    const round = async (): Promise<void> => {
      for (const entry of entries) {
        const req = { name: entry.name, version: entry.version, algorithm: probeAlgorithm(entry.keySpec), digest: PROBE_DIGEST };
        // A stale handle gets its re-lookup and one more try, as a caller's sign would.
        for (let attempt = 0; attempt < 2; attempt++) {
          try {
            await this.signEntry(entry, req, { internal: true });
            break;
          } catch (e) {
            if (!(e instanceof HsmError)) throw e;
            if (e.failure === 'keyUnusable') break;
            if (e.failure !== 'handleStale') return;
          }
        }
      }
    };
    return round()
      .catch((e: unknown) => this.options.logger.warn({ err: (e as Error).message }, 'key usability probe failed'))
      .finally(() => {
        this.probing = false;
      });
  }

  /** A probe's sign (Pkcs11KeyManager.sign inlines the same). */
  private async signEntry(
    entry: KeyEntry,
    req: Omit<SignRequest, 'signal'>,
    o: { signal?: CancelSignal; generation?: number; internal?: boolean },
  ): Promise<Buffer> {
    const call = this.callFor(entry, req);
    try {
      const signature = await this.connection.withSession((s) => this.p11.sign(s, call.mechanism, call.key, call.data, call.maxSignatureLength), o);
      this.signedWith(entry);
      return signature;
    } catch (e) {
      throw await this.afterFailure(e, entry, call.key);
    }
  }

  async sign(req: SignRequest): Promise<SignResult> {
    // Key handles are only good in the generation they were found in.
    const generation = this.connection.generation;
    // A cache hit takes no async step: on the hot path each one is garbage per request.
    const entry = this.keys.cached(req.name, req.version) ?? (await this.keys.resolve(req.name, req.version));
    // signEntry's body, inlined: one async frame less per request on the hot path.
    const call = this.callFor(entry, req);
    try {
      const signature = await this.connection.withSession((s) => this.p11.sign(s, call.mechanism, call.key, call.data, call.maxSignatureLength), {
        signal: req.signal,
        generation,
      });
      this.signedWith(entry);
      return { name: entry.name, version: entry.version, keySpec: entry.keySpec, signature };
    } catch (e) {
      throw await this.afterFailure(e, entry, call.key);
    }
  }

  async signMany(reqs: readonly Omit<SignRequest, 'signal'>[], signal?: CancelSignal): Promise<SignManyOutcome[]> {
    const generation = this.connection.generation;
    const out: (SignManyOutcome | undefined)[] = new Array<SignManyOutcome | undefined>(reqs.length).fill(undefined);
    let rest: { index: number; entry: KeyEntry; call: SignCall }[] = [];
    for (let i = 0; i < reqs.length; i++) {
      const req = reqs[i];
      if (req === undefined) throw new Error(`signMany: no request at index ${i} of ${reqs.length} (a bug)`);
      try {
        const entry = this.keys.cached(req.name, req.version) ?? (await this.keys.resolve(req.name, req.version));
        rest.push({ index: i, entry, call: this.callFor(entry, req) });
      } catch (e) {
        // The item's own error (no such key, wrong algorithm); an HSM-wide one (recovering) fails the call.
        if (!(e instanceof ServiceError) || e instanceof HsmError) throw e;
        out[i] = e;
      }
    }
    while (rest.length > 0) {
      let signed = 0;
      try {
        await this.connection.withSession(
          async (s) => {
            const r = await this.p11.signMany(
              s,
              rest.map((x) => x.call),
            );
            for (const signature of r.signatures) {
              const done = rest[signed++];
              if (done === undefined) throw new Error(`signMany: the HSM returned more signatures than the ${rest.length} asked for (a bug)`);
              const { index, entry } = done;
              this.signedWith(entry);
              out[index] = { name: entry.name, version: entry.version, keySpec: entry.keySpec, signature };
            }
            if (r.failure) throw r.failure;
          },
          { signal, generation },
        );
        return out as SignManyOutcome[];
      } catch (e) {
        // No session in time, or the HSM recovering, comes here too, with signed = 0.
        if (!(e instanceof ServiceError)) throw e;
        const failed = rest[signed];
        if (failed === undefined) throw new Error(`signMany: a failure after all ${rest.length} items were signed (a bug)`, { cause: e });
        const err = await this.afterFailure(e, failed.entry, failed.call.key);
        // An input the HSM refuses, or a key version it will not use, is that item's answer; the items after it still get signed.
        if (err instanceof HsmError && (err.failure === 'client' || err.failure === 'keyUnusable')) {
          out[failed.index] = err;
          rest = rest.slice(signed + 1);
          continue;
        }
        // Any other failure ends the call: this item and the ones after it carry it (the caller retries them if it is retryable).
        for (const x of rest.slice(signed)) out[x.index] = e;
        return out as SignManyOutcome[];
      }
    }
    return out as SignManyOutcome[];
  }

  async verifyDigest(req: VerifyDigestRequest): Promise<boolean> {
    const generation = this.connection.generation;
    const entry = this.keys.cached(req.name, req.version) ?? (await this.keys.resolve(req.name, req.version));
    checkAlgorithm(req.algorithm, entry.name, entry.keySpec);
    const noPublicKey = `digest: key '${entry.name}' has no public key object on the token; send the message instead`;
    if (!entry.publicHandle) throw invalid(noPublicKey);
    const { mechanism, data } = signingInput(req.algorithm, req.digest);
    try {
      return await this.connection.withSession(
        (s) => {
          // Read when the session is there: a recovery while waiting for it refreshes the handle.
          const publicHandle = entry.publicHandle;
          if (!publicHandle) throw invalid(noPublicKey);
          return this.p11.verify(s, mechanism, publicHandle, data, req.signature);
        },
        {
          signal: req.signal,
          generation,
        },
      );
    } catch (e) {
      throw await this.afterFailure(e, entry);
    }
  }

  health(): HsmHealth {
    const status = this.connection.status();
    const unusableVersions = this.keys.unusable();
    return {
      ...status,
      ready: status.reason === undefined && !status.recovering && this.keys.loaded,
      keys: this.keys.size,
      ...(unusableVersions.length > 0 ? { unusableVersions } : {}),
    };
  }

  async close(): Promise<void> {
    clearInterval(this.refreshTimer);
    await this.connection.close();
  }
}
