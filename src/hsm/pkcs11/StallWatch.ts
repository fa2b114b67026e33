import type { Logger } from 'pino';
import type { AsyncPkcs11 } from './AsyncPkcs11.js';

/**
 * A stalled HSM produces no errors, only silence: this says so in the log (once when calls stop
 * returning, once when they return again) and in readiness.
 */
export class StallWatch {
  private timer: NodeJS.Timeout | undefined;
  private logged = false;

  constructor(
    private readonly p11: AsyncPkcs11,
    /** A call unanswered for this long makes the HSM "stalled". */
    private readonly stallMs: number,
    private readonly logger: Logger,
  ) {}

  start(): void {
    this.timer = setInterval(() => this.check(), 500);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private check(): void {
    const age = this.p11.oldestCallAgeMs ?? 0;
    const stalled = age > this.stallMs;
    if (stalled && !this.logged) this.logger.warn({ oldestCallMs: Math.round(age), callsInFlight: this.p11.inFlight }, 'HSM calls are not returning');
    if (!stalled && this.logged) this.logger.warn('HSM calls are returning again');
    this.logged = stalled;
  }

  /** Why the HSM is not ready, while it is stalled. */
  get reason(): string | undefined {
    const age = this.p11.oldestCallAgeMs ?? 0;
    return age > this.stallMs ? `HSM calls have not returned for ${Math.round(age)} ms` : undefined;
  }
}
