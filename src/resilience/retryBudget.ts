/**
 * A token bucket that caps retries at a share of traffic: each request deposits `ratio` tokens,
 * each retry takes one. When the HSM is down every attempt fails, the bucket empties, and the
 * service stops multiplying its load on a dead HSM (AWS Builders' Library, "retry budget").
 */
export class RetryBudget {
  private tokens: number;

  constructor(
    private readonly ratio: number,
    /** Retries allowed in a burst before traffic has paid for them. */
    private readonly maxTokens = 10,
  ) {
    this.tokens = maxTokens;
  }

  onRequest(): void {
    this.tokens = Math.min(this.maxTokens, this.tokens + this.ratio);
  }

  tryRetry(): boolean {
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  get available(): number {
    return this.tokens;
  }
}
