import type { Express } from 'express';
import type { Logger } from 'pino';
import { AuditLog } from './audit/AuditLog.js';
import type { Config } from './config/config.js';
import { authenticate, ClientRegistry } from './http/auth.js';
import { createApp } from './http/createApp.js';
import { Lifecycle } from './http/Lifecycle.js';
import { pkiRouter } from './http/routes/pkiRouter.js';
import { publicRevocationRouter, revocationRouter } from './http/routes/revocationRouter.js';
import { Pkcs11CertificateStore } from './hsm/pkcs11/Pkcs11CertificateStore.js';
import { HsmError } from './hsm/errors.js';
import { openInventory, redactIn } from './inventory/openInventory.js';
import { MeasuredPkcs11 } from './hsm/pkcs11/MeasuredPkcs11.js';
import { Pkcs11KeyManager } from './hsm/pkcs11/Pkcs11KeyManager.js';
import { ThreadedPkcs11 } from './hsm/pkcs11/ThreadedPkcs11.js';
import {
  countBreakerTransition,
  countInventoryFailure,
  countRetry,
  countRetryBudgetRefusal,
  hsmMetrics,
  startProcessMetrics,
} from './metrics/serviceMetrics.js';
import { createHsmBreaker } from './resilience/hsmBreaker.js';
import { RetryBudget } from './resilience/retryBudget.js';
import { InventoryAccess } from './service/InventoryAccess.js';
import { PkiService } from './service/PkiService.js';
import { RevocationService } from './service/RevocationService.js';
import { SigningService } from './service/SigningService.js';

export interface RunningService {
  readonly app: Express;
  readonly service: SigningService;
  readonly keyManager: Pkcs11KeyManager;
  readonly pki: PkiService;
  /** ISSUANCE_DB, opened at start; if that failed, opened again by the next request that needs it. */
  readonly inventory: InventoryAccess;
  /** Who may call /v1, when auth is on (a clients file, client certificates or both); reload() re-reads the file. */
  readonly clients?: ClientRegistry;
  readonly audit?: AuditLog;
  /** The drain after SIGTERM/SIGINT; /readyz reads it. */
  readonly lifecycle: Lifecycle;
  /** Log rotation (SIGUSR2, SIGHUP): open the audit log's path again. */
  reopenAuditLog(): void;
  close(): Promise<void>;
}

/** Throws AuditOpenError (naming AUDIT_LOG and the errno code) if it cannot be opened. */
function openAuditLog(target: string, stallMs: number, logger: Logger): AuditLog {
  return AuditLog.open(target, {
    // A write slower than a request's whole deadline is a disk in trouble: refuse rather than hang.
    stallMs,
    onEvent: (e) => {
      if (e.type === 'unavailable')
        logger.error({ auditLog: target, reason: e.reason }, 'audit log cannot be written: audited operations answer 503 AUDIT_UNAVAILABLE');
      else if (e.type === 'available') logger.warn({ auditLog: target, since: e.since, refused: e.refused }, 'audit log writable again');
      else if (e.type === 'reopen-failed') logger.error({ auditLog: target, reason: e.reason }, 'audit log not reopened; still writing to the old file');
      else logger.info({ auditLog: target }, 'audit log reopened');
    },
  });
}

/**
 * One worker's object graph: HSM binding -> KeyManager -> resilience -> service -> HTTP app.
 * `loaded`: the clients of CLIENTS_FILE if the caller has read them already.
 */
export async function composeService(config: Config, logger: Logger, loaded?: ClientRegistry): Promise<RunningService> {
  // Read before touching the HSM, so a bad file fails fast.
  const clients = loaded ?? (config.clientsFile !== undefined || config.tls?.clientCaFile !== undefined ? new ClientRegistry(config.clientsFile) : undefined);
  // So does an audit log that cannot be opened: without it no audited operation could be answered.
  const audit = config.auditLog !== undefined ? openAuditLog(config.auditLog, config.requestDeadlineMs, logger) : undefined;
  startProcessMetrics(config.hsm.modulePath, config.gitCommit);
  const p11 = new MeasuredPkcs11(await ThreadedPkcs11.start(config.hsm.modulePath, config.hsm.threads, (m) => logger.warn(m)), hsmMetrics);
  let onRecovered = (): void => undefined;
  const keyManager = new Pkcs11KeyManager(p11, {
    ...(config.hsm.slotIndex !== undefined ? { slotIndex: config.hsm.slotIndex } : { tokenLabel: config.hsm.tokenLabel }),
    pin: config.hsm.pin,
    sessions: config.hsm.sessions,
    maxWaiting: config.hsm.maxWaiting,
    acquireTimeoutMs: config.requestDeadlineMs,
    keyRefreshMs: config.hsm.keyRefreshMs,
    logger,
    onRecovered: () => onRecovered(),
    metrics: hsmMetrics,
  });
  try {
    await keyManager.start();
  } catch (e) {
    await keyManager.close().catch(() => undefined);
    await audit?.close();
    throw e;
  }
  const breaker = createHsmBreaker(config.breaker);
  breaker.on('open', () => {
    countBreakerTransition('open');
    logger.warn('HSM circuit breaker opened');
  });
  breaker.on('halfOpen', () => countBreakerTransition('half_open'));
  breaker.on('close', () => {
    countBreakerTransition('closed');
    logger.info('HSM circuit breaker closed');
  });
  // A finished recovery logged in, opened sessions and read the keys: a better probe than half-open's.
  onRecovered = () => breaker.close();
  const service = new SigningService(keyManager, {
    breaker,
    breakerResetMs: config.breaker.resetTimeoutMs,
    budget: new RetryBudget(config.retry.budgetRatio, { onRefused: countRetryBudgetRefusal }),
    onRetry: (_attempt, e) => countRetry(e instanceof HsmError ? e.failure : 'other'),
    maxAttempts: config.retry.maxAttempts,
    backoff: { baseMs: config.retry.baseMs, capMs: config.retry.capMs },
  });
  const lifecycle = new Lifecycle();
  const target = config.inventory;
  let inventoryLoggedAt = Number.NEGATIVE_INFINITY;
  const inventory = new InventoryAccess({
    ...(target ? { open: () => openInventory(target) } : {}),
    // The message may quote a driver's error: any password of ISSUANCE_DB is taken out first. At most
    // one line per 5 s: in an outage every issue fails, and each answer is counted in /metrics anyway.
    onFailure: (message, operation) => {
      countInventoryFailure(operation);
      const now = Date.now();
      if (now - inventoryLoggedAt < 5000) return;
      inventoryLoggedAt = now;
      logger.error({ issuanceDb: target?.kind }, target ? redactIn(message, target) : message);
    },
    onOpened: () => logger.info({ issuanceDb: target?.kind }, 'certificate inventory open'),
  });
  // A database down at start does not stop signing: issuing answers 503 until a request opens it.
  if (!(await inventory.start()) && target) logger.warn('certificate inventory not open: issuing answers 503 INVENTORY_UNAVAILABLE until it can be opened');
  const pki = new PkiService(service, new Pkcs11CertificateStore(keyManager.connection, keyManager.keys, p11), inventory, {
    ...(config.revocation.crlUrlBase !== undefined ? { crlUrlBase: config.revocation.crlUrlBase } : {}),
    ...(config.revocation.ocspUrlBase !== undefined ? { ocspUrlBase: config.revocation.ocspUrlBase } : {}),
  });
  // Revocation reads and writes the same inventory instance (and its reopening after an outage).
  const revocation = new RevocationService(pki, inventory, { crlValidityHours: config.revocation.crlValidityHours });
  const app = createApp({
    service,
    logger,
    bodyLimitBytes: config.bodyLimitBytes,
    requestDeadlineMs: config.requestDeadlineMs,
    extraRouters: [pkiRouter(pki, audit), revocationRouter(revocation, audit)],
    publicRouters: [publicRevocationRouter(revocation)],
    metricsOnApi: config.metricsListener === undefined,
    lifecycle,
    livenessStallMs: config.livenessStallMs,
    inventory,
    // The per-client limit needs identities, so it applies only when callers are identified. Development mode
    // has none (every caller is anonymous, on loopback): one limit over all of them would cap the whole
    // service at CLIENT_MAX_IN_FLIGHT per worker, and the load harness (up to 150 connections) would
    // measure 429s; by remote address it would be the same (all 127.0.0.1), by connection never reached.
    ...(clients ? { v1Guard: authenticate(clients), clientMaxInFlight: config.clientMaxInFlight } : {}),
    ...(audit ? { audit } : {}),
  });
  return {
    app,
    service,
    keyManager,
    pki,
    inventory,
    ...(clients ? { clients } : {}),
    ...(audit ? { audit } : {}),
    lifecycle,
    reopenAuditLog: () => audit?.reopen(),
    async close() {
      breaker.shutdown();
      await keyManager.close();
      await inventory.close();
      await audit?.close();
    },
  };
}
