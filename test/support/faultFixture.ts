/**
 * The set-up the process-boundary fault tests share: a token of the test's own with one EC P-256
 * key, optionally the p11shim module in front of SoftHSMv2, and the service as a separate process
 * signing with that key. Registers its own before/after hooks, so a test file declares it once at
 * the top and reads its fields inside the tests.
 */
import assert from 'node:assert/strict';
import { createPublicKey, type KeyObject } from 'node:crypto';
import { join } from 'node:path';
import { after, before } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { ensureShimBuilt, ShimControl } from '../../testkit/p11shim.js';
import { signatureVerifies, startServiceProcess, type HttpResult, type ServiceProcess } from './faultService.js';
import { createTestToken, type TestToken } from './testToken.js';

export interface FaultFixtureOptions {
  /** The signing key's name; the tests sign with ECDSA_SHA_256 over it. */
  readonly key: string;
  /** Puts the p11shim module in front of SoftHSMv2, its control file in the token's directory. */
  readonly shim?: boolean;
  /** Runs once the token exists (the outage test starts its p11-kit server here). */
  readonly setUp?: (token: TestToken) => Promise<void>;
  /** Runs after the service stops and before the token is removed. */
  readonly tearDown?: () => Promise<void>;
}

export const FAULT_ALGORITHM = 'ECDSA_SHA_256';

/** The service's settings in a fault test; the fixture turns them into its environment. */
export interface FaultServiceSettings {
  /** WORKERS; omitted: the service's default, one per CPU. */
  readonly workers?: number;
  readonly sessions: number;
  readonly threads?: number;
  readonly maxWaiting?: number;
  readonly requestDeadlineMs?: number;
  readonly logLevel: 'debug' | 'info' | 'warn' | 'error';
  /** Anything else the service needs, such as the outage test's p11-kit client module. */
  readonly env?: Record<string, string>;
}

/** The service's environment for the settings (without the token's; see FaultFixture.env). */
export function serviceEnv(s: FaultServiceSettings): Record<string, string> {
  return {
    ...s.env,
    ...(s.workers !== undefined ? { WORKERS: String(s.workers) } : {}),
    HSM_SESSIONS: String(s.sessions),
    ...(s.threads !== undefined ? { HSM_THREADS: String(s.threads) } : {}),
    ...(s.maxWaiting !== undefined ? { HSM_MAX_WAITING: String(s.maxWaiting) } : {}),
    ...(s.requestDeadlineMs !== undefined ? { REQUEST_DEADLINE_MS: String(s.requestDeadlineMs) } : {}),
    LOG_LEVEL: s.logLevel,
  };
}

export class FaultFixture {
  token!: TestToken;
  private shimControl: ShimControl | undefined;
  private running: ServiceProcess | undefined;
  private key: KeyObject | undefined;

  private constructor(private readonly o: FaultFixtureOptions) {}

  /** Declares the fixture in a test file: the token (and shim) exist from `before` on and go in `after`. */
  static use(o: FaultFixtureOptions): FaultFixture {
    const f = new FaultFixture(o);
    before(async () => {
      f.token = await createTestToken([{ name: o.key, spec: 'ECC_NIST_P256' }]);
      if (o.shim) f.shimControl = new ShimControl(join(f.token.dir, 'shim.control'));
      await o.setUp?.(f.token);
    });
    after(async () => {
      f.shimControl?.reset();
      await f.running?.stop();
      await o.tearDown?.();
      f.token?.cleanup();
    });
    return f;
  }

  get shim(): ShimControl {
    if (!this.shimControl) throw new Error('this fault fixture has no shim: declare it with { shim: true }');
    return this.shimControl;
  }

  /** The service's environment for the token, with the shim loaded in front of SoftHSMv2 when the fixture has one. */
  env(extra: Record<string, string>): NodeJS.ProcessEnv {
    return this.token.env(this.shimControl ? { HSM_MODULE: ensureShimBuilt(), ...this.shimControl.env(), ...extra } : extra);
  }

  /** Starts the service (stopping the one before, if any) and reads the key's public key from it. */
  async start(settings: FaultServiceSettings, o: { maxSockets: number }): Promise<ServiceProcess> {
    await this.running?.stop();
    this.running = await startServiceProcess(this.env(serviceEnv(settings)), o);
    const info = await this.running.driver.request('GET', `/v1/keys/${this.o.key}`);
    assert.equal(info.status, 200, info.text);
    this.key = createPublicKey((info.body as { versions: { publicKeyPem: string }[] }).versions[0]!.publicKeyPem);
    return this.running;
  }

  /** One sign request; `verified` is true for a 200 whose signature verifies against the key. */
  async sign(message: Buffer, headers: Record<string, string> = {}): Promise<{ r: HttpResult; verified: boolean }> {
    const s = this.service();
    const r = await s.driver.request('POST', `/v1/keys/${this.o.key}/sign`, { algorithm: FAULT_ALGORITHM, message: message.toString('base64') }, headers);
    const verified = r.status === 200 && signatureVerifies(this.key!, FAULT_ALGORITHM, message, (r.body as { signature: string }).signature);
    return { r, verified };
  }

  /** Undefined once /readyz says ready with no session in use, nobody waiting and no call in flight; else what it says. */
  async notBackToNormal(): Promise<string | undefined> {
    const r = await this.service().readyz();
    const b = r.body as { sessions: { inUse: number; waiting: number }; callsInFlight: number };
    return r.status === 200 && b.sessions.inUse === 0 && b.sessions.waiting === 0 && b.callsInFlight === 0
      ? undefined
      : `not back to normal: ${r.status} ${r.text}`;
  }

  private service(): ServiceProcess {
    if (!this.running) throw new Error('start the service first');
    return this.running;
  }
}

/** Runs `fn`, then waits `intervalMs`, for as long as `go()` holds: the tests' /readyz samplers. */
export async function sampleWhile(go: () => boolean, intervalMs: number, fn: () => Promise<void>): Promise<void> {
  while (go()) {
    await fn();
    await sleep(intervalMs);
  }
}
