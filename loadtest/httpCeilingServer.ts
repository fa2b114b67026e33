/**
 * The bare-HTTP ceiling: Express 5 with express.json, the same routes, request and response
 * shapes and sizes as the service (X-Request-Id included), answering with a canned signature of
 * the right length and touching no HSM. Run with as many cluster workers as the service, so the
 * difference between the two is what the service's own work costs.
 *
 * Env: PORT, WORKERS, CEILING_SIGNATURE_BYTES = JSON {"<key name>": <bytes>}.
 */
import cluster from 'node:cluster';
import { randomBytes, randomUUID } from 'node:crypto';
import express, { type Express } from 'express';
import { isMainModule } from '../src/isMainModule.js';

/** The bare app: canned signatures of `sizes[keyName]` bytes (also used in-process by bench/allocationPerRequest.ts). */
export function createCeilingApp(sizes: Record<string, number>): Express {
  const canned = new Map(Object.entries(sizes).map(([name, bytes]) => [name, randomBytes(bytes).toString('base64')]));
  const signature = (name: unknown): string => canned.get(String(name)) ?? canned.values().next().value ?? '';
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use((_req, res, next) => {
    res.setHeader('X-Request-Id', randomUUID());
    next();
  });
  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  app.use('/v1', express.json({ limit: 1024 * 1024, strict: false, type: 'application/json' }));
  app.post('/v1/keys/:name/sign', (req, res) => {
    const body = req.body as { algorithm?: string };
    res.json({ keyName: req.params.name, keyVersion: 1, algorithm: body.algorithm, signature: signature(req.params.name) });
  });
  app.post('/v1/keys/:name/verify', (_req, res) => {
    res.json({ valid: true, keyVersion: 1 });
  });
  app.post('/v1/sign/batch', (req, res) => {
    const items = ((req.body as { requests?: unknown[] }).requests ?? []) as { keyName?: string; algorithm?: string }[];
    res.json({
      results: items.map((i) => ({ keyName: i.keyName, keyVersion: 1, algorithm: i.algorithm, signature: signature(i.keyName) })),
    });
  });
  return app;
}

function serve(): void {
  const workers = Number(process.env.WORKERS ?? '1');
  const port = Number(process.env.PORT ?? '0');
  const sizes = JSON.parse(process.env.CEILING_SIGNATURE_BYTES ?? '{}') as Record<string, number>;
  if (cluster.isPrimary && workers > 1) {
    for (let i = 0; i < workers; i++) cluster.fork();
    const stop = (): void => {
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
      setTimeout(() => process.exit(0), 200).unref();
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
    return;
  }
  const server = createCeilingApp(sizes).listen(port, '127.0.0.1');
  server.keepAliveTimeout = 65_000;
  process.on('SIGTERM', () => process.exit(0));
}

if (isMainModule(import.meta.url)) serve();
