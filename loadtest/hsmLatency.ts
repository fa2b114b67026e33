/**
 * A networked HSM, simulated: the p11shim PKCS#11 module (testkit/p11shim, shared with the
 * resilience tests) sits between the service and SoftHSMv2 and sleeps before every call that
 * would cross the network on a real networked HSM (session open, login, find, sign init, sign, ...).
 */
import { ensureShimBuilt } from '../testkit/p11shim.js';

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
