import type { Logger } from 'pino';
import { CKR, isPkcs11Failure, SESSION_GONE } from '../errors.js';
import type { AsyncPkcs11, Handle } from './AsyncPkcs11.js';
import { P11 } from './constants.js';
import { Pkcs11Error } from './threadProtocol.js';

/** CK_STATE values with nobody logged in (CKS_RO_PUBLIC_SESSION, CKS_RW_PUBLIC_SESSION); pkcs11js does not export them. */
const PUBLIC_SESSION_STATES: ReadonlySet<number> = new Set([0, 2]);

/** Throws CKR_USER_NOT_LOGGED_IN when nobody is logged in on the session (a logged-out session sees no private keys). */
export async function assertLoggedIn(p11: AsyncPkcs11, session: Handle): Promise<void> {
  if (PUBLIC_SESSION_STATES.has(await p11.getSessionState(session))) {
    throw new Pkcs11Error(CKR.USER_NOT_LOGGED_IN, 'C_GetSessionInfo');
  }
}

/**
 * The login, held on a session of its own outside the pool: login is per application, so it
 * survives the pool's churn, and this session tells whether the login (or every session, after
 * C_CloseAllSessions or a token reset) is gone. One per connection generation.
 */
export class LoginSession {
  private relogging: Promise<void> | undefined;

  constructor(
    private readonly p11: AsyncPkcs11,
    private readonly slot: Handle,
    private session: Handle,
    private readonly pin: string,
    private readonly logger: Logger,
    private readonly flags: number,
  ) {}

  private async login(): Promise<void> {
    try {
      await this.p11.login(this.session, P11.CKU_USER, this.pin);
    } catch (e) {
      if (isPkcs11Failure(e) && e.code === CKR.USER_ALREADY_LOGGED_IN) return;
      throw e;
    }
  }

  /** Logs in again after CKR_USER_NOT_LOGGED_IN; concurrent callers share one attempt. */
  relogin(): Promise<void> {
    this.relogging ??= (async () => {
      try {
        await this.login();
      } catch (e) {
        if (!isPkcs11Failure(e) || !SESSION_GONE.has(e.code)) throw e;
        // The login session itself was closed behind our back: log in on a new one.
        this.session = await this.p11.openSession(this.slot, this.flags);
        await this.login();
      }
      this.logger.warn('HSM login was lost; logged in again');
    })().finally(() => {
      this.relogging = undefined;
    });
    return this.relogging;
  }

  /** True when the login session is gone (then every session is); a lost login alone is restored here. */
  async gone(): Promise<boolean> {
    try {
      await assertLoggedIn(this.p11, this.session);
      return false;
    } catch (e) {
      if (!isPkcs11Failure(e)) throw e;
      if (SESSION_GONE.has(e.code)) return true;
      if (e.code === CKR.USER_NOT_LOGGED_IN) {
        await this.relogin();
        return false;
      }
      throw e;
    }
  }

  async logout(): Promise<void> {
    await this.p11.logout(this.session).catch(() => undefined);
  }
}
