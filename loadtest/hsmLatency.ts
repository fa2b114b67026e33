/**
 * A networked HSM, simulated: the p11shim PKCS#11 module (sources in test/fixtures/p11shim, shared
 * with the resilience tests) sits between the service and SoftHSMv2 and sleeps before every call
 * that would cross the network on a real networked HSM (session open, login, find, sign init,
 * sign, ...). The build helper lives here, outside test/, so the harness does not import tests;
 * test/support/p11shim.ts re-exports it.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const SHIM_DIR = fileURLToPath(new URL('../test/fixtures/p11shim/', import.meta.url)).replace(/\/$/, '');
export const SHIM_LIBRARY = join(SHIM_DIR, 'build', 'libp11shim.so');

function mtimeMs(path: string): number | undefined {
  return existsSync(path) ? statSync(path).mtimeMs : undefined;
}

/** Builds the shim if it is missing or older than its sources; returns the .so's absolute path. */
export function ensureShimBuilt(): string {
  const built = mtimeMs(SHIM_LIBRARY);
  const sources = ['p11shim.c', 'Makefile'].map((f) => mtimeMs(join(SHIM_DIR, f)) ?? Infinity);
  if (built !== undefined && sources.every((m) => m <= built)) return SHIM_LIBRARY;
  try {
    execFileSync('make', ['--no-print-directory', '-C', SHIM_DIR], {
      stdio: ['ignore', 'pipe', 'pipe'],
      encoding: 'utf8',
    });
  } catch (e) {
    const err = e as { stderr?: string; stdout?: string; message: string };
    const output = `${err.stdout ?? ''}${err.stderr ?? ''}`.trim() || err.message;
    throw new Error(
      `building the p11shim PKCS#11 test module failed; it needs make, gcc and p11-kit's pkcs11.h ` +
        `(Debian/Ubuntu: apt-get install make gcc libp11-kit-dev):\n${output}`,
    );
  }
  if (!existsSync(SHIM_LIBRARY)) throw new Error(`make -C ${SHIM_DIR} succeeded but did not produce ${SHIM_LIBRARY}`);
  return SHIM_LIBRARY;
}

/** "1ms", "250us", "250µs", "0.5ms", "1" (ms) -> microseconds. */
export function parseLatency(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|us|µs|s)?\s*$/.exec(text);
  if (!m) throw new RangeError(`--hsm-latency: '${text}' is not a duration such as 1ms or 500us`);
  const n = Number(m[1]);
  const unit = m[2] ?? 'ms';
  const us = unit === 's' ? n * 1e6 : unit === 'ms' ? n * 1000 : n;
  if (!Number.isFinite(us) || us < 0 || us > 10e6) throw new RangeError(`--hsm-latency: ${text} is out of range (0 to 10 s)`);
  return Math.round(us);
}

export function formatLatency(us: number): string {
  return us % 1000 === 0 ? `${us / 1000}ms` : `${us}us`;
}

/** Environment and module path that make a process load the shim in front of `realModule`. */
export function latencyModule(realModule: string, latencyUs: number): { modulePath: string; env: Record<string, string> } {
  return {
    modulePath: ensureShimBuilt(),
    env: { P11SHIM_MODULE: realModule, P11SHIM_LATENCY_US: String(latencyUs) },
  };
}
