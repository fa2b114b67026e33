import { signatureLength } from '../../crypto/algorithms.js';
import { invalid, ServiceError } from '../../errors.js';
import { checkAlgorithm } from '../checkAlgorithm.js';
import { HsmError } from '../errors.js';
import type { CancelSignal, HsmHealth, KeyInfo, KeyManager, SignManyOutcome, SignRequest, SignResult, VerifyDigestRequest } from '../KeyManager.js';
import type { AsyncPkcs11, SignCall } from './AsyncPkcs11.js';
import { KeyCache, type KeyEntry } from './KeyCache.js';
import { assertLoggedIn } from './LoginSession.js';
import { signingInput } from './mechanisms.js';
import { TokenConnection, type TokenConnectionOptions } from './TokenConnection.js';

export interface Pkcs11KeyManagerOptions extends TokenConnectionOptions {
  /** How often the token is rescanned for new keys and versions. */
  readonly keyRefreshMs: number;
}

/**
 * KeyManager on a PKCS#11 token: the keys (KeyCache) and signing, on a TokenConnection that
 * keeps the sessions and the login and repairs what the HSM reports broken. A handle the HSM no
 * longer knows is looked up again for the caller's retry; the retry itself is the caller's.
 */
export class Pkcs11KeyManager implements KeyManager {
  readonly connection: TokenConnection;
  readonly keys: KeyCache;
  private refreshTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly p11: AsyncPkcs11,
    private readonly options: Pkcs11KeyManagerOptions,
  ) {
    // Every (re)connect ends with a key scan; a new generation's keys are found anew.
    this.connection = new TokenConnection(p11, options, { afterConnect: () => this.keys.refresh(), onNewGeneration: () => this.keys.clear() });
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
      if (!this.connection.isRecovering) this.keys.refresh().catch((e: unknown) => this.connection.onFailure(e));
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

  /** A handle the HSM no longer knows is looked up again for the caller's retry. */
  private async afterFailure(e: unknown, entry: KeyEntry): Promise<void> {
    if (e instanceof HsmError && e.failure === 'handleStale') await this.keys.relookup(entry).catch(() => undefined);
  }

  async sign(req: SignRequest): Promise<SignResult> {
    // Key handles are only good in the generation they were found in.
    const generation = this.connection.generation;
    // A cache hit takes no async step: on the hot path each one is garbage per request.
    const entry = this.keys.cached(req.name, req.version) ?? (await this.keys.resolve(req.name, req.version));
    const call = this.callFor(entry, req);
    try {
      const signature = await this.connection.withSession((s) => this.p11.sign(s, call.mechanism, call.key, call.data, call.maxSignatureLength), {
        signal: req.signal,
        generation,
      });
      return { name: entry.name, version: entry.version, keySpec: entry.keySpec, signature };
    } catch (e) {
      await this.afterFailure(e, entry);
      throw e;
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
        await this.afterFailure(e, failed.entry);
        // An input the HSM refuses is that item's answer; the items after it still get signed.
        if (e instanceof HsmError && e.failure === 'client') {
          out[failed.index] = e;
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
      await this.afterFailure(e, entry);
      throw e;
    }
  }

  health(): HsmHealth {
    const status = this.connection.status();
    return { ...status, ready: status.reason === undefined && !status.recovering && this.keys.loaded, keys: this.keys.size };
  }

  async close(): Promise<void> {
    clearInterval(this.refreshTimer);
    await this.connection.close();
  }
}
