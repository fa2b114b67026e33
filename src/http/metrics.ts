import cluster from 'node:cluster';
import { Router, type Request } from 'express';
import { AggregatorRegistry, Counter, Gauge, Histogram, register } from 'prom-client';
import type { SigningService } from '../service/SigningService.js';

/**
 * Prometheus metrics. Each worker records into prom-client's global registry; GET /metrics on any
 * worker asks the cluster primary, which aggregates every worker's registry over IPC, so a
 * scrape sees the whole service whichever worker answers.
 */
const requests = new Counter({ name: 'hsm_signer_http_requests_total', help: 'HTTP requests by route and status', labelNames: ['method', 'route', 'status'] });
const duration = new Histogram({
  name: 'hsm_signer_http_request_duration_seconds',
  help: 'HTTP request duration by route',
  labelNames: ['route'],
  buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
});

let service: SigningService | undefined;
const fromHealth = (name: string, help: string, pick: (s: SigningService) => number, aggregator: 'sum' | 'max' = 'sum', labelNames: string[] = []): Gauge =>
  new Gauge({
    name,
    help,
    labelNames,
    aggregator,
    collect() {
      if (service) this.set(pick(service));
    },
  });

fromHealth('hsm_signer_hsm_sessions_in_use', 'HSM sessions running an operation', (s) => s.health().sessions.inUse);
fromHealth('hsm_signer_hsm_sessions_idle', 'HSM sessions idle in the pool', (s) => s.health().sessions.idle);
fromHealth('hsm_signer_hsm_sessions_waiting', 'requests waiting for an HSM session', (s) => s.health().sessions.waiting);
fromHealth('hsm_signer_hsm_calls_in_flight', 'PKCS#11 calls issued and not yet answered', (s) => s.health().callsInFlight);
fromHealth('hsm_signer_hsm_recoveries', 'HSM connection recoveries since start', (s) => s.health().recoveries);
fromHealth('hsm_signer_hsm_breaker_open', 'workers whose HSM circuit breaker is open (1) or half-open (0.5)', (s) => ({ closed: 0, halfOpen: 0.5, open: 1 })[s.health().breaker]);
fromHealth('hsm_signer_hsm_ready', 'workers ready (logged in, keys loaded, not recovering)', (s) => (s.health().ready ? 1 : 0));
fromHealth('hsm_signer_keys', 'key versions in the cache', (s) => s.health().keys, 'max');

/** Counts a request and its duration when its response is done or its caller gone (status 499; see requestContext). */
export function recordRequest(req: Request, status: number, seconds: number): void {
  const route = req.route ? `${req.baseUrl}${String(req.route.path)}` : 'unmatched';
  requests.inc({ method: req.method, route, status: String(status) });
  duration.observe({ route }, seconds);
}

type MetricsReply = { type: 'hsm-signer:metrics'; id: number; text?: string; error?: string };
let nextId = 1;
const waiting = new Map<number, (r: MetricsReply) => void>();

function clusterMetrics(): Promise<string> {
  if (!cluster.isWorker || !process.send) return register.metrics();
  const id = nextId++;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      waiting.delete(id);
      reject(new Error('metrics: the primary did not answer'));
    }, 2000);
    waiting.set(id, (r) => {
      clearTimeout(timer);
      if (r.text !== undefined) resolve(r.text);
      else reject(new Error(r.error ?? 'metrics failed'));
    });
    process.send!({ type: 'hsm-signer:metrics', id });
  });
}

if (cluster.isWorker) {
  process.on('message', (m: MetricsReply) => {
    if (m?.type === 'hsm-signer:metrics' && waiting.has(m.id)) {
      waiting.get(m.id)!(m);
      waiting.delete(m.id);
    }
  });
}

/** In the primary: answer workers' /metrics requests with the aggregate of all workers. */
export function serveClusterMetrics(): void {
  const aggregator = new AggregatorRegistry();
  cluster.on('message', (worker, m: MetricsReply) => {
    if (m?.type !== 'hsm-signer:metrics') return;
    aggregator.clusterMetrics().then(
      (text) => worker.send({ type: m.type, id: m.id, text }),
      (e: unknown) => worker.send({ type: m.type, id: m.id, error: (e as Error).message }),
    );
  });
}

export function metricsRouter(s: SigningService): Router {
  service = s;
  const r = Router();
  r.get('/metrics', async (_req, res, next) => {
    try {
      const text = await clusterMetrics();
      res.type(register.contentType).send(text);
    } catch (e) {
      next(e);
    }
  });
  return r;
}
