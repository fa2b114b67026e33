/**
 * Starts the real service (src/main.ts, a cluster of WORKERS processes) as a child process for a
 * run, on a free loopback port, and stops it afterwards. Its stderr is kept in a small ring
 * buffer: shown only if it fails to start, so a run prints nothing per request.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort, statusOf } from '../testkit/localHttp.js';
import { childPids, cpuSecondsOf } from '../testkit/processProbe.js';
import { REPO_ROOT } from '../testkit/repoRoot.js';

export interface LocalServiceOptions {
  /** The script to run with tsx, relative to the repository root. */
  readonly script?: string;
  readonly env: Record<string, string>;
  readonly workers: number;
  /** A directory for V8 CPU profiles of every service process (--cpu-prof). */
  readonly cpuProfDir?: string;
  readonly readyTimeoutMs?: number;
  /** The path that answers 200 once a worker serves. */
  readonly readyPath?: string;
}

export interface LocalService {
  readonly url: string;
  readonly port: number;
  readonly pid: number;
  /** The processes that serve: the cluster workers, or the one process when WORKERS=1. */
  workerPids(): number[];
  stop(): Promise<void>;
}

function tail(lines: string[], text: string, max = 40): void {
  for (const l of text.split('\n')) if (l.trim()) lines.push(l);
  while (lines.length > max) lines.shift();
}

export async function startLocalService(o: LocalServiceOptions): Promise<LocalService> {
  const port = await freePort();
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH ?? '',
    HOME: process.env.HOME ?? '',
    NODE_ENV: 'development',
    LOG_LEVEL: 'warn',
    // No load balancer to take it out of rotation first: on stop, it need not keep serving for DRAIN_MS.
    DRAIN_MS: '0',
    ...o.env,
    PORT: String(port),
    WORKERS: String(o.workers),
  };
  // Not NODE_OPTIONS (node refuses --cpu-prof there); cluster workers inherit execArgv.
  const profile = o.cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${o.cpuProfDir}`] : [];
  const child: ChildProcess = spawn(process.execPath, [...profile, '--import', 'tsx', o.script ?? 'src/main.ts'], {
    cwd: REPO_ROOT,
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const stderr: string[] = [];
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => tail(stderr, d));
  let exited: number | null | undefined;
  const exit = new Promise<void>((resolve) =>
    child.on('exit', (code, signal) => {
      exited = code ?? (signal ? -1 : 0);
      resolve();
    }),
  );

  const url = `http://127.0.0.1:${port}`;
  const readyPath = o.readyPath ?? '/readyz';
  const workerPids = (): number[] => (o.workers > 1 ? childPids(child.pid!) : [child.pid!]);
  const stop = async (): Promise<void> => {
    if (exited !== undefined) return;
    child.kill('SIGTERM');
    const killed = await Promise.race([exit.then(() => true), sleep(10_000).then(() => false)]);
    if (!killed) {
      child.kill('SIGKILL');
      await exit;
    }
  };

  // Ready = every worker answers: with round-robin hand-off, 2 × workers 200s in a row on new connections.
  const deadline = Date.now() + (o.readyTimeoutMs ?? 90_000);
  let streak = 0;
  while (streak < 2 * o.workers) {
    if (exited !== undefined) {
      throw new Error(`the service exited with code ${exited} before it was ready:\n${stderr.join('\n')}`);
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`the service was not ready within ${(o.readyTimeoutMs ?? 90_000) / 1000} s:\n${stderr.join('\n')}`);
    }
    const status = await statusOf(url + readyPath);
    if (status === 200 && workerPids().length >= Math.max(o.workers, 1)) streak++;
    else {
      streak = 0;
      await sleep(200);
    }
  }
  // "Ready" comes before a worker is quiet: with many HSM threads, each a V8 isolate compiling
  // its code, a worker can burn a core for seconds more. Measuring then would measure start-up.
  await waitForQuiet([child.pid!, ...workerPids()]);
  return { url, port, pid: child.pid!, workerPids, stop };
}

/** Waits until the processes together use less than `share` of one core over `windowMs`, or `maxMs` passes. */
export async function waitForQuiet(pids: readonly number[], o: { share?: number; windowMs?: number; maxMs?: number } = {}): Promise<void> {
  const { share = 0.15, windowMs = 1000, maxMs = 30_000 } = o;
  const total = (): number => pids.reduce((a, p) => a + (cpuSecondsOf(p) ?? 0), 0);
  const end = Date.now() + maxMs;
  let before = total();
  while (Date.now() < end) {
    await sleep(windowMs);
    const now = total();
    if (now - before < (share * windowMs) / 1000) return;
    before = now;
  }
}
