import cluster from 'node:cluster';
import { Router } from 'express';
import type { AuditLog } from '../../audit/AuditLog.js';
import type { InventoryStatus } from '../../service/InventoryAccess.js';
import type { SigningService } from '../../service/SigningService.js';

export interface HealthOptions {
  readonly audit?: AuditLog;
  /** Draining after SIGTERM/SIGINT: /readyz answers 503. */
  readonly lifecycle?: { readonly draining: boolean };
  /** LIVENESS_STALL_MS: /healthz answers 503 once this worker's oldest HSM call has been unanswered for longer. */
  readonly livenessStallMs?: number;
  /** The certificate inventory's last outcome in this worker. */
  readonly inventory?: { status(): InventoryStatus } | undefined;
}

export function healthRouter(service: SigningService, o: HealthOptions = {}): Router {
  const r = Router();
  // `worker` says which process answered: liveness and readiness are per worker, each with its own HSM connection.
  const worker = (): { id: number; pid: number } => ({ id: cluster.worker?.id ?? 0, pid: process.pid });
  // Liveness: no HSM call of its own (a wedged module would hang it); only the age of the calls already waiting.
  r.get('/healthz', (_req, res) => {
    const age = service.health().oldestCallMs;
    if (o.livenessStallMs !== undefined && age > o.livenessStallMs) {
      res.status(503).json({ status: 'unavailable', reason: `HSM calls have not returned for ${Math.round(age)} ms (LIVENESS_STALL_MS)`, worker: worker() });
    } else res.json({ status: 'ok' });
  });
  r.get('/readyz', (_req, res) => {
    const h = service.health();
    const a = o.audit?.status();
    const inv = o.inventory?.status();
    const reason = o.lifecycle?.draining
      ? 'draining'
      : !h.ready
        ? (h.reason ?? 'HSM not ready')
        : h.breaker === 'open'
          ? 'circuit breaker open after HSM failures'
          : a && !a.available
            ? `audit log cannot be written (${a.reason ?? 'unavailable'})`
            : undefined;
    const details = {
      worker: worker(),
      sessions: h.sessions,
      callsInFlight: h.callsInFlight,
      keys: h.keys,
      breaker: h.breaker,
      recoveries: h.recoveries,
      threads: h.threads,
      ...(a ? { audit: a.available ? 'ok' : 'unavailable' } : {}),
      // Named, not a reason for 503: without the database issuing fails, but signing goes on.
      ...(inv && inv !== 'not configured' ? { inventory: inv } : {}),
      // Named, not a reason for 503: one key version nobody shared with the service must not take
      // the instance out of the load balancer while every other key signs.
      ...(h.unusableVersions?.length ? { unusableKeyVersions: h.unusableVersions } : {}),
    };
    if (reason) res.status(503).json({ status: 'unavailable', reason, ...details });
    else res.json({ status: 'ready', ...details });
  });
  return r;
}
