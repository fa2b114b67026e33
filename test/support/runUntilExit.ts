import { spawn } from 'node:child_process';
import { REPO_ROOT } from '../../testkit/repoRoot.js';

export interface Exited {
  readonly code: number | null;
  /** Everything the process wrote (stdout and stderr), line by line. */
  readonly lines: string[];
}

/** `node --import tsx src/main.ts` with exactly `env`, for a start that must fail; killed after `timeoutMs`. */
export function runUntilExit(env: NodeJS.ProcessEnv, timeoutMs = 20_000): Promise<Exited> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString('utf8')));
    child.stderr.on('data', (d: Buffer) => (out += d.toString('utf8')));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`still running after ${timeoutMs} ms:\n${out}`));
    }, timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, lines: out.split('\n').filter(Boolean) });
    });
  });
}
