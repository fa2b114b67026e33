/** Backoff as pure functions of the attempt: testable without timers. */
export interface BackoffOptions {
  readonly baseMs: number;
  readonly capMs: number;
}

/** The ceiling of the sleep before retry `attempt` (0-based): min(cap, base * 2^attempt). */
export function backoffCeiling(attempt: number, { baseMs, capMs }: BackoffOptions): number {
  return Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
}

/** "Full jitter" (AWS Architecture Blog): sleep = random(0, min(cap, base * 2^attempt)). */
export function fullJitterBackoff(attempt: number, options: BackoffOptions, random: () => number = Math.random): number {
  return Math.floor(random() * backoffCeiling(attempt, options));
}
