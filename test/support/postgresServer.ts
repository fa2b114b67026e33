/**
 * A throwaway PostgreSQL server for the tests, from Debian's `postgresql` package: a cluster made
 * by initdb in a temp dir, listening on 127.0.0.1 on a free port (its socket in the temp dir, so
 * nothing touches /var/run/postgresql or a cluster the package may have started), with password
 * (SCRAM) authentication and a random password. As root (CI), initdb and the server run as the
 * package's `postgres` user, since both refuse root; as anyone else, as that user.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { freePort } from '../../testkit/localHttp.js';

export const POSTGRES_USER = 'hsm_signer';

export interface PostgresServer {
  readonly port: number;
  /** As the server knows it; URLs carry it percent-encoded (`passwordInUrl`). */
  readonly password: string;
  readonly passwordInUrl: string;
  /** postgres://user:password@127.0.0.1:port/postgres */
  readonly adminUrl: string;
  /** How long initdb plus the first start took, ms. */
  readonly startupMs: number;
  /** A new, empty database; its URL. */
  createDatabase(prefix?: string): Promise<string>;
  /** Fast shutdown: clients are disconnected; the data stays. */
  stop(): void;
  start(): void;
  /** SIGSTOP (true) or SIGCONT (false) to the server and its backends: a server that accepts connections and never answers. */
  freeze(frozen: boolean): void;
  readonly running: boolean;
  /** Stops the server (if running) and removes its directory. Idempotent. */
  dispose(): void;
}

/** The newest PostgreSQL under /usr/lib/postgresql with an initdb. */
export function postgresBinDir(): string {
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root)
    ? readdirSync(root)
        .filter((v) => /^\d+$/.test(v) && existsSync(join(root, v, 'bin', 'initdb')))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  const newest = versions[0];
  if (newest === undefined) throw new Error('no PostgreSQL under /usr/lib/postgresql: install the Debian package postgresql');
  return join(root, newest, 'bin');
}

export async function startPostgresServer(): Promise<PostgresServer> {
  const t0 = performance.now();
  const bin = postgresBinDir();
  const dir = mkdtempSync(join(tmpdir(), 'hsm-signer-pg-'));
  const data = join(dir, 'data');
  const log = join(dir, 'server.log');
  const asRoot = process.getuid?.() === 0;
  // As root, every command runs as `postgres`, which must own the directory.
  const run = (cmd: string, args: readonly string[]) => {
    const [file, argv] = asRoot ? ['runuser', ['-u', 'postgres', '--', join(bin, cmd), ...args]] : [join(bin, cmd), [...args]];
    const r = spawnSync(file, argv, { encoding: 'utf8', env: { ...process.env, LC_ALL: 'C' } });
    if (r.status !== 0) throw new Error(`${cmd} failed (${r.status ?? r.signal}): ${(r.stderr || r.stdout || String(r.error)).trim().slice(-2000)}`);
  };
  let port = 0;
  let running = false;
  const serverPids = (): number[] => {
    const postmaster = Number(readFileSync(join(data, 'postmaster.pid'), 'utf8').split('\n')[0]);
    return [postmaster, ...childrenOf(postmaster)];
  };
  let disposed = false;
  const stop = () => {
    if (!running) return;
    run('pg_ctl', ['stop', '-D', data, '-m', 'fast', '-w', '-t', '30']);
    running = false;
  };
  const dispose = () => {
    if (disposed) return;
    try {
      // A frozen server would not stop.
      if (running) for (const pid of serverPids()) process.kill(pid, 'SIGCONT');
    } catch {
      // Not frozen, or already gone.
    }
    disposed = true;
    process.removeListener('exit', dispose);
    process.removeListener('SIGTERM', onSignal);
    process.removeListener('SIGINT', onSignal);
    try {
      if (running) run('pg_ctl', ['stop', '-D', data, '-m', 'immediate', '-w', '-t', '30']);
    } catch {
      // Removing the directory below still matters; a server left behind dies with its data dir gone.
    }
    running = false;
    rmSync(dir, { recursive: true, force: true });
  };
  // A test process that ends without its after() hook (an exit, or the runner's SIGTERM on a file
  // timeout) still stops the server; the signal is then raised again.
  process.on('exit', dispose);
  const onSignal = (signal: NodeJS.Signals) => {
    dispose();
    process.kill(process.pid, signal);
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
  // With characters a URL must escape, so that redaction is tested on the escaped and the plain form.
  const password = `${randomBytes(15).toString('base64url')}@:%`;
  const inUrl = encodeURIComponent(password);
  try {
    const pwfile = join(dir, 'pw');
    writeFileSync(pwfile, password, { mode: 0o600 });
    if (asRoot) {
      const id = (flag: string): number => Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8' }).trim());
      for (const path of [dir, pwfile]) chownSync(path, id('-u'), id('-g'));
    }
    run('initdb', [
      '-D',
      data,
      '-U',
      POSTGRES_USER,
      `--pwfile=${pwfile}`,
      '--auth=scram-sha-256',
      '--no-locale',
      '-E',
      'UTF8',
      '--no-sync',
      '--no-instructions',
    ]);
    rmSync(pwfile);
    port = await freePort();
    // Only TCP on loopback and a socket in the temp dir; durability off: the data is thrown away.
    const options = `-p ${port} -h 127.0.0.1 -k ${dir} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100`;
    const start = () => {
      try {
        run('pg_ctl', ['start', '-D', data, '-l', log, '-w', '-t', '60', '-o', options]);
      } catch (e) {
        const serverLog = existsSync(log) ? readFileSync(log, 'utf8').trim().slice(-2000) : '(no log)';
        throw new Error(`${(e as Error).message}\nserver log:\n${serverLog}`);
      }
      running = true;
    };
    start();
    const adminUrl = `postgres://${POSTGRES_USER}:${inUrl}@127.0.0.1:${port}/postgres`;
    const startupMs = performance.now() - t0;
    return {
      port,
      password,
      passwordInUrl: inUrl,
      adminUrl,
      startupMs,
      async createDatabase(prefix = 'inv') {
        const name = `${prefix}_${randomBytes(6).toString('hex')}`;
        const client = new pg.Client({ connectionString: adminUrl });
        await client.connect();
        try {
          await client.query(`CREATE DATABASE ${name}`);
        } finally {
          await client.end();
        }
        return `postgres://${POSTGRES_USER}:${inUrl}@127.0.0.1:${port}/${name}`;
      },
      stop,
      start,
      freeze(frozen: boolean) {
        for (const pid of serverPids()) process.kill(pid, frozen ? 'SIGSTOP' : 'SIGCONT');
      },
      get running() {
        return running;
      },
      dispose,
    };
  } catch (e) {
    dispose();
    throw e;
  }
}

/** The processes whose parent is `pid` (from /proc). */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ')'.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(entry));
    } catch {
      // Exited meanwhile.
    }
  }
  return out;
}
