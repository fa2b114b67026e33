import cluster from 'node:cluster';
import { Router } from 'express';
import type { AuditLog } from '../../audit/AuditLog.js';
import type { SigningService } from '../../service/SigningService.js';

export function healthRouter(service: SigningService, audit?: AuditLog): Router {
  const r = Router();
  r.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  r.get('/readyz', (_req, res) => {
    const h = service.health();
    const a = audit?.status();
    const reason = !h.ready
      ? (h.reason ?? 'HSM not ready')
      : h.breaker === 'open'
        ? 'circuit breaker open after HSM failures'
        : a && !a.available
          ? `audit log cannot be written (${a.reason ?? 'unavailable'})`
          : undefined;
    // `worker` says which process answered: readiness is per worker, each with its own HSM connection.
    const details = {
      worker: { id: cluster.worker?.id ?? 0, pid: process.pid },
      sessions: h.sessions,
      callsInFlight: h.callsInFlight,
      keys: h.keys,
      breaker: h.breaker,
      recoveries: h.recoveries,
      threads: h.threads,
      ...(a ? { audit: a.available ? 'ok' : 'unavailable' } : {}),
    };
    if (reason) res.status(503).json({ status: 'unavailable', reason, ...details });
    else res.json({ status: 'ready', ...details });
  });
  return r;
}
