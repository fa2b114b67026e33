/**
 * Fault-test helpers: the service as a real separate process on a real socket, a keep-alive
 * HTTP driver, bounded load loops, and the per-second report the fault tests print.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { KeyObject } from 'node:crypto';
import type { SigningAlgorithm } from '../../src/crypto/algorithms.js';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';

// One copy of each, shared with the load-test harness.
import { freePort } from '../../testkit/localHttp.js';
import { percentile as nearestRank } from '../../testkit/percentile.js';
import { rssOf } from '../../testkit/processProbe.js';
import { REPO_ROOT } from '../../testkit/repoRoot.js';
import { signatureValid } from '../../testkit/signatureValid.js';
import { onJsonBody } from './jsonBody.js';

export interface HttpResult {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: unknown;
  readonly text: string;
  /** When the request was sent and answered, ms since the driver's epoch. */
  readonly start: number;
  readonly end: number;
}

/** Keep-alive HTTP client for one service; `maxSockets` bounds the connections it opens. */
export class HttpDriver {
  readonly agent: http.Agent;
  readonly epoch = performance.now();

  constructor(
    readonly port: number,
    maxSockets = 64,
  ) {
    this.agent = new http.Agent({ keepAlive: true, maxSockets, maxFreeSockets: maxSockets });
  }

  now(): number {
    return performance.now() - this.epoch;
  }

  /** With `newConnection`, the request opens a connection of its own (a cluster hands each new one to the next worker). */
  request(
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
    timeoutMs = 30_000,
    o: { newConnection?: boolean } = {},
  ): Promise<HttpResult> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const start = this.now();
    return new Promise((resolve, reject) => {
      const req = http.request(
        {
          host: '127.0.0.1',
          port: this.port,
          method,
          path,
          agent: o.newConnection ? false : this.agent,
          headers: { ...(payload ? { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(payload)) } : {}), ...headers },
        },
        (res) => {
          onJsonBody(res, (text, parsed) => {
            resolve({ status: res.statusCode ?? 0, headers: res.headers, body: parsed, text, start, end: this.now() });
          });
          res.on('error', reject);
        },
      );
      req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
      // `reusedSocket`: the request went out on a kept-alive connection (a reset there lost a request in flight).
      req.on('error', (e: Error) => reject(Object.assign(e, { reusedSocket: req.reusedSocket })));
      req.end(payload);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}

export interface ServiceProcess {
  readonly port: number;
  readonly pid: number;
  readonly driver: HttpDriver;
  /** Log lines (pino JSON) the service wrote so far. */
  logs(): string[];
  alive(): boolean;
  exitCode(): number | null | undefined;
  readyz(): Promise<HttpResult>;
  /** Resident set size of the service process, in MiB. */
  rssMiB(): number;
  stop(): Promise<void>;
}

/**
 * `node --import tsx src/main.ts` (or src/dev/start.ts) with `env`; resolves when /readyz answers 200 (or `o.ready`, e.g. over
 * TLS, says so). Its output goes
 * to a file, not a pipe: pino writes stdout synchronously, so a test process too busy to drain a
 * pipe would stall the service it is measuring.
 */
export async function startServiceProcess(
  env: NodeJS.ProcessEnv,
  o: {
    maxSockets?: number;
    readyTimeoutMs?: number;
    entry?: 'serve' | 'start';
    ready?: (port: number) => Promise<boolean>;
    onSpawn?: (pid: number) => void;
  } = {},
): Promise<ServiceProcess> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'hsm-signer-svc-'));
  const logFile = join(dir, 'service.log');
  const fd = openSync(logFile, 'a');
  // `serve` is `npm run serve` from the sources (the compiled build is productionBuild.test's); `start` is `npm start` (creates its token under HSM_DEV_DIR, then serves).
  const script = o.entry === 'start' ? 'src/dev/start.ts' : 'src/main.ts';
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', script], {
    cwd: REPO_ROOT,
    env: { ...env, PORT: String(port), HOST: '127.0.0.1' },
    stdio: ['ignore', fd, fd],
  });
  closeSync(fd);
  o.onSpawn?.(child.pid!);
  let exit: number | null | undefined;
  child.on('exit', (code) => {
    exit = code;
  });
  const logs = (): string[] => readFileSync(logFile, 'utf8').split('\n').filter(Boolean);
  const driver = new HttpDriver(port, o.maxSockets ?? 64);
  const proc: ServiceProcess = {
    port,
    pid: child.pid!,
    driver,
    logs,
    alive: () => exit === undefined && child.exitCode === null && child.signalCode === null,
    exitCode: () => exit,
    readyz: () => driver.request('GET', '/readyz', undefined, {}, 5000),
    rssMiB: () => (rssOf(child.pid!) ?? NaN) / (1024 * 1024),
    async stop() {
      driver.close();
      if (proc.alive()) {
        const exited = new Promise<void>((r) => child.once('exit', () => r()));
        // The second SIGTERM ends the drain (DRAIN_MS) at once: no load balancer to wait for here.
        child.kill('SIGTERM');
        await sleep(50);
        if (proc.alive()) child.kill('SIGTERM');
        await Promise.race([exited, sleep(6000)]);
        if (proc.alive()) child.kill('SIGKILL');
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  const deadline = Date.now() + (o.readyTimeoutMs ?? 30_000);
  for (;;) {
    if (!proc.alive()) throw new Error(`the service exited (${exit}) before it was ready:\n${logs().join('\n')}`);
    const ready = o.ready ? await o.ready(port).catch(() => false) : (await proc.readyz().catch(() => undefined))?.status === 200;
    if (ready) return proc;
    if (Date.now() > deadline) {
      await proc.stop();
      throw new Error(`the service was not ready in time:\n${logs().join('\n')}`);
    }
    await sleep(100);
  }
}

/** Polls until `check` passes (returns undefined) or the time is up; returns the last complaint. */
export async function eventually(check: () => Promise<string | undefined>, timeoutMs: number, everyMs = 100): Promise<string | undefined> {
  const end = Date.now() + timeoutMs;
  let last: string | undefined;
  for (;;) {
    last = await check().catch((e: unknown) => String(e));
    if (last === undefined || Date.now() > end) return last;
    await sleep(everyMs);
  }
}

/** The contract's error body for a status; a string saying what is wrong, or undefined. */
export function contractViolation(r: HttpResult): string | undefined {
  const body = r.body as { error?: { code?: unknown; message?: unknown; requestId?: unknown } } | undefined;
  const e = body?.error;
  if (!e || typeof e.code !== 'string' || typeof e.message !== 'string' || typeof e.requestId !== 'string')
    return `${r.status} without the contract's error body: ${r.text.slice(0, 200)}`;
  if (e.requestId !== r.headers['x-request-id']) return `${r.status} whose requestId is not its X-Request-Id`;
  const expected: Record<number, string[]> = { 503: ['HSM_UNAVAILABLE', 'OVERLOADED'], 504: ['DEADLINE_EXCEEDED'] };
  if (!expected[r.status]?.includes(e.code)) return `${r.status} with code ${e.code}`;
  if (r.status === 503 && !/^[1-9][0-9]*$/.test(String(r.headers['retry-after'] ?? ''))) return `503 ${e.code} without a valid Retry-After`;
  return undefined;
}

export function errorCode(r: HttpResult): string | undefined {
  return (r.body as { error?: { code?: string } } | undefined)?.error?.code;
}

/** Verifies a sign response (base64; DER for ECDSA) for `message` under `algorithm`, with the harness's checker. */
export function signatureVerifies(publicKey: KeyObject, algorithm: SigningAlgorithm, message: Buffer, signatureB64: string): boolean {
  return signatureValid(algorithm, message, publicKey, Buffer.from(signatureB64, 'base64'));
}

export interface Outcome {
  readonly start: number;
  readonly end: number;
  readonly status: number;
  readonly code?: string | undefined;
  readonly message?: string | undefined;
}

/** Counts per whole second of completion time, for the report and the throughput checks. */
export interface SecondRow {
  readonly second: number;
  readonly ok: number;
  readonly unavailable: number;
  readonly overloaded: number;
  readonly deadline: number;
  readonly other: number;
}

export function perSecond(outcomes: readonly Outcome[], fromMs: number, toMs: number): SecondRow[] {
  const rows: SecondRow[] = [];
  for (let s = Math.floor(fromMs / 1000); s * 1000 < toMs; s++) {
    const inSecond = outcomes.filter((o) => o.end >= s * 1000 && o.end < (s + 1) * 1000);
    rows.push({
      second: s,
      ok: inSecond.filter((o) => o.status === 200).length,
      unavailable: inSecond.filter((o) => o.code === 'HSM_UNAVAILABLE').length,
      overloaded: inSecond.filter((o) => o.code === 'OVERLOADED').length,
      deadline: inSecond.filter((o) => o.status === 504).length,
      other: inSecond.filter((o) => o.status !== 200 && o.status !== 503 && o.status !== 504).length,
    });
  }
  return rows;
}

/** 2xx completed in [fromMs, toMs), per second. */
export function rate(outcomes: readonly Outcome[], fromMs: number, toMs: number): number {
  return (outcomes.filter((o) => o.status === 200 && o.end >= fromMs && o.end < toMs).length * 1000) / (toMs - fromMs);
}

/** The harness's nearest-rank percentile, of an unsorted list. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  return nearestRank(
    [...values].sort((a, b) => a - b),
    p,
  );
}

/**
 * Runs `callers` closed loops until `running()` is false. Each caller pauses `pauseAfterErrorMs`
 * after a non-2xx, as a client with backoff would, so a fast-failing service is not measured
 * under a hot spin no real client produces.
 */
export async function closedLoops(
  callers: number,
  running: () => boolean,
  one: (caller: number, i: number) => Promise<unknown>,
  pauseAfterErrorMs = 0,
): Promise<void> {
  await Promise.all(
    Array.from({ length: callers }, async (_, caller) => {
      for (let i = 0; running(); i++) {
        const ok = await one(caller, i);
        if (ok === false && pauseAfterErrorMs > 0) await sleep(pauseAfterErrorMs);
      }
    }),
  );
}

/**
 * Runs `callers` loops until `running()` is false, each starting a request every
 * 1000 / `perCallerRate` ms (at once if the last one took longer): a steady offered load, like
 * clients with their own traffic, rather than a closed loop that measures the machine's CPU noise.
 * With `retryAtOnce`, a request that `one` reports failed (false) is followed by the next at once.
 */
export async function pacedLoops(
  callers: number,
  perCallerRate: number,
  running: () => boolean,
  one: (caller: number, i: number) => Promise<unknown>,
  o: { retryAtOnce?: boolean } = {},
): Promise<void> {
  const interval = 1000 / perCallerRate;
  await Promise.all(
    Array.from({ length: callers }, async (_, caller) => {
      // Spread the callers over one interval so they do not fire in lock-step.
      await sleep((caller * interval) / callers);
      for (let i = 0; running(); i++) {
        const started = performance.now();
        const ok = await one(caller, i);
        // A caller that ignores Retry-After sends again at once after a failure.
        if (ok === false && o.retryAtOnce) continue;
        const left = interval - (performance.now() - started);
        if (left > 0 && running()) await sleep(left);
      }
    }),
  );
}
