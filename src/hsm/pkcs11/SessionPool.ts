import { createPool, type Pool } from 'generic-pool';
import { ServiceError } from '../../errors.js';
import type { CancelSignal } from '../KeyManager.js';
import type { Handle } from './AsyncPkcs11.js';

export interface PooledSession {
  readonly handle: Handle;
  /** The module generation (see TokenConnection) the session was opened in. */
  readonly generation: number;
  /** The HSM said the session no longer exists: drop it, never close it (its handle may already name a new session). */
  gone: boolean;
}

export interface SessionPoolOptions {
  readonly size: number;
  /** Callers allowed to wait for a session; the next one is shed with OVERLOADED at once. */
  readonly maxWaiting: number;
  readonly generation: number;
  readonly open: () => Promise<Handle>;
  readonly close: (handle: Handle) => Promise<void>;
}

/** What the generic-pool factory hands out when C_OpenSession fails, instead of throwing. */
class FailedOpen {
  constructor(readonly failed: unknown) {}
}
type Slot = PooledSession | FailedOpen;
const isFailed = (s: Slot): s is FailedOpen => s instanceof FailedOpen;

interface Waiter {
  /** False if the waiter already gave up: the caller must pass the permit on. */
  grant(): boolean;
  fail(e: unknown): void;
}

const overloaded = (): ServiceError => new ServiceError('OVERLOADED', 'too many requests are waiting for an HSM session', 1);

/**
 * A fixed number of PKCS#11 sessions for one module generation, kept by generic-pool.
 *
 * generic-pool stores, creates and destroys the sessions. In front of it sits a permit per session
 * with a queue of our own, because three of its habits do not suit an HSM: a failed create is
 * retried at once, in a loop, for as long as anyone waits (a dead HSM would be hammered), a waiter
 * stays queued after its caller gave up (the queue bound would count ghosts), and it cannot be
 * abandoned in one step when the module is re-initialized. With a permit, generic-pool is only
 * asked when a session is idle or may be opened, so it never queues; a failed C_OpenSession is
 * handed out as a value rather than thrown, so generic-pool does not retry it.
 */
export class SessionPool {
  private readonly pool: Pool<Slot>;
  private readonly waiters = new Set<Waiter>();
  private permits: number;
  private closedWith: unknown;
  /** Abandoned: the sessions die with C_Finalize, so they are dropped, not closed. */
  private abandoned = false;

  constructor(private readonly o: SessionPoolOptions) {
    this.permits = o.size;
    this.pool = createPool<Slot>(
      {
        create: async () => {
          try {
            return { handle: await o.open(), generation: o.generation, gone: false };
          } catch (failed) {
            return new FailedOpen(failed);
          }
        },
        destroy: async (s) => {
          if (isFailed(s) || s.gone || this.abandoned) return;
          await o.close(s.handle).catch(() => undefined);
        },
      },
      { max: o.size, min: 0, fifo: true },
    );
  }

  get stats(): { inUse: number; idle: number; waiting: number; opening: number } {
    const { borrowed, available, size } = this.pool;
    return { inUse: borrowed, idle: available, waiting: this.waiters.size, opening: size - borrowed - available };
  }

  /** Opens every session now, so the first requests do not pay for it; throws the first failure. */
  async fill(): Promise<void> {
    const slots = await Promise.all(Array.from({ length: this.o.size }, () => this.pool.acquire()));
    let failure: FailedOpen | undefined;
    for (const s of slots) {
      if (isFailed(s)) {
        failure ??= s;
        void this.pool.destroy(s);
      } else void this.pool.release(s);
    }
    if (failure) throw failure.failed;
  }

  /**
   * A session, or a rejection: the pool's close reason, OVERLOADED when the queue is full, the
   * signal's reason when it aborts first, or the C_OpenSession failure.
   */
  async acquire(signal: CancelSignal): Promise<PooledSession> {
    await this.permit(signal);
    let slot: Slot;
    try {
      slot = await this.pool.acquire();
    } catch {
      // Only a stopped pool refuses (generic-pool is draining).
      this.returnPermit();
      throw this.closedWith;
    }
    if (isFailed(slot)) {
      this.destroyFailed(slot);
      throw slot.failed;
    }
    if (this.closedWith !== undefined) {
      this.release(slot);
      throw this.closedWith;
    }
    return slot;
  }

  private permit(signal: CancelSignal): Promise<void> {
    if (this.closedWith !== undefined) return Promise.reject(this.closedWith);
    if (signal.aborted) return Promise.reject(signal.reason);
    if (this.permits > 0) {
      this.permits--;
      return Promise.resolve();
    }
    if (this.waiters.size >= this.o.maxWaiting) return Promise.reject(overloaded());
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const onAbort = (): void => {
        settled = true;
        this.waiters.delete(waiter);
        reject(signal.reason);
      };
      const waiter: Waiter = {
        grant: () => {
          if (settled) return false;
          settled = true;
          signal.removeEventListener('abort', onAbort);
          resolve();
          return true;
        },
        fail: (e) => {
          if (settled) return;
          settled = true;
          signal.removeEventListener('abort', onAbort);
          reject(e);
        },
      };
      this.waiters.add(waiter);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** The permit goes to the longest waiter still waiting, else back to the pool. */
  private returnPermit(): void {
    for (const w of this.waiters) {
      this.waiters.delete(w);
      if (w.grant()) return;
    }
    this.permits++;
  }

  release(s: PooledSession): void {
    if (s.gone || this.closedWith !== undefined) void this.pool.destroy(s);
    else void this.pool.release(s);
    this.returnPermit();
  }

  /** For a session a failure may have left unusable; a waiter gets a fresh one (one C_OpenSession, never a loop). */
  destroy(s: PooledSession): void {
    void this.pool.destroy(s);
    this.returnPermit();
  }

  /**
   * Checks every idle session with `alive` (which answers false only when the HSM no longer knows
   * the session) and drops the dead ones, so that the next callers do not each trip over one.
   * The sessions are borrowed meanwhile, so nobody uses one while it is checked.
   */
  async sweep(alive: (handle: Handle) => Promise<boolean>): Promise<number> {
    const n = Math.min(this.permits, this.pool.available);
    this.permits -= n;
    const idle = await Promise.all(Array.from({ length: n }, () => this.pool.acquire()));
    let dropped = 0;
    await Promise.all(
      idle.map(async (s) => {
        if (isFailed(s)) return this.destroyFailed(s);
        if (!(await alive(s.handle).catch(() => true))) {
          s.gone = true;
          dropped++;
        }
        this.release(s);
      }),
    );
    return dropped;
  }

  /**
   * After a failed C_OpenSession the permit is parked, not passed to the next waiter: handing it
   * on would try the dead HSM once per waiter. Waiters get the next session released; a new
   * caller may try to open one.
   */
  private destroyFailed(s: FailedOpen): void {
    void this.pool.destroy(s);
    this.permits++;
  }

  private stop(reason: unknown): void {
    this.closedWith = reason;
    for (const w of this.waiters) w.fail(reason);
    this.waiters.clear();
  }

  /**
   * After a lost connection: waiters fail with `reason` now, and no session is closed (C_Finalize
   * ends them all; closing an old handle later could close a new session that reuses it).
   */
  abandon(reason: unknown): void {
    this.abandoned = true;
    this.stop(reason);
    void this.pool
      .drain()
      .then(() => this.pool.clear())
      .catch(() => undefined);
  }

  /** Shutdown: waiters fail, borrowed sessions get up to `timeoutMs` to come back, then all are closed. */
  async shutdown(reason: unknown, timeoutMs: number): Promise<void> {
    this.stop(reason);
    for (let waited = 0; this.pool.borrowed > 0 && waited < timeoutMs; waited += 10) await new Promise((r) => setTimeout(r, 10));
    await this.pool.clear();
  }
}
