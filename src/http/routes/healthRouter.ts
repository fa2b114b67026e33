import cluster from 'node:cluster';
import { Router } from 'express';
import type { SigningService } from '../../service/SigningService.js';

export function healthRouter(service: SigningService): Router {
  const r = Router();
  r.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  r.get('/readyz', (_req, res) => {
    const h = service.health();
    const reason = !h.ready ? (h.reason ?? 'HSM not ready') : h.breaker === 'open' ? 'circuit breaker open after HSM failures' : undefined;
    // `worker` says which process answered: readiness is per worker, each with its own HSM connection.
    const details = { worker: { id: cluster.worker?.id ?? 0, pid: process.pid }, sessions: h.sessions, callsInFlight: h.callsInFlight, keys: h.keys, breaker: h.breaker, recoveries: h.recoveries, threads: h.threads };
    if (reason) res.status(503).json({ status: 'unavailable', reason, ...details });
    else res.json({ status: 'ready', ...details });
  });
  return r;
}
