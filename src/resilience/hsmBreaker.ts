import CircuitBreaker from 'opossum';
import { ServiceError } from '../errors.js';
import { HsmError, type FailureClass } from '../hsm/errors.js';

export interface BreakerOptions {
  /** Failure percentage over the rolling window that opens the circuit. */
  readonly errorThresholdPercentage: number;
  /** How long it stays open before letting a probe through (half-open). */
  readonly resetTimeoutMs: number;
  /** Calls in the window before the percentage counts. */
  readonly volumeThreshold: number;
  readonly rollingWindowMs: number;
}

/**
 * Only an HSM that is down, busy or refusing us counts. Client errors, missing keys and shed load
 * never do; nor do failures the KeyManager repairs on the spot (a lost login, a stale handle, a
 * dead session): each is one failed attempt followed by a good one, and counting them would let
 * a handful of repairs open the circuit at low traffic. If they persist, they become a lost
 * connection, which counts.
 */
const COUNTS: ReadonlySet<FailureClass> = new Set(['connectionLost', 'throttled', 'credentials']);

export function countsAgainstHsm(e: unknown): boolean {
  return e instanceof HsmError && COUNTS.has(e.failure);
}

export type HsmBreaker = CircuitBreaker<[() => Promise<unknown>], unknown>;

/**
 * One breaker per worker process around every HSM operation. opossum's own timeout is off: the
 * request deadline bounds waiting, and a call must keep its session until the HSM answers.
 *
 * Its latency percentiles and snapshots are off too: with them, opossum gathers every call's latency
 * of the window and sorts them all on each counted failure (the error rate is read through
 * the same statistics) and for every snapshot. With 6,000 calls in the window (3,000 a second per
 * worker, the default 2 s window) that was ~0.3 ms of event loop per failure instead of ~0.03
 * (bench/breakerFailureCost.ts), in an outage hundreds a second. Latencies are in /metrics anyway.
 */
export function createHsmBreaker(o: BreakerOptions): HsmBreaker {
  return new CircuitBreaker((op: () => Promise<unknown>) => op(), {
    timeout: false,
    rollingPercentilesEnabled: false,
    enableSnapshots: false,
    errorThresholdPercentage: o.errorThresholdPercentage,
    resetTimeout: o.resetTimeoutMs,
    volumeThreshold: o.volumeThreshold,
    rollingCountTimeout: o.rollingWindowMs,
    rollingCountBuckets: 10,
    errorFilter: (e: unknown) => !countsAgainstHsm(e),
  });
}

export function breakerState(b: HsmBreaker): 'closed' | 'open' | 'halfOpen' {
  return b.opened ? 'open' : b.halfOpen ? 'halfOpen' : 'closed';
}

/** Runs op through the breaker; an open circuit becomes a fast 503 with Retry-After. (Not async: one frame less per call.) */
export function throughBreaker<T>(b: HsmBreaker, op: () => Promise<T>, resetTimeoutMs: number): Promise<T> {
  return (b.fire(op) as Promise<T>).catch((e: unknown) => {
    if ((e as { code?: string }).code === 'EOPENBREAKER') {
      throw new ServiceError(
        'HSM_UNAVAILABLE',
        'the HSM circuit breaker is open after repeated HSM failures; retry later',
        Math.max(1, Math.ceil(resetTimeoutMs / 1000)),
      );
    }
    throw e;
  });
}
