import { fullJitterBackoff, type BackoffOptions } from './backoff.js';
import type { RetryBudget } from './retryBudget.js';

export interface RetryOptions {
  readonly maxAttempts: number;
  readonly backoff: BackoffOptions;
  /** Epoch ms after which no new attempt starts. */
  readonly deadline: number;
  readonly budget: RetryBudget;
  readonly isRetryable: (e: unknown) => boolean;
  readonly random?: () => number;
  readonly sleep?: (ms: number) => Promise<void>;
  readonly now?: () => number;
  readonly onRetry?: (attempt: number, delayMs: number, e: unknown) => void;
}

const realSleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Runs fn until it succeeds, its error is not retryable, the attempts or the retry budget run
 * out, or the next sleep would end past the deadline. Full-jitter backoff between attempts.
 *
 * The first attempt runs without an async frame of its own: nearly every call succeeds at once,
 * and on the hot path every async frame is garbage per request (retries go through retryAfter).
 */
export function retry<T>(fn: (attempt: number) => Promise<T>, o: RetryOptions): Promise<T> {
  o.budget.onRequest();
  let first: Promise<T>;
  try {
    first = fn(0);
  } catch (e) {
    first = Promise.reject(e);
  }
  return first.catch((e: unknown) => retryAfter(fn, o, e));
}

async function retryAfter<T>(fn: (attempt: number) => Promise<T>, o: RetryOptions, firstError: unknown): Promise<T> {
  const sleep = o.sleep ?? realSleep;
  const now = o.now ?? Date.now;
  let e = firstError;
  for (let attempt = 0; ; attempt++) {
    if (!o.isRetryable(e) || attempt + 1 >= o.maxAttempts) throw e;
    const delay = fullJitterBackoff(attempt, o.backoff, o.random);
    if (now() + delay >= o.deadline || !o.budget.tryRetry()) throw e;
    o.onRetry?.(attempt + 1, delay, e);
    await sleep(delay);
    try {
      return await fn(attempt + 1);
    } catch (x) {
      e = x;
    }
  }
}
