import type { Logger } from 'pino';
import { algorithmInfo, KEY_SPEC_INFO, signatureLength, type SigningAlgorithm } from '../../crypto/algorithms.js';
import { invalid, ServiceError } from '../../errors.js';
import { fullJitterBackoff } from '../../resilience/backoff.js';
import { classify, CKR, HsmError, isPkcs11Failure, recoveringError, SESSION_GONE, toHsmError } from '../errors.js';
import type { CancelSignal, HsmHealth, KeyInfo, KeyManager, SignManyOutcome, SignRequest, SignResult, VerifyDigestRequest } from '../KeyManager.js';
import type { AsyncPkcs11, Handle, SignCall } from './AsyncPkcs11.js';
import { P11 } from './constants.js';
import { KeyCache, type KeyEntry } from './KeyCache.js';
import { signingInput } from './mechanisms.js';
import { SessionPool, type PooledSession } from './SessionPool.js';
import { Pkcs11Error } from './ThreadedPkcs11.js';

export interface Pkcs11KeyManagerOptions {
  /** Token to use: by label, or by index in the slot list of present tokens. */
  readonly tokenLabel?: string;
  readonly slotIndex?: number;
  readonly pin: string;
  /** Sessions in the pool: the most operations in flight in this process. */
  readonly sessions: number;
  /** Requests allowed to wait for a session before new ones are shed with OVERLOADED. */
  readonly maxWaiting: number;
  /** How long an internal task (key scan) waits for a session; requests wait until their deadline. */
  readonly acquireTimeoutMs: number;
  /** How often the token is rescanned for new keys and versions. */
  readonly keyRefreshMs: number;
  readonly logger: Logger;
  /** Backoff between recovery attempts (default 50 ms base, 1 s cap: a returning HSM is used within about a second). */
  readonly recovery?: { readonly baseMs: number; readonly capMs: number };
  /** A call unanswered for this long makes the HSM "stalled": not ready, and logged (default acquireTimeoutMs). */
  readonly stallMs?: number;
  /** Called when a recovery has re-established the connection (the circuit breaker can close). */
  readonly onRecovered?: () => void;
}

interface SessionOptions {
  /** The caller's deadline: no session is waited for, and no call started, after it aborts. */
  readonly signal?: CancelSignal | undefined;
  /** The module generation the caller's key handles belong to: a session of another one is refused. */
  readonly generation?: number;
  /** Recovery's own work (the key scan) runs while `recovering` is set. */
  readonly internal?: boolean;
}

const SESSION_FLAGS = P11.CKF_SERIAL_SESSION | P11.CKF_RW_SESSION;
/** CK_STATE values with nobody logged in (CKS_RO_PUBLIC_SESSION, CKS_RW_PUBLIC_SESSION); pkcs11js does not export them. */
const PUBLIC_SESSION_STATES: ReadonlySet<number> = new Set([0, 2]);
/** Session-invalid failures in a row (no success between) that mean the sessions are not coming back. */
const PERSISTENT_SESSION_LOSS = 3;
/** How long a request whose sessions all vanished waits for the rebuild it started before its retry. */
const REBUILD_WAIT_MS = 250;
/** A recovery this soon after the last one continues that one's backoff (a flapping HSM is not re-initialized in a loop). */
const RECOVERY_MEMORY_MS = 10_000;

/**
 * KeyManager on a PKCS#11 token. Logs in once on a session of its own (outside the pool, so login
 * survives pool churn), signs on pooled sessions, and repairs what the HSM reports broken:
 * destroys sessions that failed mid-operation, logs in again when the login is lost, re-finds
 * stale key handles, and re-initializes the module after a lost connection. It does not retry:
 * retries (with backoff, budget, deadline) belong to the caller, one layer up.
 *
 * Every C_Finalize starts a new "generation": sessions and key handles of an earlier one are
 * never used again, because a module may hand the same handle numbers out anew, and a stale
 * handle could then name another key or another caller's session.
 */
export class Pkcs11KeyManager implements KeyManager {
  private slot: Handle | undefined;
  private loginSession: Handle | undefined;
  private pool: SessionPool | undefined;
  private generation = 0;
  private recovering: Promise<void> | undefined;
  private relogging: Promise<void> | undefined;
  private checkingSessions: Promise<boolean> | undefined;
  private refreshTimer: NodeJS.Timeout | undefined;
  private watchdogTimer: NodeJS.Timeout | undefined;
  private recoveries = 0;
  private recoveryStreak = 0;
  private lastRecoveredAt: number | undefined;
  private sessionLossStreak = 0;
  private stallLogged = false;
  private notReadyReason: string | undefined = 'starting';
  private closed = false;
  readonly keys: KeyCache;

  constructor(
    private readonly p11: AsyncPkcs11,
    private readonly options: Pkcs11KeyManagerOptions,
  ) {
    // Scans check the login first: a logged-out session sees no private keys, and an empty scan
    // would otherwise replace the cache and turn every key into a 404 until the next scan.
    this.keys = new KeyCache(
      p11,
      (fn) =>
        this.withSession(
          async (s) => {
            await this.assertLoggedIn(s);
            return fn(s);
          },
          { internal: true },
        ),
      // A key another tool made in a form the service cannot serve would otherwise just be a 404.
      { onSkip: (label, reason) => this.options.logger.warn({ label, reason }, 'a signing key on the token is not served') },
    );
  }

  /** Connects, logs in and loads the keys. Throws if the token or the credentials are wrong. */
  async start(): Promise<void> {
    await this.connect();
    this.refreshTimer = setInterval(() => {
      if (!this.recovering) this.keys.refresh().catch((e: unknown) => this.onFailure(e));
    }, this.options.keyRefreshMs);
    this.refreshTimer.unref();
    this.watchdogTimer = setInterval(() => this.watchStall(), 500);
    this.watchdogTimer.unref();
  }

  /** Initializes (after finalizing, in a recovery), logs in, fills the pool, loads the keys. */
  private async connect(finalizeFirst = false): Promise<void> {
    const { tokenLabel, slotIndex } = this.options;
    const c = await this.p11.connect({
      ...(slotIndex !== undefined ? { slotIndex } : { tokenLabel }),
      pin: this.options.pin,
      flags: SESSION_FLAGS,
      sessions: this.options.sessions,
      finalizeFirst,
    });
    if ('noToken' in c) {
      throw new ServiceError(
        'HSM_UNAVAILABLE',
        slotIndex !== undefined ? `no token in slot index ${slotIndex} (HSM_SLOT); ${c.tokens} token(s) present` : `no token labelled '${tokenLabel}' (HSM_TOKEN_LABEL); ${c.tokens} token(s) present`,
      );
    }
    this.slot = c.slot;
    this.loginSession = c.loginSession;
    const generation = this.generation;
    // The pool starts with the sessions connect() opened; sessions it replaces later are opened one by one.
    const opened = [...c.sessions];
    const pool = new SessionPool({
      size: this.options.sessions,
      maxWaiting: this.options.maxWaiting,
      generation,
      open: () => {
        const ready = opened.pop();
        return ready ? Promise.resolve(ready) : this.p11.openSession(this.slot!, SESSION_FLAGS);
      },
      close: (h) => (generation === this.generation ? this.p11.closeSession(h) : Promise.resolve()),
    });
    this.pool = pool;
    await pool.fill();
    await this.keys.refresh();
    this.notReadyReason = undefined;
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
        if (!isPkcs11Failure(e) || !SESSION_GONE.has(e.code)) throw e;
        // The login session itself was closed behind our back: log in on a new one.
        this.loginSession = await this.p11.openSession(this.slot!, SESSION_FLAGS);
        await this.login();
      }
      this.options.logger.warn('HSM login was lost; logged in again');
    })().finally(() => {
      this.relogging = undefined;
    });
    return this.relogging;
  }

  private async assertLoggedIn(session: Handle): Promise<void> {
    if (PUBLIC_SESSION_STATES.has(await this.p11.getSessionState(session))) {
      throw new Pkcs11Error(CKR.USER_NOT_LOGGED_IN, 'C_GetSessionInfo');
    }
  }

  /**
   * Runs fn on a pooled session. The session goes back when fn settles (not when a caller gives
   * up), and is destroyed instead if the failure may have left it unusable.
   */
  async withSession<T>(fn: (session: Handle) => Promise<T>, o: SessionOptions = {}): Promise<T> {
    const pool = this.pool;
    if (!pool || (this.recovering && !o.internal)) throw recoveringError();
    const signal = o.signal ?? AbortSignal.timeout(this.options.acquireTimeoutMs);
    let session: PooledSession;
    try {
      session = await pool.acquire(signal);
    } catch (e) {
      // A C_OpenSession that failed is the HSM's answer like any other; the rest are ours.
      throw isPkcs11Failure(e) ? await this.repair(e, signal) : asServiceError(e);
    }
    if (session.generation !== this.generation) {
      pool.destroy(session);
      throw recoveringError();
    }
    if (signal.aborted || (o.generation !== undefined && o.generation !== session.generation)) {
      pool.release(session);
      throw signal.aborted ? asServiceError(signal.reason) : recoveringError();
    }
    try {
      const result = await fn(session.handle);
      this.sessionLossStreak = 0;
      pool.release(session);
      return result;
    } catch (e) {
      if (!isPkcs11Failure(e)) {
        // Not the HSM's answer (the binding was closed, a bug): the session's state is unknown.
        pool.destroy(session);
        throw e;
      }
      const failure = classify(e.code);
      // A dead connection's sessions die with C_Finalize; closing a gone session's handle could close someone else's.
      if (SESSION_GONE.has(e.code) || failure === 'connectionLost') session.gone = true;
      const broken = failure === 'sessionFatal' || failure === 'connectionLost' || e.operationOpen === true;
      if (broken) pool.destroy(session);
      else pool.release(session);
      throw await this.repair(e, signal);
    }
  }

  /** Does what a failure calls for, then returns the error to throw (the caller's retry does the rest). */
  private async repair(e: { code: number; method: string }, signal: CancelSignal): Promise<HsmError> {
    const err = toHsmError(e);
    if (this.closed) return err;
    this.options.logger.debug({ method: e.method, ckr: err.ckr, failure: err.failure }, 'HSM call failed');
    if (err.failure === 'credentials') this.credentialsRefused(err.ckr);
    if (err.failure === 'loginLost') await this.relogin().catch((x: unknown) => this.onFailure(x));
    if (err.failure === 'connectionLost') this.startRecovery();
    if (SESSION_GONE.has(e.code)) await this.sessionLost(signal).catch((x: unknown) => this.onFailure(x));
    return err;
  }

  /**
   * A pooled session vanished. The idle sessions are checked and the dead ones dropped, so one
   * request pays for the check instead of each tripping over a dead session; if the login
   * session is gone too (C_CloseAllSessions, a token reset) or the losses persist, everything
   * is rebuilt.
   */
  private async sessionLost(signal: CancelSignal): Promise<void> {
    let rebuild = ++this.sessionLossStreak >= PERSISTENT_SESSION_LOSS;
    if (!rebuild) {
      this.checkingSessions ??= this.checkSessions().finally(() => {
        this.checkingSessions = undefined;
      });
      rebuild = await this.checkingSessions;
    }
    if (!rebuild) return;
    this.options.logger.warn({ streak: this.sessionLossStreak }, 'HSM sessions and login were lost behind our back; rebuilding');
    this.startRecovery();
    // The HSM itself answers, so the rebuild takes milliseconds: let the caller's retry land on it.
    await waitFor(this.recovering, signal, REBUILD_WAIT_MS);
  }

  /** True when everything must be rebuilt. */
  private async checkSessions(): Promise<boolean> {
    if (await this.loginSessionGone()) return true;
    const dropped = await (this.pool?.sweep((h) =>
      this.p11.getSessionState(h).then(
        () => true,
        (e: unknown) => !(isPkcs11Failure(e) && SESSION_GONE.has(e.code)),
      ),
    ) ?? 0);
    if (dropped > 0) this.options.logger.warn({ dropped }, 'HSM sessions were closed behind our back; dropped them');
    return false;
  }

  private async loginSessionGone(): Promise<boolean> {
    try {
      await this.assertLoggedIn(this.loginSession!);
      return false;
    } catch (e) {
      if (!isPkcs11Failure(e)) throw e;
      if (SESSION_GONE.has(e.code)) return true;
      if (e.code === CKR.USER_NOT_LOGGED_IN) {
        await this.relogin();
        return false;
      }
      throw e;
    }
  }

  private credentialsRefused(err: string): void {
    this.options.logger.error({ err }, 'the HSM refused the service credentials (HSM_PIN)');
  }

  private onFailure(e: unknown): void {
    if (this.closed) return;
    if (isPkcs11Failure(e) && classify(e.code) === 'connectionLost') {
      this.startRecovery();
      return;
    }
    const credentials = (e instanceof HsmError && e.failure === 'credentials') || (isPkcs11Failure(e) && classify(e.code) === 'credentials');
    const err = isPkcs11Failure(e) ? toHsmError(e).ckr : e instanceof Error ? e.message : String(e);
    if (credentials) this.credentialsRefused(err);
    else this.options.logger.debug({ err }, 'HSM background task failed');
  }

  private newGeneration(): void {
    this.generation++;
    this.keys.clear();
    this.sessionLossStreak = 0;
  }

  /** One recovery at a time: finalize, re-initialize, log in, rebuild pool and key cache. */
  private startRecovery(): void {
    if (this.recovering || this.closed) return;
    this.newGeneration();
    this.notReadyReason = 'recovering the HSM connection';
    const old = this.pool;
    this.pool = undefined;
    // Waiters fail now (fast 503s); sessions still borrowed are dropped when their calls settle.
    old?.abandon(recoveringError());
    this.options.logger.warn({ generation: this.generation }, 'HSM connection lost; re-initializing the module');
    this.recovering = this.recover().finally(() => {
      this.recovering = undefined;
    });
  }

  private async recover(): Promise<void> {
    const { baseMs, capMs } = this.options.recovery ?? { baseMs: 50, capMs: 1000 };
    const recent = this.lastRecoveredAt !== undefined && Date.now() - this.lastRecoveredAt < RECOVERY_MEMORY_MS;
    this.recoveryStreak = recent ? this.recoveryStreak + 1 : 0;
    for (let attempt = this.recoveryStreak; !this.closed; attempt++) {
      if (attempt > 0) await sleep(fullJitterBackoff(attempt - 1, { baseMs, capMs }));
      // Finalizing under a call in flight is undefined behaviour in some modules: let calls settle first.
      for (let waited = 0; this.p11.inFlight > 0 && waited < 2000; waited += 10) await sleep(10);
      if (this.closed) return;
      try {
        const started = performance.now();
        await this.connect(true);
        this.recoveries++;
        this.lastRecoveredAt = Date.now();
        const connectMs = Math.round(performance.now() - started);
        this.options.logger.warn({ attempt, recoveries: this.recoveries, connectMs }, 'HSM connection re-established');
        this.options.onRecovered?.();
        return;
      } catch (e) {
        this.options.logger.warn({ attempt, err: isPkcs11Failure(e) ? toHsmError(e).ckr : (e as Error).message }, 'HSM recovery attempt failed');
        const p = this.pool;
        this.pool = undefined;
        p?.abandon(recoveringError());
        this.newGeneration();
      }
    }
  }

  /** A stall produces no errors, only silence: say so in the log and in readiness. */
  private watchStall(): void {
    const age = this.p11.oldestCallAgeMs ?? 0;
    const stalled = age > this.stallMs;
    if (stalled && !this.stallLogged) this.options.logger.warn({ oldestCallMs: Math.round(age), callsInFlight: this.p11.inFlight }, 'HSM calls are not returning');
    if (!stalled && this.stallLogged) this.options.logger.warn('HSM calls are returning again');
    this.stallLogged = stalled;
  }

  private get stallMs(): number {
    return this.options.stallMs ?? this.options.acquireTimeoutMs;
  }

  async listKeys(): Promise<KeyInfo[]> {
    await this.ensureLoaded();
    return this.keys.list();
  }

  /** With a version, a version the cache does not know yet triggers a rescan, as for sign. */
  async getKey(name: string, version?: number): Promise<KeyInfo> {
    await this.ensureLoaded();
    const entry = await this.keys.resolve(name, version);
    return this.keys.info(entry.name)!;
  }

  private async ensureLoaded(): Promise<void> {
    if (!this.keys.loaded) {
      if (this.recovering || !this.pool) throw recoveringError();
      await this.keys.refresh();
    }
  }

  async resolveKey(name: string, version?: number): Promise<KeyEntry> {
    const hit = this.cachedKey(name, version);
    if (hit) return hit;
    await this.ensureLoaded();
    return this.keys.resolve(name, version);
  }

  /**
   * The key from the cache, at once (no async step: on the hot path each one is garbage per
   * request), or undefined: then resolveKey, which may load or rescan. The cache is emptied when
   * the module is re-initialized, so a hit is always of the current generation.
   */
  private cachedKey(name: string, version?: number): KeyEntry | undefined {
    return this.keys.loaded ? this.keys.lookup(name, version) : undefined;
  }

  /** The PKCS#11 sign call for a request: a key that does not fit the algorithm throws. */
  private callFor(entry: KeyEntry, req: Omit<SignRequest, 'signal'>): SignCall {
    this.checkAlgorithm(entry, req.algorithm);
    const { mechanism, data } = signingInput(req.algorithm, req.digest);
    return { mechanism, key: entry.privateHandle, data, maxSignatureLength: signatureLength(entry.keySpec) };
  }

  /** A handle the HSM no longer knows is looked up again for the caller's retry. */
  private async afterFailure(e: unknown, entry: KeyEntry): Promise<void> {
    if (e instanceof HsmError && e.failure === 'handleStale') await this.keys.relookup(entry).catch(() => undefined);
  }

  async sign(req: SignRequest): Promise<SignResult> {
    // Key handles are only good in the generation they were found in.
    const generation = this.generation;
    const entry = this.cachedKey(req.name, req.version) ?? (await this.resolveKey(req.name, req.version));
    const call = this.callFor(entry, req);
    try {
      const signature = await this.withSession((s) => this.p11.sign(s, call.mechanism, call.key, call.data, call.maxSignatureLength), { signal: req.signal, generation });
      return { name: entry.name, version: entry.version, keySpec: entry.keySpec, signature };
    } catch (e) {
      await this.afterFailure(e, entry);
      throw e;
    }
  }

  async signMany(reqs: readonly Omit<SignRequest, 'signal'>[], signal?: CancelSignal): Promise<SignManyOutcome[]> {
    const generation = this.generation;
    const out: (SignManyOutcome | undefined)[] = new Array<SignManyOutcome | undefined>(reqs.length).fill(undefined);
    let rest: { index: number; entry: KeyEntry; call: SignCall }[] = [];
    for (let i = 0; i < reqs.length; i++) {
      const req = reqs[i]!;
      try {
        const entry = this.cachedKey(req.name, req.version) ?? (await this.resolveKey(req.name, req.version));
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
        await this.withSession(
          async (s) => {
            const r = await this.p11.signMany(s, rest.map((x) => x.call));
            for (const signature of r.signatures) {
              const { index, entry } = rest[signed++]!;
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
        const failed = rest[signed]!;
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
    const generation = this.generation;
    const entry = await this.resolveKey(req.name, req.version);
    this.checkAlgorithm(entry, req.algorithm);
    if (!entry.publicHandle) throw invalid(`digest: key '${entry.name}' has no public key object on the token; send the message instead`);
    const { mechanism, data } = signingInput(req.algorithm, req.digest);
    try {
      return await this.withSession((s) => this.p11.verify(s, mechanism, entry.publicHandle!, data, req.signature), { signal: req.signal, generation });
    } catch (e) {
      await this.afterFailure(e, entry);
      throw e;
    }
  }

  private checkAlgorithm(entry: KeyEntry, algorithm: SigningAlgorithm): void {
    if (algorithmInfo(algorithm).keyType !== KEY_SPEC_INFO[entry.keySpec].keyType) {
      throw invalid(`algorithm: ${algorithm} cannot be used with key '${entry.name}' (${entry.keySpec})`);
    }
  }

  health(): HsmHealth {
    const stats = this.pool?.stats;
    const age = this.p11.oldestCallAgeMs ?? 0;
    const stalled = age > this.stallMs ? `HSM calls have not returned for ${Math.round(age)} ms` : undefined;
    const reason = this.notReadyReason ?? stalled;
    return {
      ready: reason === undefined && !this.recovering && this.keys.loaded,
      ...(reason ? { reason } : {}),
      recovering: this.recovering !== undefined,
      sessions: {
        inUse: stats?.inUse ?? 0,
        idle: stats?.idle ?? 0,
        waiting: stats?.waiting ?? 0,
        max: this.options.sessions,
      },
      callsInFlight: this.p11.inFlight,
      keys: this.keys.size,
      recoveries: this.recoveries,
      threads: this.p11.threadCounts ?? { configured: 1, running: 1 },
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.refreshTimer);
    clearInterval(this.watchdogTimer);
    const pool = this.pool;
    this.pool = undefined;
    await pool?.shutdown(new ServiceError('HSM_UNAVAILABLE', 'the service is shutting down', 1), 5000);
    if (this.loginSession) await this.p11.logout(this.loginSession).catch(() => undefined);
    await this.p11.finalize().catch(() => undefined);
    await this.p11.close();
  }
}

/** Abort reasons and pool rejections as the contract's errors (an AbortSignal.timeout's reason is a DOMException). */
function asServiceError(e: unknown): unknown {
  if (e instanceof ServiceError) return e;
  if (e instanceof Error && (e.name === 'TimeoutError' || e.name === 'AbortError')) {
    return new ServiceError('OVERLOADED', 'no HSM session became free in time', 1);
  }
  return e;
}

/** Resolves when `p` settles, the signal aborts, or `ms` pass, whichever is first; never rejects. */
function waitFor(p: Promise<unknown> | undefined, signal: CancelSignal, ms: number): Promise<void> {
  if (!p || signal.aborted) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
    p.then(done, done);
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms).unref());
