import cluster from 'node:cluster';
import type { Server } from 'node:http';
import { pino } from 'pino';
import { ConfigError, loadConfig, type Config } from './config/config.js';
import { readTlsFiles, type TlsMaterial } from './config/tlsFiles.js';
import { composeService } from './composeService.js';
import { loadClients } from './http/auth.js';
import { createServer } from './http/createServer.js';
import { listenForMetrics, serveClusterMetrics } from './http/metrics.js';

/**
 * Composition root. The primary forks WORKERS processes (each has its own PKCS#11 state: module,
 * login, session pool, key cache) and restarts any that dies; each worker serves HTTP.
 */
/** Production's /metrics listener: in the primary of a cluster, else in the one serving process. */
async function metricsListener(config: Config, logger: pino.Logger): Promise<Server | undefined> {
  const m = config.metricsListener;
  if (!m) return undefined;
  const server = await listenForMetrics(m.host, m.port, config.workers);
  logger.info({ host: m.host, port: m.port }, 'serving /metrics');
  return server;
}

async function primary(config: Config, logger: pino.Logger): Promise<void> {
  serveClusterMetrics(config.workers);
  const metrics = await metricsListener(config, logger).catch((e: unknown) => {
    logger.fatal({ err: (e as Error).message }, 'cannot serve /metrics on METRICS_HOST:METRICS_PORT');
    process.exit(1);
  });
  let stopping = false;
  const fork = (): void => {
    cluster.fork();
  };
  for (let i = 0; i < config.workers; i++) fork();
  const recentDeaths: number[] = [];
  cluster.on('exit', (worker, code, signal) => {
    if (stopping) return;
    const now = Date.now();
    recentDeaths.push(now);
    while (recentDeaths.length && recentDeaths[0]! < now - 60_000) recentDeaths.shift();
    logger.error({ pid: worker.process.pid, code, signal }, 'worker died; starting another');
    // A worker that cannot start (wrong PIN, no token) would die in a tight loop: slow down.
    setTimeout(fork, recentDeaths.length > config.workers * 3 ? 5000 : 100);
  });
  const stop = (): void => {
    stopping = true;
    metrics?.close();
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
    setTimeout(() => process.exit(0), 5000).unref();
    cluster.on('exit', () => {
      if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(0);
    });
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

async function worker(config: Config, logger: pino.Logger, tls: TlsMaterial | undefined): Promise<void> {
  const running = await composeService(config, logger);
  const metrics = cluster.isWorker ? undefined : await metricsListener(config, logger);
  const server = createServer(running.app, config.server, tls);
  // Refused handshakes (no, untrusted or expired client certificate) are the client's problem, and can be many.
  server.on('tlsClientError', (e: NodeJS.ErrnoException) => logger.debug({ code: e.code }, 'TLS handshake failed'));
  server.listen(config.port, config.host, () => {
    logger.info({ host: config.host, port: config.port, tls: tls !== undefined, clientCertificates: tls?.ca !== undefined, keys: running.keyManager.health().keys }, 'serving');
  });
  const stop = (): void => {
    metrics?.close();
    server.close(() => void running.close().finally(() => process.exit(0)));
    setTimeout(() => process.exit(0), 5000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

export async function main(): Promise<void> {
  let config: Config;
  let tls: TlsMaterial | undefined;
  const logger = pino({ level: process.env.LOG_LEVEL ?? 'info', base: { pid: process.pid } });
  try {
    config = loadConfig();
    // Read and checked before forking: a bad file stops the service with exit 2, not workers in a restart loop.
    tls = config.tls ? readTlsFiles(config.tls) : undefined;
    if (config.clientsFile !== undefined) loadClients(config.clientsFile);
  } catch (e) {
    if (e instanceof ConfigError) {
      logger.fatal(e.message);
      process.exit(2);
    }
    throw e;
  }
  logger.level = config.logLevel;
  // Once per service: by the primary, or by the only process.
  if (cluster.isPrimary) for (const w of config.warnings) logger.warn(w);
  if (cluster.isPrimary && config.workers > 1) return primary(config, logger);
  try {
    await worker(config, logger, tls);
  } catch (e) {
    logger.fatal({ err: (e as Error).message }, 'worker could not start');
    process.exit(1);
  }
}

await main();
