import { readFileSync } from 'node:fs';
import { BlockList, isIP } from 'node:net';
import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import { z } from 'zod';

/** The default PKCS#11 module: SoftHSMv2 where Debian installs it (CloudHSM: /opt/cloudhsm/lib/libcloudhsm_pkcs11.so). */
export const DEFAULT_HSM_MODULE = '/usr/lib/softhsm/libsofthsm2.so';

const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);
/** An http(s) URL without query or fragment: the start of the URLs written into issued certificates. */
const urlBase = z
  .string()
  .max(512)
  .refine((v) => {
    const u = URL.canParse(v) ? new URL(v) : undefined;
    return u !== undefined && (u.protocol === 'http:' || u.protocol === 'https:') && u.search === '' && u.hash === '' && u.username === '' && u.password === '';
  }, 'must be an http:// or https:// URL without query, fragment or credentials');
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
    DRAIN_MS: int(0, 600_000).default(5000),
    LIVENESS_STALL_MS: int(1000, 3_600_000).default(30_000),
    // Set at build time (Dockerfile's GIT_COMMIT build argument); a label value in /metrics, so bounded.
    GIT_COMMIT: z
      .string()
      .regex(/^[0-9A-Za-z._-]{1,64}$/, 'must be 1-64 letters, digits, dots, dashes or underscores')
      .default('unknown'),
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
    TLS_CERT_FILE: z.string().min(1).optional(),
    TLS_KEY_FILE: z.string().min(1).optional(),
    TLS_CLIENT_CA_FILE: z.string().min(1).optional(),
    ALLOW_PLAINTEXT: bool.default(false),
    HEADERS_TIMEOUT_MS: int(100, 600_000).default(10_000),
    REQUEST_TIMEOUT_MS: int(100, 3_600_000).default(30_000),
    MAX_HEADER_BYTES: int(1024, 1024 * 1024).default(16 * 1024),
    KEEP_ALIVE_TIMEOUT_MS: int(1000, 600_000).default(65_000),
    MAX_REQUESTS_PER_SOCKET: int(0, 1_000_000_000).default(0),
    CLIENT_MAX_IN_FLIGHT: int(0, 1_000_000).default(64),
    AUDIT_LOG: z.string().min(1).optional(),
    CRL_VALIDITY_HOURS: int(1, 8760).default(24),
    CRL_URL_BASE: urlBase.optional(),
    OCSP_URL_BASE: urlBase.optional(),
    ISSUANCE_DB: z.string().min(1).optional(),
    ISSUANCE_DB_FILE: z.string().min(1).optional(),
    ISSUANCE_DB_POOL_SIZE: int(1, 100).optional(),
    LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    ALLOW_REMOTE_DEV: bool.default(false),
    METRICS_HOST: z.string().min(1).default('127.0.0.1'),
    METRICS_PORT: int(1, 65_535).default(9464),
  })
  .refine((c) => c.HSM_PIN !== undefined || c.HSM_PIN_FILE !== undefined, { message: 'set HSM_PIN or HSM_PIN_FILE', path: ['HSM_PIN'] })
  .refine((c) => c.RETRY_BASE_MS <= c.RETRY_CAP_MS, { message: 'must not exceed RETRY_CAP_MS', path: ['RETRY_BASE_MS'] })
  // node:http refuses a headers timeout longer than the whole request's.
  .refine((c) => c.HEADERS_TIMEOUT_MS <= c.REQUEST_TIMEOUT_MS, { message: 'must not exceed REQUEST_TIMEOUT_MS', path: ['HEADERS_TIMEOUT_MS'] })
  // A call may take up to the deadline; liveness (restart) must not fire before readiness (a call stalled past it) has.
  .refine((c) => c.LIVENESS_STALL_MS > c.REQUEST_DEADLINE_MS, { message: 'must be greater than REQUEST_DEADLINE_MS', path: ['LIVENESS_STALL_MS'] });

/** Paths of the PEM files the API's TLS uses; read (and re-read on SIGHUP) by readTlsFiles. */
export interface TlsConfig {
  readonly certFile: string;
  readonly keyFile: string;
  /** Client certificates are required and verified against these CAs. */
  readonly clientCaFile?: string;
}

/** Where issued certificates are recorded (ISSUANCE_DB). */
export type InventoryTarget =
  | { readonly kind: 'sqlite'; readonly path: string }
  /** `redacted`: the URL without its password, for logs and errors; `poolSize`: connections per worker at most (ISSUANCE_DB_POOL_SIZE; absent: the adapter's default). */
  | { readonly kind: 'postgres'; readonly url: string; readonly redacted: string; readonly poolSize?: number };

/** The URL with its password (and any password query parameter) replaced by `***`; anything unparsable entirely hidden. */
export function redactConnectionString(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    for (const k of [...u.searchParams.keys()]) if (/pass/i.test(k)) u.searchParams.set(k, '***');
    return u.toString();
  } catch {
    return '(unparsable connection string)';
  }
}

/**
 * ISSUANCE_DB (or the content of ISSUANCE_DB_FILE, named `variable`): `postgres://` or
 * `postgresql://` URL, `sqlite:<path>`, or a plain file path (relative to the working directory).
 */
function inventoryTarget(value: string, variable: 'ISSUANCE_DB' | 'ISSUANCE_DB_FILE'): InventoryTarget {
  if (/^postgres(ql)?:\/\//i.test(value)) {
    let u: URL | undefined;
    try {
      u = new URL(value);
    } catch {
      // The value may hold a password: the message names only the variable.
    }
    if (!u?.hostname && !u?.searchParams.has('host')) {
      throw new ConfigError(`${variable}: not a valid postgres:// URL (postgres://user:password@host:5432/database)`);
    }
    return { kind: 'postgres', url: value, redacted: redactConnectionString(value) };
  }
  const path = value.replace(/^sqlite:/i, '');
  if (path.length === 0 || /^[a-z][a-z0-9+.-]*:\/\//i.test(path)) {
    throw new ConfigError(`${variable}: must be postgres://..., postgresql://..., sqlite:<file path> or a file path`);
  }
  return { kind: 'sqlite', path: resolve(path) };
}

/** The node:http(s) server's own limits against slow or oversized requests and idle connections. */
export interface ServerLimits {
  readonly headersTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly maxHeaderBytes: number;
  readonly keepAliveTimeoutMs: number;
  /** 0: no limit. */
  readonly maxRequestsPerSocket: number;
}

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
  /** After SIGTERM/SIGINT: how long the listener keeps serving (while /readyz answers 503) before it stops accepting. */
  readonly drainMs: number;
  /** /healthz answers 503 once this worker's oldest HSM call has been unanswered for longer. */
  readonly livenessStallMs: number;
  /** The commit the service was built from (GIT_COMMIT), or 'unknown'. */
  readonly gitCommit: string;
  readonly retry: { readonly maxAttempts: number; readonly baseMs: number; readonly capMs: number; readonly budgetRatio: number };
  readonly breaker: {
    readonly errorThresholdPercentage: number;
    readonly resetTimeoutMs: number;
    readonly volumeThreshold: number;
    readonly rollingWindowMs: number;
  };
  readonly clientsFile?: string;
  readonly tls?: TlsConfig;
  /** Where /metrics is served in production (its own listener); undefined: on the API's port (development). */
  readonly metricsListener?: { readonly host: string; readonly port: number };
  readonly server: ServerLimits;
  /** Requests in flight per client and worker (0: no limit); applies only when clients authenticate. */
  readonly clientMaxInFlight: number;
  /** A path, or `stdout`; absent: no audit trail. */
  readonly auditLog?: string;
  /** CRLs: how long each is valid (CRL_VALIDITY_HOURS); where certificates say to find CRLs and OCSP (CRL_URL_BASE, OCSP_URL_BASE). */
  readonly revocation: { readonly crlValidityHours: number; readonly crlUrlBase?: string; readonly ocspUrlBase?: string };
  /** ISSUANCE_DB or ISSUANCE_DB_FILE; absent: no inventory, so issuing answers 503 INVENTORY_NOT_CONFIGURED (sign and verify work). */
  readonly inventory?: InventoryTarget;
  readonly logLevel: string;
  /** Development mode: not production and no way to identify callers, so no auth and loopback only. */
  readonly devMode: boolean;
  /** What the operator should know at start (one log line each, logged once per service). */
  readonly warnings: readonly string[];
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

/** A secret from a file (a mounted Secret), without its final newline; an error names the variable, never the content. */
export function readSecretFile(variable: string, file: string): string {
  let value: string;
  try {
    value = readFileSync(file, 'utf8').replace(/\r?\n$/, '');
  } catch (e) {
    throw new ConfigError(`${variable}: cannot read the file (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  if (value.length === 0) throw new ConfigError(`${variable}: the file is empty`);
  return value;
}

/** ISSUANCE_DB, or ISSUANCE_DB_FILE: a file holding it (a PostgreSQL URL has a password; mount it from a secret). */
function inventoryOf(c: { ISSUANCE_DB?: string | undefined; ISSUANCE_DB_FILE?: string | undefined }): InventoryTarget | undefined {
  if (c.ISSUANCE_DB !== undefined && c.ISSUANCE_DB_FILE !== undefined) {
    throw new ConfigError('ISSUANCE_DB_FILE: set ISSUANCE_DB or ISSUANCE_DB_FILE, not both');
  }
  if (c.ISSUANCE_DB_FILE !== undefined) return inventoryTarget(readSecretFile('ISSUANCE_DB_FILE', c.ISSUANCE_DB_FILE), 'ISSUANCE_DB_FILE');
  return c.ISSUANCE_DB !== undefined ? inventoryTarget(c.ISSUANCE_DB, 'ISSUANCE_DB') : undefined;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const parsed = schema.safeParse(env);
  if (!parsed.success) {
    // Name the variable and the rule, never the value (it may be a PIN).
    const problems = parsed.error.issues.map((i) => `${i.path.join('.') || 'environment'}: ${i.message}`);
    throw new ConfigError(`invalid configuration: ${problems.join('; ')}`);
  }
  const c = parsed.data;
  const pin = c.HSM_PIN_FILE !== undefined ? readSecretFile('HSM_PIN_FILE', c.HSM_PIN_FILE) : c.HSM_PIN;
  // The schema already requires one of the two; zod's refine does not narrow the type, this does.
  if (pin === undefined) throw new ConfigError('HSM_PIN: set HSM_PIN or HSM_PIN_FILE');
  const production = c.NODE_ENV === 'production';
  if ((c.TLS_CERT_FILE === undefined) !== (c.TLS_KEY_FILE === undefined)) {
    throw new ConfigError(`${c.TLS_CERT_FILE === undefined ? 'TLS_CERT_FILE' : 'TLS_KEY_FILE'}: TLS needs both TLS_CERT_FILE and TLS_KEY_FILE`);
  }
  if (c.TLS_CLIENT_CA_FILE !== undefined && c.TLS_CERT_FILE === undefined) {
    throw new ConfigError('TLS_CERT_FILE: client certificates (TLS_CLIENT_CA_FILE) need TLS: set TLS_CERT_FILE and TLS_KEY_FILE');
  }
  const tls: TlsConfig | undefined =
    c.TLS_CERT_FILE !== undefined && c.TLS_KEY_FILE !== undefined
      ? { certFile: c.TLS_CERT_FILE, keyFile: c.TLS_KEY_FILE, ...(c.TLS_CLIENT_CA_FILE !== undefined ? { clientCaFile: c.TLS_CLIENT_CA_FILE } : {}) }
      : undefined;
  const identifiesCallers = c.CLIENTS_FILE !== undefined || c.TLS_CLIENT_CA_FILE !== undefined;
  // Fail closed: a production service that cannot tell its callers apart would serve every one.
  if (production && !identifiesCallers) {
    throw new ConfigError(
      'CLIENTS_FILE: NODE_ENV=production needs a way to identify callers: set CLIENTS_FILE (bearer tokens, certificate identities) or TLS_CLIENT_CA_FILE (client certificates)',
    );
  }
  const devMode = !production && !identifiesCallers;
  const host = c.HOST ?? (devMode ? '127.0.0.1' : '0.0.0.0');
  const loopback = isLoopback(host);
  if (devMode && !c.ALLOW_REMOTE_DEV && !loopback) {
    throw new ConfigError('HOST: development mode (no CLIENTS_FILE or TLS_CLIENT_CA_FILE) has no authentication and listens on loopback only');
  }
  if (production && !loopback && tls === undefined && !c.ALLOW_PLAINTEXT) {
    throw new ConfigError(
      'TLS_CERT_FILE: in production a non-loopback HOST needs TLS (TLS_CERT_FILE and TLS_KEY_FILE), or ALLOW_PLAINTEXT=true when a sidecar or mesh terminates TLS in front of the service',
    );
  }
  const target = inventoryOf(c);
  const warnings: string[] = [];
  if (c.ISSUANCE_DB_POOL_SIZE !== undefined && target?.kind !== 'postgres') {
    warnings.push('ISSUANCE_DB_POOL_SIZE is set, but ISSUANCE_DB is not a PostgreSQL URL: it has no effect');
  }
  const inventory = target?.kind === 'postgres' && c.ISSUANCE_DB_POOL_SIZE !== undefined ? { ...target, poolSize: c.ISSUANCE_DB_POOL_SIZE } : target;
  if (devMode) warnings.push('development mode: no CLIENTS_FILE or TLS_CLIENT_CA_FILE, so no authentication; listening on loopback only');
  if (production && !loopback && tls === undefined) {
    warnings.push('ALLOW_PLAINTEXT=true: serving plain HTTP on a non-loopback address; TLS must be terminated in front of the service');
  }
  if (c.TLS_CLIENT_CA_FILE !== undefined && c.CLIENTS_FILE === undefined) {
    warnings.push('TLS_CLIENT_CA_FILE without CLIENTS_FILE: every client certificate that CA issued may use every key for every operation');
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
    drainMs: c.DRAIN_MS,
    livenessStallMs: c.LIVENESS_STALL_MS,
    gitCommit: c.GIT_COMMIT,
    retry: { maxAttempts: c.RETRY_MAX_ATTEMPTS, baseMs: c.RETRY_BASE_MS, capMs: c.RETRY_CAP_MS, budgetRatio: c.RETRY_BUDGET_RATIO },
    breaker: {
      errorThresholdPercentage: c.BREAKER_ERROR_PERCENT,
      resetTimeoutMs: c.BREAKER_RESET_MS,
      volumeThreshold: c.BREAKER_VOLUME,
      rollingWindowMs: c.BREAKER_WINDOW_MS,
    },
    ...(c.CLIENTS_FILE !== undefined ? { clientsFile: c.CLIENTS_FILE } : {}),
    ...(tls ? { tls } : {}),
    ...(production ? { metricsListener: { host: c.METRICS_HOST, port: c.METRICS_PORT } } : {}),
    server: {
      headersTimeoutMs: c.HEADERS_TIMEOUT_MS,
      requestTimeoutMs: c.REQUEST_TIMEOUT_MS,
      maxHeaderBytes: c.MAX_HEADER_BYTES,
      keepAliveTimeoutMs: c.KEEP_ALIVE_TIMEOUT_MS,
      maxRequestsPerSocket: c.MAX_REQUESTS_PER_SOCKET,
    },
    clientMaxInFlight: c.CLIENT_MAX_IN_FLIGHT,
    ...(c.AUDIT_LOG !== undefined ? { auditLog: c.AUDIT_LOG } : {}),
    revocation: {
      crlValidityHours: c.CRL_VALIDITY_HOURS,
      ...(c.CRL_URL_BASE !== undefined ? { crlUrlBase: c.CRL_URL_BASE } : {}),
      ...(c.OCSP_URL_BASE !== undefined ? { ocspUrlBase: c.OCSP_URL_BASE } : {}),
    },
    ...(inventory ? { inventory } : {}),
    logLevel: c.LOG_LEVEL,
    devMode,
    warnings,
  };
}

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');

/** Whether `host` is a loopback address (127.0.0.0/8, ::1, an IPv4-mapped 127.x) or `localhost`. */
export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(host)?.[1];
  if (mapped !== undefined) return isIP(mapped) === 4 && LOOPBACK.check(mapped, 'ipv4');
  const family = isIP(host);
  return family !== 0 && LOOPBACK.check(host, family === 4 ? 'ipv4' : 'ipv6');
}
