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
 */
export async function retry<T>(fn: (attempt: number) => Promise<T>, o: RetryOptions): Promise<T> {
  const sleep = o.sleep ?? realSleep;
  const now = o.now ?? Date.now;
  o.budget.onRequest();
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (e) {
      if (!o.isRetryable(e) || attempt + 1 >= o.maxAttempts) throw e;
      const delay = fullJitterBackoff(attempt, o.backoff, o.random);
      if (now() + delay >= o.deadline || !o.budget.tryRetry()) throw e;
      o.onRetry?.(attempt + 1, delay, e);
      await sleep(delay);
    }
  }
}
