import { createPool, type Pool } from 'generic-pool';
import type { Logger } from 'pino';
import { algorithmInfo, KEY_SPEC_INFO, signatureLength, type SigningAlgorithm } from '../../crypto/algorithms.js';
import { invalid, ServiceError } from '../../errors.js';
import { fullJitterBackoff } from '../../resilience/backoff.js';
import { classify, CKR, HsmError, isPkcs11Failure, toHsmError } from '../errors.js';
import type { HsmHealth, KeyInfo, KeyManager, SignRequest, SignResult, VerifyDigestRequest } from '../KeyManager.js';
import type { AsyncPkcs11, Handle } from './AsyncPkcs11.js';
import { P11 } from './constants.js';
import { KeyCache, type KeyEntry } from './KeyCache.js';
import { signingInput } from './mechanisms.js';

export interface Pkcs11KeyManagerOptions {
  /** Token to use: by label, or by index in the slot list of present tokens. */
  readonly tokenLabel?: string;
  readonly slotIndex?: number;
  readonly pin: string;
  /** Sessions in the pool: the most operations in flight in this process. */
  readonly sessions: number;
  /** Requests allowed to wait for a session before new ones are shed with OVERLOADED. */
  readonly maxWaiting: number;
  readonly acquireTimeoutMs: number;
  /** How often the token is rescanned for new keys and versions. */
  readonly keyRefreshMs: number;
  readonly logger: Logger;
  readonly recovery?: { readonly baseMs: number; readonly capMs: number };
}

interface PooledSession {
  readonly handle: Handle;
  /** Sessions of an earlier module generation died with C_Finalize: never close them (the handle may be reused). */
  readonly generation: number;
}

const SESSION_FLAGS = P11.CKF_SERIAL_SESSION | P11.CKF_RW_SESSION;

/**
 * KeyManager on a PKCS#11 token. Logs in once on a session of its own (outside the pool, so login
 * survives pool churn), signs on pooled sessions, and repairs what the HSM reports broken:
 * destroys sessions that failed mid-operation, logs in again when the login is lost, re-finds
 * stale key handles, and re-initializes the module after a lost connection. It does not retry:
 * retries (with backoff, budget, deadline) belong to the caller, one layer up.
 */
export class Pkcs11KeyManager implements KeyManager {
  private slot: Handle | undefined;
  private loginSession: Handle | undefined;
  private pool: Pool<PooledSession> | undefined;
  private generation = 0;
  private recovering: Promise<void> | undefined;
  private relogging: Promise<void> | undefined;
  private refreshTimer: NodeJS.Timeout | undefined;
  private recoveries = 0;
  private notReadyReason: string | undefined = 'starting';
  private closed = false;
  readonly keys: KeyCache;

  constructor(
    private readonly p11: AsyncPkcs11,
    private readonly options: Pkcs11KeyManagerOptions,
  ) {
    this.keys = new KeyCache(p11, (fn) => this.withSession(fn));
  }

  /** Connects, logs in and loads the keys. Throws if the token or the credentials are wrong. */
  async start(): Promise<void> {
    await this.connect();
    this.refreshTimer = setInterval(() => {
      if (!this.recovering) this.keys.refresh().catch((e: unknown) => this.onFailure(e));
    }, this.options.keyRefreshMs);
    this.refreshTimer.unref();
  }

  private async connect(): Promise<void> {
    await this.p11.initialize();
    this.slot = await this.findSlot();
    this.loginSession = await this.p11.openSession(this.slot, SESSION_FLAGS);
    await this.login();
    this.pool = this.createPool(this.generation);
    await this.keys.refresh();
    this.notReadyReason = undefined;
  }

  private async findSlot(): Promise<Handle> {
    const slots = await this.p11.getSlotList(true);
    const { tokenLabel, slotIndex } = this.options;
    if (slotIndex !== undefined) {
      const slot = slots[slotIndex];
      if (!slot) throw new ServiceError('HSM_UNAVAILABLE', `no token in slot index ${slotIndex} (HSM_SLOT); ${slots.length} token(s) present`);
      return slot;
    }
    for (const slot of slots) if ((await this.p11.getTokenLabel(slot)) === tokenLabel) return slot;
    throw new ServiceError('HSM_UNAVAILABLE', `no token labelled '${tokenLabel}' (HSM_TOKEN_LABEL); ${slots.length} token(s) present`);
  }

  private async login(): Promise<void> {
    try {
      await this.p11.login(this.loginSession!, P11.CKU_USER, this.options.pin);
    } catch (e) {
      if (isPkcs11Failure(e) && e.code === CKR.USER_ALREADY_LOGGED_IN) return;
      throw e;
    }
  }

  /** Logs in again after CKR_USER_NOT_LOGGED_IN; concurrent callers share one attempt. */
  private relogin(): Promise<void> {
    this.relogging ??= (async () => {
      try {
        await this.login();
      } catch (e) {
        if (!isPkcs11Failure(e) || classify(e.code) !== 'sessionFatal') throw e;
        // The login session itself was closed behind our back: open a new one.
        this.loginSession = await this.p11.openSession(this.slot!, SESSION_FLAGS);
        await this.login();
      }
      this.options.logger.warn('HSM login was lost; logged in again');
    })().finally(() => {
      this.relogging = undefined;
    });
    return this.relogging;
  }

  private createPool(generation: number): Pool<PooledSession> {
    const { sessions, maxWaiting, acquireTimeoutMs } = this.options;
    const pool = createPool<PooledSession>(
      {
        create: async () => ({ handle: await this.p11.openSession(this.slot!, SESSION_FLAGS), generation }),
        destroy: async (s) => {
          if (s.generation !== this.generation) return;
          await this.p11.closeSession(s.handle).catch(() => undefined);
        },
      },
      { max: sessions, min: sessions, maxWaitingClients: maxWaiting, acquireTimeoutMillis: acquireTimeoutMs, autostart: true },
    );
    pool.on('factoryCreateError', (e) => this.onFailure(e));
    return pool;
  }

  /**
   * Runs fn on a pooled session. The session goes back when fn settles (not when a caller gives
   * up), and is destroyed instead if the failure may have left it unusable.
   */
  async withSession<T>(fn: (session: Handle) => Promise<T>): Promise<T> {
    const pool = this.pool;
    if (this.recovering || !pool) throw new HsmError('connectionLost', 'RECOVERING', 'the HSM connection is being re-established; retry later');
    let session: PooledSession;
    try {
      session = await pool.acquire();
    } catch (e) {
      const waiting = (e as Error).message.includes('max waitingClients');
      throw new ServiceError('OVERLOADED', waiting ? 'too many requests are waiting for an HSM session' : 'no HSM session became free in time', 1);
    }
    try {
      const result = await fn(session.handle);
      void pool.release(session).catch(() => undefined);
      return result;
    } catch (e) {
      const failure = isPkcs11Failure(e) ? classify(e.code) : undefined;
      const broken = failure === 'sessionFatal' || failure === 'connectionLost' || (isPkcs11Failure(e) && e.operationOpen);
      void (broken ? pool.destroy(session) : pool.release(session)).catch(() => undefined);
      throw await this.repair(e);
    }
  }

  /** Does what a failure calls for, then returns the error to throw. */
  private async repair(e: unknown): Promise<unknown> {
    if (!isPkcs11Failure(e)) return e;
    const err = toHsmError(e);
    if (err.failure === 'loginLost') await this.relogin().catch((x: unknown) => this.onFailure(x));
    if (err.failure === 'connectionLost') this.onFailure(e);
    return err;
  }

  private onFailure(e: unknown): void {
    if (this.closed) return;
    if (isPkcs11Failure(e) && classify(e.code) === 'connectionLost') this.startRecovery();
    else this.options.logger.debug({ err: e instanceof Error ? e.message : String(e) }, 'HSM background task failed');
  }

  /** One recovery at a time: finalize, re-initialize, log in, rebuild pool and key cache. */
  private startRecovery(): void {
    if (this.recovering || this.closed) return;
    this.generation++;
    this.notReadyReason = 'recovering the HSM connection';
    const oldPool = this.pool;
    this.pool = undefined;
    // Sessions still borrowed are destroyed when their calls settle; idle ones go now.
    void oldPool?.drain().then(() => oldPool.clear()).catch(() => undefined);
    this.options.logger.warn({ generation: this.generation }, 'HSM connection lost; re-initializing the module');
    this.recovering = this.recover().finally(() => {
      this.recovering = undefined;
    });
  }

  private async recover(): Promise<void> {
    const { baseMs, capMs } = this.options.recovery ?? { baseMs: 100, capMs: 5000 };
    for (let attempt = 0; !this.closed; attempt++) {
      // Finalizing under a call in flight is undefined behaviour in some modules: wait for calls to settle.
      for (let waited = 0; this.p11.inFlight > 0 && waited < 2000; waited += 10) await sleep(10);
      try {
        await this.p11.finalize();
        this.keys.clear();
        await this.connect();
        this.recoveries++;
        this.options.logger.warn({ attempt, recoveries: this.recoveries }, 'HSM connection re-established');
        return;
      } catch (e) {
        this.options.logger.warn({ attempt, err: isPkcs11Failure(e) ? toHsmError(e).ckr : (e as Error).message }, 'HSM recovery attempt failed');
        if (this.pool) {
          const p = this.pool;
          this.pool = undefined;
          void p.drain().then(() => p.clear()).catch(() => undefined);
        }
        this.generation++;
        await sleep(fullJitterBackoff(attempt, { baseMs, capMs }));
      }
    }
  }

  async listKeys(): Promise<KeyInfo[]> {
    await this.ensureLoaded();
    return this.keys.list();
  }

  async getKey(name: string): Promise<KeyInfo> {
    await this.ensureLoaded();
    const entry = await this.keys.resolve(name);
    return this.keys.info(entry.name)!;
  }

  private async ensureLoaded(): Promise<void> {
    if (!this.keys.loaded) {
      if (this.recovering || !this.pool) throw new HsmError('connectionLost', 'RECOVERING', 'the HSM connection is being re-established; retry later');
      await this.keys.refresh();
    }
  }

  async resolveKey(name: string, version?: number): Promise<KeyEntry> {
    await this.ensureLoaded();
    return this.keys.resolve(name, version);
  }

  async sign(req: SignRequest): Promise<SignResult> {
    const entry = await this.resolveKey(req.name, req.version);
    this.checkAlgorithm(entry, req.algorithm);
    const { mechanism, data } = signingInput(req.algorithm, req.digest);
    try {
      const signature = await this.withSession((s) => this.p11.sign(s, mechanism, entry.privateHandle, data, signatureLength(entry.keySpec)));
      return { name: entry.name, version: entry.version, keySpec: entry.keySpec, signature };
    } catch (e) {
      if (e instanceof HsmError && e.failure === 'handleStale') await this.keys.relookup(entry).catch(() => undefined);
      throw e;
    }
  }

  async verifyDigest(req: VerifyDigestRequest): Promise<boolean> {
    const entry = await this.resolveKey(req.name, req.version);
    this.checkAlgorithm(entry, req.algorithm);
    if (!entry.publicHandle) throw invalid(`digest: key '${entry.name}' has no public key object on the token; send the message instead`);
    const { mechanism, data } = signingInput(req.algorithm, req.digest);
    try {
      return await this.withSession((s) => this.p11.verify(s, mechanism, entry.publicHandle!, data, req.signature));
    } catch (e) {
      if (e instanceof HsmError && e.failure === 'handleStale') await this.keys.relookup(entry).catch(() => undefined);
      throw e;
    }
  }

  private checkAlgorithm(entry: KeyEntry, algorithm: SigningAlgorithm): void {
    if (algorithmInfo(algorithm).keyType !== KEY_SPEC_INFO[entry.keySpec].keyType) {
      throw invalid(`algorithm: ${algorithm} cannot be used with key '${entry.name}' (${entry.keySpec})`);
    }
  }

  health(): HsmHealth {
    const pool = this.pool;
    return {
      ready: this.notReadyReason === undefined && !this.recovering && this.keys.loaded,
      ...(this.notReadyReason ? { reason: this.notReadyReason } : {}),
      recovering: this.recovering !== undefined,
      sessions: {
        inUse: pool?.borrowed ?? 0,
        idle: pool?.available ?? 0,
        waiting: pool?.pending ?? 0,
        max: this.options.sessions,
      },
      callsInFlight: this.p11.inFlight,
      keys: this.keys.size,
      recoveries: this.recoveries,
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.refreshTimer);
    const pool = this.pool;
    this.pool = undefined;
    if (pool) await pool.drain().then(() => pool.clear()).catch(() => undefined);
    if (this.loginSession) await this.p11.logout(this.loginSession).catch(() => undefined);
    await this.p11.finalize().catch(() => undefined);
    await this.p11.close();
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms).unref());
