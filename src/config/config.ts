import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { z } from 'zod';

/** The default PKCS#11 module: SoftHSMv2 where Debian installs it (CloudHSM: /opt/cloudhsm/lib/libcloudhsm_pkcs11.so). */
export const DEFAULT_HSM_MODULE = '/usr/lib/softhsm/libsofthsm2.so';

const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);
const bool = z.enum(['true', 'false', '1', '0']).transform((v) => v === 'true' || v === '1');

/**
 * Every setting, from the environment, validated once at start. A bad value fails with the
 * variable's name; the PIN is read here and never logged (toLoggable() leaves it out).
 */
const schema = z
  .object({
    NODE_ENV: z.string().default('development'),
    HSM_MODULE: z.string().min(1).default(DEFAULT_HSM_MODULE),
    HSM_TOKEN_LABEL: z.string().min(1).max(32).default('hsm-signer'),
    HSM_SLOT: int(0, 1_000_000).optional(),
    HSM_PIN: z.string().min(1).optional(),
    HSM_PIN_FILE: z.string().min(1).optional(),
    WORKERS: int(1, 256).default(availableParallelism()),
    HSM_SESSIONS: int(1, 1024).default(16),
    HSM_THREADS: int(1, 1024).optional(),
    HSM_MAX_WAITING: int(0, 100_000).default(512),
    HOST: z.string().min(1).optional(),
    PORT: int(0, 65_535).default(8080),
    BODY_LIMIT_BYTES: int(1024, 64 * 1024 * 1024).default(1024 * 1024),
    REQUEST_DEADLINE_MS: int(10, 600_000).default(2000),
    KEY_REFRESH_MS: int(100, 86_400_000).default(10_000),
    RETRY_MAX_ATTEMPTS: int(1, 10).default(3),
    RETRY_BASE_MS: int(1, 10_000).default(10),
    RETRY_CAP_MS: int(1, 60_000).default(500),
    RETRY_BUDGET_RATIO: z.coerce.number().min(0).max(1).default(0.1),
    BREAKER_ERROR_PERCENT: int(1, 100).default(50),
    BREAKER_RESET_MS: int(100, 600_000).default(2000),
    BREAKER_VOLUME: int(1, 100_000).default(10),
    BREAKER_WINDOW_MS: int(100, 600_000).default(2000),
    CLIENTS_FILE: z.string().min(1).optional(),
    CLIENT_MAX_IN_FLIGHT: int(0, 1_000_000).default(64),
    AUDIT_LOG: z.string().min(1).optional(),
    LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    ALLOW_REMOTE_DEV: bool.default(false),
  })
  .refine((c) => c.HSM_PIN !== undefined || c.HSM_PIN_FILE !== undefined, { message: 'set HSM_PIN or HSM_PIN_FILE', path: ['HSM_PIN'] })
  .refine((c) => c.RETRY_BASE_MS <= c.RETRY_CAP_MS, { message: 'must not exceed RETRY_CAP_MS', path: ['RETRY_BASE_MS'] });

export interface Config {
  readonly env: string;
  readonly production: boolean;
  readonly hsm: {
    readonly modulePath: string;
    readonly tokenLabel: string;
    readonly slotIndex?: number;
    readonly pin: string;
    readonly sessions: number;
    readonly threads: number;
    readonly maxWaiting: number;
    readonly keyRefreshMs: number;
  };
  readonly workers: number;
  readonly host: string;
  readonly port: number;
  readonly bodyLimitBytes: number;
  readonly requestDeadlineMs: number;
  readonly retry: { readonly maxAttempts: number; readonly baseMs: number; readonly capMs: number; readonly budgetRatio: number };
  readonly breaker: { readonly errorThresholdPercentage: number; readonly resetTimeoutMs: number; readonly volumeThreshold: number; readonly rollingWindowMs: number };
  readonly clientsFile?: string;
  /** Requests in flight per client and worker (0: no limit); applies only when clients authenticate. */
  readonly clientMaxInFlight: number;
  /** A path, or `stdout`; absent: no audit trail. */
  readonly auditLog?: string;
  readonly logLevel: string;
  /** Development mode: no clients file and not production, so no auth and loopback only. */
  readonly devMode: boolean;
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

function readPin(file: string): string {
  try {
    return readFileSync(file, 'utf8').replace(/\r?\n$/, '');
  } catch (e) {
    throw new ConfigError(`HSM_PIN_FILE: cannot read the file (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const parsed = schema.safeParse(env);
  if (!parsed.success) {
    // Name the variable and the rule, never the value (it may be a PIN).
    const problems = parsed.error.issues.map((i) => `${i.path.join('.') || 'environment'}: ${i.message}`);
    throw new ConfigError(`invalid configuration: ${problems.join('; ')}`);
  }
  const c = parsed.data;
  const pin = c.HSM_PIN_FILE !== undefined ? readPin(c.HSM_PIN_FILE) : c.HSM_PIN!;
  if (pin.length === 0) throw new ConfigError('HSM_PIN_FILE: the file is empty');
  const production = c.NODE_ENV === 'production';
  const devMode = !production && c.CLIENTS_FILE === undefined;
  const host = c.HOST ?? (devMode ? '127.0.0.1' : '0.0.0.0');
  if (devMode && !c.ALLOW_REMOTE_DEV && !['127.0.0.1', 'localhost', '::1'].includes(host)) {
    throw new ConfigError('HOST: development mode (no CLIENTS_FILE) has no authentication and listens on loopback only');
  }
  return {
    env: c.NODE_ENV,
    production,
    hsm: {
      modulePath: c.HSM_MODULE,
      tokenLabel: c.HSM_TOKEN_LABEL,
      ...(c.HSM_SLOT !== undefined ? { slotIndex: c.HSM_SLOT } : {}),
      pin,
      sessions: c.HSM_SESSIONS,
      // Each thread is one HSM call in flight; more threads than sessions would idle.
      threads: Math.min(c.HSM_THREADS ?? Math.min(c.HSM_SESSIONS, 4), c.HSM_SESSIONS),
      maxWaiting: c.HSM_MAX_WAITING,
      keyRefreshMs: c.KEY_REFRESH_MS,
    },
    workers: c.WORKERS,
    host,
    port: c.PORT,
    bodyLimitBytes: c.BODY_LIMIT_BYTES,
    requestDeadlineMs: c.REQUEST_DEADLINE_MS,
    retry: { maxAttempts: c.RETRY_MAX_ATTEMPTS, baseMs: c.RETRY_BASE_MS, capMs: c.RETRY_CAP_MS, budgetRatio: c.RETRY_BUDGET_RATIO },
    breaker: { errorThresholdPercentage: c.BREAKER_ERROR_PERCENT, resetTimeoutMs: c.BREAKER_RESET_MS, volumeThreshold: c.BREAKER_VOLUME, rollingWindowMs: c.BREAKER_WINDOW_MS },
    ...(c.CLIENTS_FILE !== undefined ? { clientsFile: c.CLIENTS_FILE } : {}),
    clientMaxInFlight: c.CLIENT_MAX_IN_FLIGHT,
    ...(c.AUDIT_LOG !== undefined ? { auditLog: c.AUDIT_LOG } : {}),
    logLevel: c.LOG_LEVEL,
    devMode,
  };
}
