import type { Logger } from 'pino';
import { isPkcs11Failure, SESSION_GONE } from '../errors.js';
import type { AsyncPkcs11 } from './AsyncPkcs11.js';
import type { LoginSession } from './LoginSession.js';
import type { SessionPool } from './SessionPool.js';

/** Session-invalid failures in a row (no success between) that mean the sessions are not coming back. */
const PERSISTENT_SESSION_LOSS = 3;

/**
 * Tells what a vanished pooled session means. The idle sessions are checked and the dead ones
 * dropped, so one request pays for the check instead of each tripping over a dead session; if the
 * login session is gone too (C_CloseAllSessions, a token reset) or the losses persist, everything
 * must be rebuilt.
 */
export class SessionLoss {
  private lossStreak = 0;
  private checking: Promise<boolean> | undefined;

  constructor(
    private readonly p11: AsyncPkcs11,
    private readonly logger: Logger,
    /** The connection's current login session and pool (both change with each generation). */
    private readonly current: () => { readonly login: LoginSession | undefined; readonly pool: SessionPool | undefined },
  ) {}

  /** A call succeeded, or a new generation began: earlier losses were not persistent. */
  reset(): void {
    this.lossStreak = 0;
  }

  get streak(): number {
    return this.lossStreak;
  }

  /** A pooled session vanished: true when everything must be rebuilt. Concurrent callers share one check. */
  async mustRebuild(): Promise<boolean> {
    if (++this.lossStreak >= PERSISTENT_SESSION_LOSS) return true;
    this.checking ??= this.check().finally(() => {
      this.checking = undefined;
    });
    return this.checking;
  }

  private async check(): Promise<boolean> {
    const login = this.current().login;
    if (!login || (await login.gone())) return true;
    const dropped = await (this.current().pool?.sweep((h) =>
      this.p11.getSessionState(h).then(
        () => true,
        (e: unknown) => !(isPkcs11Failure(e) && SESSION_GONE.has(e.code)),
      ),
    ) ?? 0);
    if (dropped > 0) this.logger.warn({ dropped }, 'HSM sessions were closed behind our back; dropped them');
    return false;
  }
}
