import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { DumpedObject } from './dumpTokenObjects.js';
import type { TestToken } from './testToken.js';

/**
 * The key-manager CLI and a token inspector, each as its own process (as in production, and
 * because PKCS#11 state is per process). Asynchronous, so a service in the test process keeps
 * serving while they run.
 */
const ROOT = fileURLToPath(new URL('../../', import.meta.url));

export interface CliResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  /** The signal that ended the process, if one did (a crash: SIGSEGV, SIGABRT). */
  readonly signal?: string;
}

function run(script: string, args: readonly string[], env: NodeJS.ProcessEnv): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', script, ...args], { cwd: ROOT, env, encoding: 'utf8' }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
      resolve({ code, stdout, stderr, ...(error?.signal ? { signal: error.signal } : {}) });
    });
  });
}

/** `hsm-signer-admin <args>` against the test token; `env` is added to (or overrides) the token's environment. */
export function runAdmin(token: TestToken, args: readonly string[], env: Record<string, string | undefined> = {}): Promise<CliResult> {
  return run('src/admin/cli.ts', args, { ...process.env, ...token.env(), ...env });
}

/** Like runAdmin, but throws unless it exits 0; returns stdout. */
export async function admin(token: TestToken, ...args: string[]): Promise<string> {
  const r = await runAdmin(token, args);
  if (r.code !== 0) throw new Error(`hsm-signer-admin ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

/**
 * test/support/addTokenObjects.ts in its own process: `data` data objects and `ecPairs` EC key
 * pairs (decoy-N) added to the test token; with `unservable`, also the two signing keys the service
 * cannot serve (orphan-ec, k1-ec).
 */
export async function addTokenObjects(token: TestToken, o: { data?: number; ecPairs?: number; unservable?: boolean }): Promise<void> {
  const args = [token.label, token.pinFile, String(o.data ?? 0), String(o.ecPairs ?? 0), ...(o.unservable ? ['1'] : [])];
  const r = await run('test/support/addTokenObjects.ts', args, { ...process.env, ...token.env() });
  if (r.code !== 0) throw new Error(`addTokenObjects exited ${r.code}: ${r.stderr}`);
}

export async function dumpTokenObjects(token: TestToken): Promise<DumpedObject[]> {
  const r = await run('test/support/dumpTokenObjects.ts', [token.label, token.pinFile], { ...process.env, ...token.env() });
  if (r.code !== 0) throw new Error(`dumpTokenObjects exited ${r.code}: ${r.stderr}`);
  return (JSON.parse(r.stdout) as { objects: DumpedObject[] }).objects;
}
