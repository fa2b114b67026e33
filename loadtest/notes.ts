/**
 * The report's prose: the sentences a run adds to its notes, as pure functions of what it measured
 * and how it was set up. The engine decides when a note is due; the wording lives here.
 */
import { availableParallelism } from 'node:os';
import { loadConfig } from '../src/config/config.js';
import { SOFTHSM_MODULE } from '../src/dev/softHsm.js';
import type { DirectRate } from './directRate.js';
import { formatInt, formatNumber, formatRate } from './format.js';
import { formatLatency } from './hsmLatency.js';
import type { LoadTestOptions, Variant } from './options.js';
import type { StepResult } from './results.js';

/** HSM_SESSIONS and HSM_THREADS as the service resolves them (src/config) when given these, or neither. */
export function serviceHsmSettings(sessions?: number, threads?: number): { sessions: number; threads: number } {
  const hsm = loadConfig({
    HSM_PIN: 'unused',
    ...(sessions !== undefined ? { HSM_SESSIONS: String(sessions) } : {}),
    ...(threads !== undefined ? { HSM_THREADS: String(threads) } : {}),
  }).hsm;
  return { sessions: hsm.sessions, threads: hsm.threads };
}

/** Other work on the machine skews every number: the report says how busy it was. */
export function loadNote(before: number[], after: number[]): string {
  const f = (l: number[]): string => l.map((x) => x.toFixed(2)).join(', ');
  return `Load average (1, 5, 15 min) at the start: ${f(before)}; at the end: ${f(after)} (on ${availableParallelism()} CPUs; it counts this run's own threads too, the service's HSM threads among them, so a high figure at the end is mostly the run itself; anything else running competes with the service and the load generator).`;
}

/** The machine facts' HSM module when the service runs on the harness token. */
export function serviceHsmModule(latencyUs: number): string {
  return `softhsm2 (${SOFTHSM_MODULE})${latencyUs > 0 ? ` and the p11shim latency module` : ''}`;
}

/** The machine facts' HSM module for `loadtest hsm`: the harness token or the external module. */
export function directHsmModule(latencyUs: number, externalModule?: string): string {
  return `${externalModule ?? `softhsm2 (${SOFTHSM_MODULE})`}${latencyUs > 0 ? ' behind the p11shim latency module' : ''}`;
}

/** How the run measured and what its tables mean, then one line per service set-up. */
export function standardNotes(o: LoadTestOptions, local: boolean, variants: readonly Variant[], badSignatures: number): string[] {
  const n: string[] = [
    'Throughput counts only 2xx answers whose bodies had the expected shape; req/s is of those. Errors are counted by status and code, timeouts and connection errors apart.',
    `A sample of good answers (${(o.sampleRate * 100).toFixed(1)}%, every ${Math.max(1, Math.floor(1 / o.sampleRate))}th; every verify answer) is verified with node:crypto against the key's public key from GET /v1/keys.`,
  ];
  if (local) {
    n.push(
      `The load generator (autocannon) runs in the harness process on the same ${availableParallelism()} cores as the service, and so does the bare-HTTP ceiling, so the efficiency compares like with like; on a bigger client the service would do better than shown.`,
      'Pool in use/waiting and breaker come from /readyz, sampled on fresh connections so the samples spread over the workers; each sample describes one worker and the table shows the largest seen. RSS is read from /proc for every worker process.',
      `The direct rate uses pkcs11js's async path (C_SignInit, then C_SignAsync on the libuv pool with UV_THREADPOOL_SIZE=${o.directThreadpool}) in ${o.workers} process(es), the best of ${o.directInFlight.join(' and ')} operations in flight per process; the service instead runs every PKCS#11 call on worker threads of its own (HSM_THREADS).`,
    );
    for (const v of variants) {
      const resolved = serviceHsmSettings(v.sessions, v.threads);
      const settings = `HSM_SESSIONS=${v.sessions ?? `default (${resolved.sessions})`}, HSM_THREADS=${v.threads ?? `default (${resolved.threads})`}`;
      n.push(
        `Service set-up ${v.label ?? '(plain)'}: WORKERS=${o.workers}, ${settings}${v.latencyUs > 0 ? `, ${formatLatency(v.latencyUs)} added before every networked PKCS#11 call by the p11shim module` : ''}` +
          `${v.auditLog ? `, AUDIT_LOG=${v.auditLog} (a new file each round)` : ''}.`,
      );
    }
  }
  if (badSignatures > 0) n.unshift(`FAILED: ${badSignatures} sampled signature(s) did not verify. Throughput with wrong signatures is worthless.`);
  return n;
}

/** The throughput of every repeat of every step, when steps are repeated. */
export function repeatsNote(repeat: number, repeats: readonly string[]): string {
  return `Each step was measured ${repeat} times in rounds and the median kept (by signatures/s): ${repeats.join('; ')}.`;
}

/** What `loadtest hsm` measured and how to read its practices. */
export function hsmOnlyNotes(latencyUs: number, practiceInFlight: number, threadpool: number): string[] {
  return [
    'Direct PKCS#11 only, no HTTP: the ceilings table shows the direct rate; its HTTP columns are 0.',
    `Practices run in one process: the good side of "operations in flight" keeps ${practiceInFlight} C_SignAsync outstanding (UV_THREADPOOL_SIZE=${threadpool}); every other measurement is a synchronous loop, one operation at a time, so only the practice differs. The ratio is good ÷ bad.`,
    ...(latencyUs > 0
      ? [
          `${formatLatency(latencyUs)} was added before every networked PKCS#11 call (p11shim), as a networked HSM would.`,
          'With latency the "in flight" side stays near 1 / latency per process: pkcs11js has no async C_SignInit, so each one blocks the event loop for a round trip. That is why the service runs every PKCS#11 call, C_SignInit included, on threads of its own.',
        ]
      : []),
  ];
}

export function directRateNote(id: string, x: DirectRate): string {
  const one = (t: DirectRate['tried'][number]): string =>
    `${formatRate(t.opsPerSec)} ops/s with ${t.inFlight} in flight (latency p50 ${formatNumber(t.p50Ms, 2)} ms, p99 ${formatNumber(t.p99Ms, 2)} ms; ${formatNumber(t.cpuMsPerOp, 3)} ms CPU per signature)`;
  return `Direct PKCS#11 ${id}: ${x.tried.map(one).join(', ')} (${x.processes} process(es), in flight per process; latency of the slowest process).`;
}

/** The bare-HTTP rate of every round, and the CPU per request of the kept (median) one. */
export function bareHttpNote(scenario: string, rounds: readonly StepResult[], kept: StepResult): string {
  const cpu = kept.cpu;
  return (
    `Bare HTTP ${scenario}: ${rounds.map((h) => formatRate(h.requestsPerSec)).join(', ')} req/s${rounds.length > 1 ? ', kept the median' : ''}` +
    (cpu?.serviceSec !== undefined && kept.okRequests > 0
      ? `; ${formatNumber((1000 * cpu.serviceSec) / kept.okRequests, 3)} ms CPU per request in the server, ${formatNumber((1000 * cpu.clientSec) / kept.okRequests, 3)} ms in the load generator.`
      : '.')
  );
}

export function batchCeilingNote(scenario: string, reqPerSec: number, items: number): string {
  return `Ceiling of ${scenario}: bare HTTP ${formatRate(reqPerSec)} req/s = ${formatRate(reqPerSec * items)} signatures/s, which the combined ceiling uses.`;
}

/** What the audit set-up wrote in one round, or why there was nothing to read. */
export function auditLogNote(round: number, file: string, read: { records: number; bytes: number; broken: number } | { error: string }): string {
  if ('error' in read) return `Audit set-up, round ${round + 1}: no audit log at ${file} (${read.error}).`;
  return (
    `Audit set-up, round ${round + 1}: ${formatInt(read.records)} records (${formatNumber(read.bytes / 2 ** 20, 1)} MiB) in ${file}` +
    (read.broken > 0 ? `; ${formatInt(read.broken)} line(s) are NOT whole JSON records.` : ', every line a whole JSON record.')
  );
}

export const REMOTE_NOTES = {
  hsmLatency: '--hsm-latency applies only when the harness starts the service; ignored with --url.',
  tokenObjects: '--token-objects applies only when the harness starts the service; ignored with --url.',
  auditLog: '--audit-log applies only when the harness starts the service; ignored with --url.',
  noCeilings: 'Remote target: ceilings and worker RSS need the service and HSM on this machine, so they are not measured.',
} as const;

export const generatorOnlyNote =
  'Generator-only run (--generator-only): the load and its raw results (a latency histogram per step), no ceilings and no plan. ' +
  "Merge it with the other generators' results: `npm run loadtest -- merge DIR DIR ... --out DIR [--target-ops N]`.";
