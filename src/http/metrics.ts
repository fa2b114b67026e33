import cluster, { type Worker } from 'node:cluster';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import { Router, type Request } from 'express';
import { AggregatorRegistry, Counter, Gauge, Histogram, register, type MetricObjectWithValues, type MetricValue } from 'prom-client';
import type { SigningService } from '../service/SigningService.js';

/**
 * Prometheus metrics. Each worker records into prom-client's global registry. A scrape on any
 * worker asks the cluster primary, which asks every worker for its registry over IPC and merges
 * them (counters and histogram buckets summed, gauges by their `aggregator`), so a scrape sees the
 * whole service whichever worker answers. prom-client's own AggregatorRegistry.clusterMetrics()
 * is not used: a worker answers it only if it created an AggregatorRegistry itself, and one
 * worker that does not answer (starting, restarting) fails the whole scrape after 5 s.
 */
const requests = new Counter({
  name: 'hsm_signer_http_requests_total',
  help: 'HTTP requests by route and status; summed over workers',
  labelNames: ['method', 'route', 'status'],
});
const duration = new Histogram({
  name: 'hsm_signer_http_request_duration_seconds',
  help: 'HTTP request duration by route; summed over workers (bucket by bucket)',
  labelNames: ['route'],
  buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
});

let service: SigningService | undefined;
/** A gauge read from health() at each scrape; its help says how the primary merges the workers' values. */
const fromHealth = (name: string, help: string, pick: (s: SigningService) => number, aggregator: 'sum' | 'max' = 'sum'): Gauge =>
  new Gauge({
    name,
    help: `${help}; ${aggregator === 'sum' ? 'summed' : 'the largest'} over workers`,
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
fromHealth(
  'hsm_signer_hsm_breaker_open',
  'workers whose HSM circuit breaker is open (1) or half-open (0.5)',
  (s) => ({ closed: 0, halfOpen: 0.5, open: 1 })[s.health().breaker],
);
fromHealth('hsm_signer_hsm_ready', 'workers ready (logged in, keys loaded, not recovering)', (s) => (s.health().ready ? 1 : 0));
fromHealth('hsm_signer_keys', 'key versions in the cache', (s) => s.health().keys, 'max');
fromHealth('hsm_signer_hsm_threads', 'HSM threads running PKCS#11 calls', (s) => s.health().threads.running);

/** Counts a request and its duration when its response is done or its caller gone (status 499; see requestContext). */
export function recordRequest(req: Request, status: number, seconds: number): void {
  const route = req.route ? `${req.baseUrl}${String(req.route.path)}` : 'unmatched';
  requests.inc({ method: req.method, route, status: String(status) });
  duration.observe({ route }, seconds);
}

/** How long the primary waits for each worker's registry: a scrape answers within about this, whatever the workers do. */
export const WORKER_ANSWER_MS = 500;
/** How long a worker waits for the primary before it answers with its own registry alone. */
const PRIMARY_ANSWER_MS = 1000;

const SCRAPE = 'hsm-signer:metrics';
const COLLECT = 'hsm-signer:metrics-collect';
type ScrapeMessage = { type: typeof SCRAPE; id: number; text?: string };
type CollectMessage = { type: typeof COLLECT; id: number; metrics?: MetricObjectWithValues<MetricValue<string>>[] };

let nextId = 1;
const waiting = new Map<number, (text: string) => void>();

if (cluster.isWorker) {
  process.on('message', (m: ScrapeMessage | CollectMessage) => {
    if (m?.type === SCRAPE) {
      waiting.get(m.id)?.(m.text ?? '');
      waiting.delete(m.id);
    } else if (m?.type === COLLECT) {
      void register.getMetricsAsJSON().then(
        (metrics) => process.send?.({ type: COLLECT, id: m.id, metrics }),
        () => process.send?.({ type: COLLECT, id: m.id }),
      );
    }
  });
}

/** The whole service's metrics: through the primary in a cluster, else this process's registry. */
async function clusterMetrics(): Promise<string> {
  if (!cluster.isWorker || !process.send) return register.metrics();
  const id = nextId++;
  const text = await new Promise<string | undefined>((resolve) => {
    // Checked above; checked again here because the check does not carry into this callback. Without a
    // channel there is no primary to ask: the same answer as a primary that does not reply.
    if (!process.send) {
      resolve(undefined);
      return;
    }
    const timer = setTimeout(() => {
      waiting.delete(id);
      resolve(undefined);
    }, PRIMARY_ANSWER_MS);
    waiting.set(id, (t) => {
      clearTimeout(timer);
      resolve(t);
    });
    process.send({ type: SCRAPE, id });
  });
  // The primary is gone or stuck (this worker is about to be orphaned): its own figures are better than nothing.
  return text ?? `${await register.metrics()}# the cluster primary did not answer: this worker's metrics only\n`;
}

/**
 * The scrape's own gauges: how many workers the service runs, and which did not answer in time
 * (they are left out of this scrape's sums). Prometheus text, appended to the merged registry.
 */
function coverage(expected: number, answered: number, missing: readonly number[]): string {
  const lines = [
    '# HELP hsm_signer_metrics_workers_expected worker processes the service runs (WORKERS)',
    '# TYPE hsm_signer_metrics_workers_expected gauge',
    `hsm_signer_metrics_workers_expected ${expected}`,
    '# HELP hsm_signer_metrics_workers_answered workers whose metrics are in this scrape',
    '# TYPE hsm_signer_metrics_workers_answered gauge',
    `hsm_signer_metrics_workers_answered ${answered}`,
    `# HELP hsm_signer_metrics_worker_unanswered a running worker (cluster id) that did not answer within ${WORKER_ANSWER_MS} ms; left out of this scrape`,
    '# TYPE hsm_signer_metrics_worker_unanswered gauge',
    ...missing.map((id) => `hsm_signer_metrics_worker_unanswered{worker="${id}"} 1`),
  ];
  return `${lines.join('\n')}\n`;
}

/** In the primary: the collections under way, by id; one 'message' listener serves them all. */
const collections = new Map<number, (worker: Worker, metrics: CollectMessage['metrics']) => void>();
let collecting = false;

/** In the primary: asks every worker for its registry, waits at most WORKER_ANSWER_MS, merges what came. */
export async function collectClusterMetrics(expectedWorkers: number): Promise<string> {
  if (!collecting) {
    collecting = true;
    cluster.on('message', (w: Worker, m: CollectMessage) => {
      if (m?.type === COLLECT) collections.get(m.id)?.(w, m.metrics);
    });
  }
  const id = nextId++;
  const workers = Object.values(cluster.workers ?? {}).filter((w): w is Worker => w?.isConnected() === true);
  const parts = new Map<number, CollectMessage['metrics']>();
  await new Promise<void>((resolve) => {
    if (workers.length === 0) return resolve();
    const finish = (): void => {
      clearTimeout(timer);
      collections.delete(id);
      resolve();
    };
    const timer = setTimeout(finish, WORKER_ANSWER_MS);
    collections.set(id, (w, metrics) => {
      if (!workers.includes(w)) return;
      parts.set(w.id, metrics);
      if (parts.size === workers.length) finish();
    });
    for (const w of workers) {
      try {
        w.send({ type: COLLECT, id });
      } catch {
        // Its channel closed between the check and the send: it counts as unanswered.
      }
    }
  });
  const answered = [...parts.values()].filter((m): m is NonNullable<typeof m> => m !== undefined);
  const missing = workers.filter((w) => !parts.get(w.id)).map((w) => w.id);
  const merged = answered.length ? await AggregatorRegistry.aggregate(answered).metrics() : '';
  return merged + coverage(expectedWorkers, answered.length, missing);
}

/** In the primary: answer workers' /metrics requests with the merged metrics of all workers. */
export function serveClusterMetrics(expectedWorkers: number): void {
  cluster.on('message', (worker, m: ScrapeMessage) => {
    if (m?.type !== SCRAPE) return;
    void collectClusterMetrics(expectedWorkers).then((text) => {
      if (worker.isConnected()) worker.send({ type: SCRAPE, id: m.id, text });
    });
  });
}

/** The service whose health the gauges read (every worker calls this, wherever /metrics is served). */
export function trackService(s: SigningService): void {
  service = s;
}

/** GET /metrics on the API's own app (development mode). */
export function metricsRouter(): Router {
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

/**
 * /metrics on a listener of its own (production: METRICS_HOST:METRICS_PORT), apart from the API
 * and its authentication: in the cluster primary it merges the workers; in a single-process
 * service (WORKERS=1) it serves that process's registry. Anything else is a 404.
 */
export async function listenForMetrics(host: string, port: number, expectedWorkers: number): Promise<Server> {
  const collect = (): Promise<string> => (cluster.isPrimary && expectedWorkers > 1 ? collectClusterMetrics(expectedWorkers) : register.metrics());
  const server = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (req.method !== 'GET' || path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: metrics are at GET /metrics\n');
      return;
    }
    collect().then(
      (text) => res.writeHead(200, { 'content-type': register.contentType }).end(text),
      () => res.writeHead(500, { 'content-type': 'text/plain' }).end('metrics could not be collected\n'),
    );
  });
  server.listen(port, host);
  await Promise.race([once(server, 'listening'), once(server, 'error').then(([e]) => Promise.reject(e as Error))]);
  return server;
}
