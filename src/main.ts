import cluster, { type Worker } from 'node:cluster';
import type { Server } from 'node:http';
import https from 'node:https';
import type { Logger } from 'pino';
import { ConfigError, loadConfig, type Config } from './config/config.js';
import { readTlsFiles, type TlsMaterial } from './config/tlsFiles.js';
import { composeService } from './composeService.js';
import { ClientRegistry } from './http/auth.js';
import { createServer, secureContextOptions, type ApiServer } from './http/createServer.js';
import { listenForMetrics, serveClusterMetrics } from './http/metrics.js';
import { createLogger } from './logger.js';

/** Production's /metrics listener: in the primary of a cluster, else in the one serving process. */
async function metricsListener(config: Config, logger: Logger): Promise<Server | undefined> {
  const m = config.metricsListener;
  if (!m) return undefined;
  const server = await listenForMetrics(m.host, m.port, config.workers);
  logger.info({ host: m.host, port: m.port }, 'serving /metrics');
  return server;
}

/**
 * Composition root. The primary forks WORKERS processes (each has its own PKCS#11 state: module,
 * login, session pool, key cache) and restarts any that dies; each worker serves HTTP.
 */
async function primary(config: Config, logger: Logger): Promise<void> {
  serveClusterMetrics(config.workers);
  // Workers get the PIN over the IPC channel, not in their environment (see pinFromPrimary).
  cluster.on('message', (w, m: { type?: unknown }) => {
    if (m?.type === PIN_REQUEST) w.send({ type: PIN_REPLY, pin: config.hsm.pin });
  });
  // Each worker holds its own TLS context and clients, and reloads them on its SIGHUP. A worker
  // still starting (or restarted) when one comes gets it once it listens: it may have read the
  // files before they changed.
  let hangups = 0;
  const seen = new Map<number, number>();
  cluster.on('fork', (w) => seen.set(w.id, hangups));
  cluster.on('listening', (w) => {
    // 'fork' comes first, so the worker is in `seen`; one that were not would have no SIGHUP recorded as missed.
    const since = seen.get(w.id);
    if (since !== undefined && since < hangups) w.process.kill('SIGHUP');
    seen.set(w.id, Infinity);
  });
  cluster.on('exit', (w) => seen.delete(w.id));
  hangup.handler = () => {
    hangups++;
    const listening = Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined && seen.get(w.id) === Infinity);
    logger.info({ workers: listening.length }, 'SIGHUP: reloading the TLS certificate and the clients in every worker');
    for (const w of listening) w.process.kill('SIGHUP');
  };
  if (hangup.pending) hangup.handler();
  hangup.pending = false;
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
    // Oldest first; an empty list has nothing older than a minute.
    while ((recentDeaths[0] ?? now) < now - 60_000) recentDeaths.shift();
    logger.error({ pid: worker.process.pid, code, signal }, 'worker died; starting another');
    // A worker that cannot start (wrong PIN, no token) would die in a tight loop: slow down.
    setTimeout(fork, recentDeaths.length > config.workers * 3 ? 5000 : 100);
  });
  let metrics: Server | undefined;
  let exitCode = 0;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    metrics?.close();
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
    setTimeout(() => process.exit(exitCode), 5000).unref();
    cluster.on('exit', () => {
      if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(exitCode);
    });
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  // Log rotation: every worker reopens its audit log on SIGUSR2 (SIGHUP, forwarded above, does it
  // too). Only to workers that listen: one still starting has not opened its log yet.
  rotate.handler = () => {
    for (const w of Object.values(cluster.workers ?? {})) if (w && seen.get(w.id) === Infinity) w.process.kill('SIGUSR2');
  };
  metrics = await metricsListener(config, logger).catch((e: unknown) => {
    logger.fatal({ err: (e as Error).message }, 'cannot serve /metrics on METRICS_HOST:METRICS_PORT');
    exitCode = 1;
    stop();
    return undefined;
  });
}

/**
 * SIGHUP: the server's certificate and key (and client CA) and the clients file, read again (and
 * the audit log reopened, as on SIGUSR2). New connections get the new certificate; connections
 * already open keep theirs, and requests in flight finish. A file that does not load leaves its
 * predecessor in place, with one error line naming the variable and the problem, never the content.
 */
function reloadFiles(config: Config, server: ApiServer, clients: ClientRegistry | undefined, logger: Logger): void {
  const reloaded: string[] = [];
  const failed = (e: unknown, variable: string, kept: string): void => {
    const message = e instanceof ConfigError ? e.message : `${variable}: could not be applied (${(e as NodeJS.ErrnoException).code ?? 'error'})`;
    logger.error(`SIGHUP: ${message}; kept the previous ${kept}`);
  };
  if (config.tls && server instanceof https.Server) {
    try {
      server.setSecureContext(secureContextOptions(readTlsFiles(config.tls)));
      reloaded.push('TLS_CERT_FILE', 'TLS_KEY_FILE', ...(config.tls.clientCaFile !== undefined ? ['TLS_CLIENT_CA_FILE'] : []));
    } catch (e) {
      failed(e, 'TLS_CERT_FILE', 'TLS certificate, key and client CA');
    }
  }
  if (clients?.file !== undefined) {
    try {
      clients.reload();
      reloaded.push('CLIENTS_FILE');
    } catch (e) {
      failed(e, 'CLIENTS_FILE', 'clients');
    }
  }
  logger.info({ reloaded }, 'SIGHUP: reloaded');
}

async function worker(config: Config, logger: Logger, tls: TlsMaterial | undefined, clients: ClientRegistry | undefined): Promise<void> {
  const running = await composeService(config, logger, clients);
  rotate.handler = running.reopenAuditLog;
  const metrics = cluster.isWorker
    ? undefined
    : await metricsListener(config, logger).catch(async (e: unknown) => {
        // Logged out, finalized and the audit log flushed before main() reports it and exits.
        await running.close().catch(() => undefined);
        throw e;
      });
  const server = createServer(running.app, config.server, tls);
  // Refused handshakes (no, untrusted or expired client certificate) are the client's problem, and can be many.
  server.on('tlsClientError', (e: NodeJS.ErrnoException) => logger.debug({ code: e.code }, 'TLS handshake failed'));
  server.listen(config.port, config.host, () => {
    logger.info(
      { host: config.host, port: config.port, tls: tls !== undefined, clientCertificates: tls?.ca !== undefined, keys: running.keyManager.health().keys },
      'serving',
    );
    hangup.handler = () => {
      running.reopenAuditLog();
      reloadFiles(config, server, running.clients, logger);
    };
    if (hangup.pending) hangup.handler();
    hangup.pending = false;
  });
  // A worker can get the signal twice (from the primary, and from a terminal or systemd signalling the group).
  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    metrics?.close();
    server.close(() => void running.close().finally(() => process.exit(0)));
    setTimeout(() => process.exit(0), 5000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

/**
 * SIGHUP, handled from the start (its default action ends the process): one that comes before the
 * process is ready for it is remembered and handled when it is.
 */
const hangup: { handler?: () => void; pending: boolean } = { pending: false };
process.on('SIGHUP', () => {
  if (hangup.handler) hangup.handler();
  else hangup.pending = true;
});

/** SIGUSR2 (log rotation: reopen the audit log), likewise handled from the start: its default action ends the process too. */
const rotate: { handler?: () => void } = {};
process.on('SIGUSR2', () => rotate.handler?.());

const PIN_REQUEST = 'hsm-signer:pin-request';
const PIN_REPLY = 'hsm-signer:pin';

/**
 * A cluster worker's PIN, asked of the primary over the IPC channel. The primary deletes HSM_PIN
 * from its environment before it forks, so no worker's environment (/proc/<pid>/environ) holds it.
 */
function pinFromPrimary(timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    // Only a cluster worker asks, and a forked worker has the channel: without one this is a bug, not a configuration.
    if (!process.send) {
      reject(new Error('pinFromPrimary: this process has no IPC channel to a cluster primary'));
      return;
    }
    const done = (): void => {
      clearTimeout(timer);
      process.off('message', onMessage);
    };
    const onMessage = (m: { type?: unknown; pin?: unknown }): void => {
      if (m?.type !== PIN_REPLY || typeof m.pin !== 'string') return;
      done();
      resolve(m.pin);
    };
    const timer = setTimeout(() => {
      done();
      reject(new ConfigError('HSM_PIN: the cluster primary did not send the PIN'));
    }, timeoutMs);
    process.on('message', onMessage);
    process.send({ type: PIN_REQUEST });
  });
}

export async function main(): Promise<void> {
  let config: Config;
  let tls: TlsMaterial | undefined;
  let clients: ClientRegistry | undefined;
  // Until the configuration is read: a LOG_LEVEL it would refuse must not stop pino first.
  const level = process.env.LOG_LEVEL;
  const logger = createLogger(level !== undefined && ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(level) ? level : 'info');
  try {
    const env = cluster.isWorker ? { ...process.env, HSM_PIN: await pinFromPrimary(), HSM_PIN_FILE: undefined } : process.env;
    config = loadConfig(env);
    // Read once, kept in config: out of the environment that workers, HSM threads and any later
    // child would inherit. (A process started with HSM_PIN keeps it in its own /proc/<pid>/environ:
    // the primary, or with WORKERS=1 the only process. HSM_PIN_FILE avoids even that.)
    delete process.env.HSM_PIN;
    // Read and checked before forking: a bad file stops the service with exit 2, not workers in a
    // restart loop. A cluster's workers read the clients again; the only process keeps these.
    tls = config.tls ? readTlsFiles(config.tls) : undefined;
    if (config.clientsFile !== undefined) clients = new ClientRegistry(config.clientsFile);
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
    await worker(config, logger, tls, clients);
  } catch (e) {
    logger.fatal({ err: (e as Error).message }, 'worker could not start');
    process.exit(1);
  }
}

await main();
