import type { Logger } from 'pino';
import { ServiceError } from '../../errors.js';
import { fullJitterBackoff } from '../../resilience/backoff.js';
import { classify, HsmError, isPkcs11Failure, recoveringError, SESSION_GONE, toHsmError } from '../errors.js';
import type { CancelSignal, HsmHealth } from '../KeyManager.js';
import type { AsyncPkcs11, Handle } from './AsyncPkcs11.js';
import { P11 } from './constants.js';
import { noTokenMessage, type TokenSelector } from './findToken.js';
import { LoginSession } from './LoginSession.js';
import { SessionLoss } from './SessionLoss.js';
import { SessionPool, type PooledSession } from './SessionPool.js';
import { StallWatch } from './StallWatch.js';
import { sleep, waitFor } from './wait.js';

export interface TokenConnectionOptions extends TokenSelector {
  readonly pin: string;
  /** Sessions in the pool: the most operations in flight in this process. */
  readonly sessions: number;
  /** Requests allowed to wait for a session before new ones are shed with OVERLOADED. */
  readonly maxWaiting: number;
  /** How long an internal task (key scan) waits for a session; requests wait until their deadline. */
  readonly acquireTimeoutMs: number;
  readonly logger: Logger;
  /** Backoff between recovery attempts (default 50 ms base, 1 s cap: a returning HSM is used within about a second). */
  readonly recovery?: { readonly baseMs: number; readonly capMs: number };
  /** A call unanswered for this long makes the HSM "stalled": not ready, and logged (default acquireTimeoutMs). */
  readonly stallMs?: number;
  /** Called when a recovery has re-established the connection (the circuit breaker can close). */
  readonly onRecovered?: () => void;
}

/** What the connection's user does at the edges of a generation. */
export interface ConnectionHooks {
  /** The last step of every (re)connect, before the connection counts as ready (the key scan). */
  readonly afterConnect?: () => Promise<void>;
  /** A new generation began: whatever was found in the old one (key handles) is void. */
  readonly onNewGeneration?: () => void;
}

export interface SessionOptions {
  /** The caller's deadline: no session is waited for, and no call started, after it aborts. */
  readonly signal?: CancelSignal | undefined;
  /** The module generation the caller's key handles belong to: a session of another one is refused. */
  readonly generation?: number;
  /** Recovery's own work (the key scan) runs while `recovering` is set. */
  readonly internal?: boolean;
}

/** Runs work on a pooled session: what the key cache and the certificate store need of the connection. */
export interface Sessions {
  withSession<T>(fn: (session: Handle) => Promise<T>, o?: SessionOptions): Promise<T>;
}

const SESSION_FLAGS = P11.CKF_SERIAL_SESSION | P11.CKF_RW_SESSION;
/** How long a request whose sessions all vanished waits for the rebuild it started before its retry. */
const REBUILD_WAIT_MS = 250;
/** A recovery this soon after the last one continues that one's backoff (a flapping HSM is not re-initialized in a loop). */
const RECOVERY_MEMORY_MS = 10_000;

/**
 * The service's connection to one token: initializes the module, finds the token, logs in once
 * (on a session outside the pool), keeps the session pool, and repairs what the HSM reports
 * broken: destroys sessions that failed mid-operation, logs in again when the login is lost,
 * drops sessions closed behind its back, and re-initializes the module after a lost connection.
 * It does not retry: retries (with backoff, budget, deadline) belong to the caller, one layer up.
 *
 * Every C_Finalize starts a new "generation": sessions and key handles of an earlier one are
 * never used again, because a module may hand the same handle numbers out anew, and a stale
 * handle could then name another key or another caller's session.
 */
export class TokenConnection implements Sessions {
  private login: LoginSession | undefined;
  private pool: SessionPool | undefined;
  private currentGeneration = 0;
  private recovering: Promise<void> | undefined;
  private recoveries = 0;
  private recoveryStreak = 0;
  private lastRecoveredAt: number | undefined;
  private notReadyReason: string | undefined = 'starting';
  private closed = false;
  private readonly stall: StallWatch;
  private readonly losses: SessionLoss;

  constructor(
    readonly p11: AsyncPkcs11,
    private readonly options: TokenConnectionOptions,
    private readonly hooks: ConnectionHooks = {},
  ) {
    this.stall = new StallWatch(p11, options.stallMs ?? options.acquireTimeoutMs, options.logger);
    this.losses = new SessionLoss(p11, options.logger, () => ({ login: this.login, pool: this.pool }));
  }

  /** The generation key handles found now belong to. */
  get generation(): number {
    return this.currentGeneration;
  }

  get isRecovering(): boolean {
    return this.recovering !== undefined;
  }

  /** Sessions can be had for ordinary work (connected, not recovering). */
  get available(): boolean {
    return this.pool !== undefined && !this.recovering;
  }

  /** Connects and logs in. Throws if the token or the credentials are wrong. */
  async start(): Promise<void> {
    await this.connect();
    this.stall.start();
  }

  /** Initializes (after finalizing, in a recovery), logs in, fills the pool, runs afterConnect. */
  private async connect(finalizeFirst = false): Promise<void> {
    const { tokenLabel, slotIndex } = this.options;
    const want = slotIndex !== undefined ? { slotIndex } : { tokenLabel };
    const c = await this.p11.connect({ ...want, pin: this.options.pin, flags: SESSION_FLAGS, sessions: this.options.sessions, finalizeFirst });
    if ('noToken' in c) throw new ServiceError('HSM_UNAVAILABLE', noTokenMessage(want, c, { label: 'HSM_TOKEN_LABEL', index: 'HSM_SLOT' }));
    const { slot } = c;
    this.login = new LoginSession(this.p11, slot, c.loginSession, this.options.pin, this.options.logger, SESSION_FLAGS);
    const generation = this.currentGeneration;
    // The pool starts with the sessions connect() opened; sessions it replaces later are opened one by one.
    const opened = [...c.sessions];
    const pool = new SessionPool({
      size: this.options.sessions,
      maxWaiting: this.options.maxWaiting,
      generation,
      open: () => {
        const ready = opened.pop();
        return ready ? Promise.resolve(ready) : this.p11.openSession(slot, SESSION_FLAGS);
      },
      close: (h) => (generation === this.currentGeneration ? this.p11.closeSession(h) : Promise.resolve()),
    });
    this.pool = pool;
    await pool.fill();
    await this.hooks.afterConnect?.();
    this.notReadyReason = undefined;
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
    if (session.generation !== this.currentGeneration) {
      pool.destroy(session);
      throw recoveringError();
    }
    if (signal.aborted || (o.generation !== undefined && o.generation !== session.generation)) {
      pool.release(session);
      throw signal.aborted ? asServiceError(signal.reason) : recoveringError();
    }
    try {
      const result = await fn(session.handle);
      this.losses.reset();
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
    if (err.failure === 'loginLost') await this.login?.relogin().catch((x: unknown) => this.onFailure(x));
    if (err.failure === 'connectionLost') this.startRecovery();
    if (SESSION_GONE.has(e.code)) await this.sessionLost(signal).catch((x: unknown) => this.onFailure(x));
    return err;
  }

  /** A pooled session vanished (see SessionLoss): rebuild everything when the losses call for it. */
  private async sessionLost(signal: CancelSignal): Promise<void> {
    if (!(await this.losses.mustRebuild())) return;
    this.options.logger.warn({ streak: this.losses.streak }, 'HSM sessions and login were lost behind our back; rebuilding');
    this.startRecovery();
    // The HSM itself answers, so the rebuild takes milliseconds: let the caller's retry land on it.
    await waitFor(this.recovering, signal, REBUILD_WAIT_MS);
  }

  private credentialsRefused(err: string): void {
    this.options.logger.error({ err }, 'the HSM refused the service credentials (HSM_PIN)');
  }

  /** A background task (a key rescan) failed: a lost connection starts a recovery, refused credentials are logged. */
  onFailure(e: unknown): void {
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
    this.currentGeneration++;
    this.hooks.onNewGeneration?.();
    this.losses.reset();
  }

  /** One recovery at a time: finalize, re-initialize, log in, rebuild the pool, run afterConnect. */
  private startRecovery(): void {
    if (this.recovering || this.closed) return;
    this.newGeneration();
    this.notReadyReason = 'recovering the HSM connection';
    const old = this.pool;
    this.pool = undefined;
    // Waiters fail now (fast 503s); sessions still borrowed are dropped when their calls settle.
    old?.abandon(recoveringError());
    this.options.logger.warn({ generation: this.currentGeneration }, 'HSM connection lost; re-initializing the module');
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

  /** The connection's part of HsmHealth; `reason` is why it is not ready (starting, recovering, stalled). */
  status(): Omit<HsmHealth, 'ready' | 'keys'> {
    const stats = this.pool?.stats;
    const reason = this.notReadyReason ?? this.stall.reason;
    return {
      ...(reason ? { reason } : {}),
      recovering: this.recovering !== undefined,
      sessions: { inUse: stats?.inUse ?? 0, idle: stats?.idle ?? 0, waiting: stats?.waiting ?? 0, max: this.options.sessions },
      callsInFlight: this.p11.inFlight,
      oldestCallMs: this.p11.oldestCallAgeMs ?? 0,
      recoveries: this.recoveries,
      threads: this.p11.threadCounts ?? { configured: 1, running: 1 },
    };
  }

  /** Drains the pool, logs out, finalizes the module and stops the binding. */
  async close(): Promise<void> {
    this.closed = true;
    this.stall.stop();
    const pool = this.pool;
    this.pool = undefined;
    await pool?.shutdown(new ServiceError('HSM_UNAVAILABLE', 'the service is shutting down', 1), 5000);
    await this.login?.logout();
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
