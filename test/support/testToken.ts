import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import type { KeySpec } from '../../src/crypto/algorithms.js';
import { loadConfig, type Config } from '../../src/config/config.js';
import { composeService, type RunningService } from '../../src/composeService.js';
import { ensureLocalToken, type LocalToken } from '../../src/dev/softHsm.js';
import { Pkcs11KeyAdmin } from '../../src/hsm/pkcs11/Pkcs11KeyAdmin.js';

/**
 * A real SoftHSMv2 token of the test's own, in a temp dir. SOFTHSM2_CONF is per process: node's
 * test runner gives every test file its own process, so files do not share tokens.
 */
export interface TestToken extends LocalToken {
  cleanup(): void;
  admin(): Promise<Pkcs11KeyAdmin>;
  env(extra?: Record<string, string>): NodeJS.ProcessEnv;
}

export async function createTestToken(keys: readonly { name: string; spec: KeySpec }[] = []): Promise<TestToken> {
  const dir = mkdtempSync(join(tmpdir(), 'hsm-signer-test-'));
  const token = ensureLocalToken(dir, 'test-token');
  process.env.SOFTHSM2_CONF = token.conf;
  const admin = (): Promise<Pkcs11KeyAdmin> => Pkcs11KeyAdmin.open({ modulePath: token.modulePath, tokenLabel: token.label, pin: token.pin });
  if (keys.length) {
    const a = await admin();
    try {
      for (const k of keys) await a.createKey(k.name, k.spec);
    } finally {
      await a.close();
    }
  }
  return {
    ...token,
    admin,
    env: (extra = {}) => ({
      SOFTHSM2_CONF: token.conf,
      HSM_MODULE: token.modulePath,
      HSM_TOKEN_LABEL: token.label,
      HSM_PIN_FILE: token.pinFile,
      // No WORKERS: a service process started with this environment runs the default (one worker per CPU).
      LOG_LEVEL: 'silent',
      // The certificate inventory next to the token, as `npm start` keeps it under .hsm/.
      ISSUANCE_DB: `sqlite:${join(dir, 'issuance.db')}`,
      PATH: process.env.PATH ?? '',
      ...extra,
    }),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** The real service (one worker's graph) on the token, in this process. */
export async function startTestService(
  token: TestToken,
  extra: Record<string, string> = {},
  logger: pino.Logger = pino({ level: 'silent' }),
): Promise<RunningService & { config: Config }> {
  const config = loadConfig(token.env(extra));
  const running = await composeService(config, logger);
  return { ...running, config };
}
