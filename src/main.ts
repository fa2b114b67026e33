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
import { exitOnUncaught } from './exitOnUncaught.js';
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
  // A worker that has exited can still be listed until its IPC channel is closed.
  const live = (): Worker[] => Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined && !w.isDead());
  let stopping = false;
  // While stopping: workers whose listener is closed. Connections close only once every worker's is,
  // so a client that reconnects is refused, not handed to a worker about to close or left queued in
  // the primary's listening socket when it closes (a reset).
  const listenersClosed = new Set<number>();
  const closeConnectionsOnceNoneListens = (): void => {
    const workers = live();
    if (!workers.every((w) => listenersClosed.has(w.id))) return;
    for (const w of workers) if (w.isConnected()) w.send({ type: CLOSE_CONNECTIONS });
  };
  // Workers get the PIN over the IPC channel, not in their environment (see pinFromPrimary).
  cluster.on('message', (w, m: { type?: unknown }) => {
    if (m?.type === PIN_REQUEST) w.send({ type: PIN_REPLY, pin: config.hsm.pin });
    if (m?.type === LISTENER_CLOSED) {
      listenersClosed.add(w.id);
      // A worker stopped on its own (its pid signalled): the others still listen, its clients go there.
      if (!stopping) w.send({ type: CLOSE_CONNECTIONS });
      else closeConnectionsOnceNoneListens();
    }
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
  const fork = (): void => {
    // A restart scheduled before a stop began would start a worker nobody stops.
    if (!stopping) cluster.fork();
  };
  for (let i = 0; i < config.workers; i++) fork();
  const recentDeaths: number[] = [];
  let exitCode = 0;
  cluster.on('exit', (worker, code, signal) => {
    if (stopping) {
      // Clean: every worker drained, released its sessions, logged out and exited 0.
      if (code !== 0) exitCode = 1;
      if (live().length === 0) process.exit(exitCode);
      closeConnectionsOnceNoneListens();
      return;
    }
    const now = Date.now();
    recentDeaths.push(now);
    // Oldest first; an empty list has nothing older than a minute.
    while ((recentDeaths[0] ?? now) < now - 60_000) recentDeaths.shift();
    logger.error({ pid: worker.process.pid, code, signal }, 'worker died; starting another');
    // A worker that cannot start (wrong PIN, no token) would die in a tight loop: slow down.
    setTimeout(fork, recentDeaths.length > config.workers * 3 ? 5000 : 100);
  });
  let metrics: Server | undefined;
  stopSignal.handler = () => {
    if (stopping) {
      // A second SIGTERM/SIGINT (Ctrl-C twice): the workers stop accepting now rather than at the drain's end.
      logger.info('stop signal again: ending the drain now');
      for (const w of live()) if (w.isConnected()) w.send({ type: DRAIN_NOW });
      return;
    }
    stopping = true;
    metrics?.close();
    const workers = live();
    logger.info({ workers: workers.length, drainMs: config.drainMs }, 'stopping: workers drain, then exit');
    for (const w of workers) w.process.kill('SIGTERM');
    if (workers.length === 0) process.exit(exitCode);
    // Past the workers' own bound (see stopBoundMs): whatever is left is stuck.
    setTimeout(() => {
      const left = live();
      logger.error({ pids: left.map((w) => w.process.pid) }, 'workers did not stop in time: killing them');
      for (const w of left) w.process.kill('SIGKILL');
      process.exit(1);
    }, stopBoundMs(config) + 2000).unref();
  };
  if (stopSignal.pending) stopSignal.handler();
  // Log rotation: every worker reopens its audit log on SIGUSR2 (SIGHUP, forwarded above, does it
  // too). Only to workers that listen: one still starting has not opened its log yet.
  rotate.handler = () => {
    for (const w of Object.values(cluster.workers ?? {})) if (w && seen.get(w.id) === Infinity) w.process.kill('SIGUSR2');
  };
  metrics = await metricsListener(config, logger).catch((e: unknown) => {
    logger.fatal({ err: (e as Error).message }, 'cannot serve /metrics on METRICS_HOST:METRICS_PORT');
    exitCode = 1;
    stopSignal.handler?.();
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

/**
 * The longest a worker's stop may take: the drain, the requests then in flight (bounded by their
 * deadline), and releasing the HSM (the session pool waits up to 5 s, then logout and C_Finalize).
 */
const stopBoundMs = (config: Config): number => config.drainMs + config.requestDeadlineMs + 10_000;

async function worker(config: Config, logger: Logger, tls: TlsMaterial | undefined, clients: ClientRegistry | undefined): Promise<void> {
  // A stop that comes while the service is being composed is carried out once it is.
  let stopBeforeServing = stopSignal.pending;
  stopSignal.handler = () => {
    stopBeforeServing = true;
  };
  // The primary's DRAIN_NOW (a second stop signal) can come before this worker serves, or before
  // its own SIGTERM has been handled (a signal and an IPC message arrive in no set order): it is
  // remembered, and it means stop now whether or not this worker has started draining.
  let drainNowBeforeServing = false;
  const onEarlyMessage = (m: { type?: unknown }): void => {
    if (m?.type === DRAIN_NOW) {
      drainNowBeforeServing = true;
      stopBeforeServing = true;
    }
  };
  process.on('message', onEarlyMessage);
  const running = await composeService(config, logger, clients);
  if (stopBeforeServing) {
    await running.close();
    process.exit(0);
  }
  rotate.handler = running.reopenAuditLog;
  const metrics = cluster.isWorker
    ? undefined
    : await metricsListener(config, logger).catch(async (e: unknown) => {
        // Logged out, finalized and the audit log flushed before main() reports it and exits.
        await running.close().catch(() => undefined);
        throw e;
      });
  const server = createServer(running.app, config.server, tls);
  running.lifecycle.serve(server);
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
  let drainTimer: NodeJS.Timeout | undefined;
  let closing = false;
  // The drain's end: no new connections; the requests in flight answered; sessions, login and module released.
  const finish = async (): Promise<void> => {
    clearTimeout(drainTimer);
    if (closing) return;
    closing = true;
    const ended = running.lifecycle.closeListener();
    // A cluster's primary says when to close the connections: once no worker listens.
    if (cluster.isWorker) process.send?.({ type: LISTENER_CLOSED });
    else running.lifecycle.closeConnections();
    await ended;
    try {
      await running.close();
    } catch (e) {
      logger.error({ err: (e as Error).message }, 'stopping: releasing the HSM failed');
      process.exit(1);
    }
    logger.info('stopped');
    process.exit(0);
  };
  stopSignal.handler = () => {
    if (running.lifecycle.draining) {
      // A cluster worker can get the signal twice (from the primary, and from a terminal or systemd
      // signalling the group): only the primary's DRAIN_NOW ends its drain early. A single process
      // takes a second signal (Ctrl-C twice) as that.
      if (!cluster.isWorker) void finish();
      return;
    }
    running.lifecycle.startDraining();
    logger.info({ drainMs: config.drainMs }, 'stopping: /readyz answers 503; accepting connections for DRAIN_MS more');
    metrics?.close();
    drainTimer = setTimeout(() => void finish(), config.drainMs);
    setTimeout(() => {
      logger.error('stopping took too long: killing this process');
      // Not process.exit(): it joins the HSM threads, and one inside a PKCS#11 call that never
      // returns would hold the process forever. The log line is written asynchronously: the kill
      // waits for it, a second at most.
      const kill = (): void => void process.kill(process.pid, 'SIGKILL');
      setTimeout(kill, 1000);
      logger.flush(kill);
    }, stopBoundMs(config)).unref();
  };
  process.off('message', onEarlyMessage);
  process.on('message', (m: { type?: unknown }) => {
    if (m?.type === DRAIN_NOW) {
      // Not draining yet: this worker's SIGTERM is still on its way; the drain starts (its bound set) and ends at once.
      if (!running.lifecycle.draining) stopSignal.handler?.();
      void finish();
    }
    if (m?.type === CLOSE_CONNECTIONS) running.lifecycle.closeConnections();
  });
  // One that came while the metrics listener started.
  if (stopBeforeServing) stopSignal.handler();
  if (drainNowBeforeServing) void finish();
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

/**
 * SIGTERM and SIGINT (stop: drain, then exit), handled from the start too: one that comes while the
 * process starts is remembered, so it still drains and exits 0 rather than dying by the signal.
 */
const stopSignal: { handler?: () => void; pending: boolean } = { pending: false };
const onStopSignal = (): void => {
  if (stopSignal.handler) stopSignal.handler();
  else stopSignal.pending = true;
};
process.on('SIGTERM', onStopSignal);
process.on('SIGINT', onStopSignal);

/** SIGUSR2 (log rotation: reopen the audit log), likewise handled from the start: its default action ends the process too. */
const rotate: { handler?: () => void } = {};
process.on('SIGUSR2', () => rotate.handler?.());

const PIN_REQUEST = 'hsm-signer:pin-request';
const PIN_REPLY = 'hsm-signer:pin';
/** From the primary on a second stop signal: stop accepting now, without waiting for DRAIN_MS to pass. */
const DRAIN_NOW = 'hsm-signer:drain-now';
/** From a worker whose listener is closed, and the primary's answer once none listens. */
const LISTENER_CLOSED = 'hsm-signer:listener-closed';
const CLOSE_CONNECTIONS = 'hsm-signer:close-connections';

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
  exitOnUncaught(logger);
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
  if (cluster.isPrimary && config.inventory === undefined) {
    logger.warn(
      'neither ISSUANCE_DB nor ISSUANCE_DB_FILE is set: issuing certificates answers 503 INVENTORY_NOT_CONFIGURED (nothing is issued without a record); signing works',
    );
  }
  if (cluster.isPrimary && config.workers > 1) return primary(config, logger);
  try {
    await worker(config, logger, tls, clients);
  } catch (e) {
    logger.fatal({ err: (e as Error).message }, 'worker could not start');
    process.exit(1);
  }
}

await main();
