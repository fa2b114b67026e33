import cluster from 'node:cluster';
import type { Server } from 'node:http';
import { pino } from 'pino';
import { ConfigError, loadConfig, type Config } from './config/config.js';
import { composeService } from './composeService.js';
import { serveClusterMetrics } from './http/metrics.js';

/**
 * Composition root. The primary forks WORKERS processes (each has its own PKCS#11 state: module,
 * login, session pool, key cache) and restarts any that dies; each worker serves HTTP.
 */
function primary(config: Config, logger: pino.Logger): void {
  if (config.devMode) logger.warn({ host: config.host }, 'development mode: no CLIENTS_FILE, so no authentication; listening on loopback only');
  serveClusterMetrics();
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
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
    setTimeout(() => process.exit(0), 5000).unref();
    cluster.on('exit', () => {
      if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(0);
    });
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  // Log rotation: every worker reopens its audit log (SIGUSR2 or SIGHUP; see worker()).
  for (const signal of ['SIGUSR2', 'SIGHUP'] as const) {
    process.on(signal, () => {
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill(signal);
    });
  }
}

async function worker(config: Config, logger: pino.Logger): Promise<void> {
  // Log rotation: reopen the audit log. Listening from the start, so a signal during start-up does not end the worker.
  let reopenAuditLog = (): void => undefined;
  for (const signal of ['SIGUSR2', 'SIGHUP'] as const) process.on(signal, () => reopenAuditLog());
  const running = await composeService(config, logger);
  reopenAuditLog = running.reopenAuditLog;
  const server: Server = running.app.listen(config.port, config.host, () => {
    logger.info({ host: config.host, port: config.port, keys: running.keyManager.health().keys }, 'serving');
  });
  server.keepAliveTimeout = 65_000;
  const stop = (): void => {
    server.close(() => void running.close().finally(() => process.exit(0)));
    setTimeout(() => process.exit(0), 5000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

export async function main(): Promise<void> {
  let config: Config;
  const logger = pino({ level: process.env.LOG_LEVEL ?? 'info', base: { pid: process.pid } });
  try {
    config = loadConfig();
  } catch (e) {
    if (e instanceof ConfigError) {
      logger.fatal(e.message);
      process.exit(2);
    }
    throw e;
  }
  logger.level = config.logLevel;
  if (cluster.isPrimary && config.workers > 1) return primary(config, logger);
  try {
    await worker(config, logger);
  } catch (e) {
    logger.fatal({ err: (e as Error).message }, 'worker could not start');
    process.exit(1);
  }
}

await main();
