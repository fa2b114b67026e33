export interface RetryBudgetOptions {
  /** Retries allowed in a burst before traffic has paid for them (the bucket's size). */
  readonly maxTokens?: number;
  /**
   * Retries per second allowed whatever the traffic, so that a quiet service still repairs a
   * lost login or a stale handle transparently. Small enough not to matter to a dead HSM.
   */
  readonly minPerSecond?: number;
  readonly now?: () => number;
  /** Called for each retry refused because the bucket is empty (counted in /metrics). */
  readonly onRefused?: () => void;
}

/**
 * A token bucket that caps retries at a share of traffic: each request deposits `ratio` tokens,
 * each retry takes one, and the bucket also fills by `minPerSecond` over time. When the HSM is
 * down every attempt fails, the bucket empties, and the service stops multiplying its load on a
 * dead HSM (AWS Builders' Library, "retry budget"; Finagle's RetryBudget has the same floor).
 */
export class RetryBudget {
  private tokens: number;
  private readonly maxTokens: number;
  private readonly minPerSecond: number;
  private readonly now: () => number;
  private readonly onRefused: () => void;
  private last: number;

  constructor(
    private readonly ratio: number,
    o: RetryBudgetOptions = {},
  ) {
    this.maxTokens = o.maxTokens ?? 10;
    this.minPerSecond = o.minPerSecond ?? 5;
    this.now = o.now ?? Date.now;
    this.onRefused = o.onRefused ?? (() => undefined);
    this.tokens = this.maxTokens;
    this.last = this.now();
  }

  private add(n: number): void {
    this.tokens = Math.min(this.maxTokens, this.tokens + n);
  }

  private refill(): void {
    const t = this.now();
    if (t > this.last) this.add(((t - this.last) / 1000) * this.minPerSecond);
    this.last = t;
  }

  onRequest(): void {
    this.refill();
    this.add(this.ratio);
  }

  tryRetry(): boolean {
    this.refill();
    // Ten deposits of 0.1 add up to 0.9999999999999999: allow for the rounding.
    if (this.tokens < 1 - 1e-9) {
      this.onRefused();
      return false;
    }
    this.tokens = Math.max(0, this.tokens - 1);
    return true;
  }

  get available(): number {
    this.refill();
    return this.tokens;
  }
}
