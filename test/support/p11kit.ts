/**
 * A networked HSM on this machine: SoftHSMv2 served by `p11-kit server` on a unix socket,
 * reached through p11-kit's client module (Debian packages p11-kit and p11-kit-modules).
 *
 * Each client connection is served by a forked p11-kit-remote child. Killing the server and its
 * children is a real lost connection: every call then fails with CKR_DEVICE_ERROR, and keeps
 * failing after a new server starts until the client finalizes and re-initializes the module.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { childPids } from '../../testkit/processProbe.js';
import { SOFTHSM_MODULE } from '../../src/dev/softHsm.js';

export const P11KIT_CLIENT_MODULE = '/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so';

/** Why the p11-kit route cannot run here, or undefined when it can. */
export function p11kitMissing(): string | undefined {
  if (!existsSync(P11KIT_CLIENT_MODULE)) return `${P11KIT_CLIENT_MODULE} is missing (apt-get install p11-kit-modules)`;
  try {
    execFileSync('p11-kit', ['--help'], { stdio: 'ignore' });
  } catch {
    return 'the p11-kit command is missing (apt-get install p11-kit)';
  }
  return undefined;
}

export class P11KitServer {
  private proc: ChildProcess | undefined;

  /** `env` must carry SOFTHSM2_CONF for the token. */
  constructor(
    readonly socket: string,
    private readonly tokenLabel: string,
    private readonly env: NodeJS.ProcessEnv,
  ) {}

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  /** What a process needs to use this server as its HSM. */
  clientEnv(): Record<string, string> {
    return { HSM_MODULE: P11KIT_CLIENT_MODULE, P11_KIT_SERVER_ADDRESS: `unix:path=${this.socket}` };
  }

  /** Starts the server and resolves once it listens (it prints its address when it does). */
  async start(timeoutMs = 10_000): Promise<void> {
    if (this.proc) throw new Error('p11-kit server already running');
    const proc = spawn('p11-kit', ['server', '-f', '-n', this.socket, '-p', SOFTHSM_MODULE, `pkcs11:token=${this.tokenLabel}`], {
      env: this.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.proc = proc;
    let out = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`p11-kit server did not start within ${timeoutMs} ms: ${out}`)), timeoutMs);
      const onData = (d: Buffer): void => {
        out += d.toString();
        if (out.includes('P11_KIT_SERVER_PID=')) {
          clearTimeout(timer);
          resolve();
        }
      };
      proc.stdout!.on('data', onData);
      proc.stderr!.on('data', onData);
      proc.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`p11-kit server exited (${code ?? signal}): ${out}`));
      });
    });
    proc.removeAllListeners('exit');
  }

  /** The forked p11-kit-remote children: one per client connection. */
  connections(): number[] {
    return this.proc?.pid ? childPids(this.proc.pid) : [];
  }

  /** Kills the connections' children and the server: the HSM is gone until start() again. */
  async kill(): Promise<void> {
    const proc = this.proc;
    if (!proc?.pid) return;
    for (const child of this.connections()) {
      try {
        process.kill(child, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
    const exited = new Promise<void>((r) => proc.once('exit', () => r()));
    proc.kill('SIGKILL');
    await Promise.race([exited, sleep(5000)]);
    this.proc = undefined;
  }

  /** SIGSTOP / SIGCONT every connection's child: calls hang without an error, like a stalled HSM. */
  pauseConnections(paused: boolean): void {
    for (const child of this.connections()) process.kill(child, paused ? 'SIGSTOP' : 'SIGCONT');
  }

  async stop(): Promise<void> {
    this.pauseConnections(false);
    await this.kill();
  }
}
