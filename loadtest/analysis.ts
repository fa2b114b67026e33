/**
 * Pure analysis of measured steps: the median of repeated steps, the knee of a sweep, a ceiling
 * from a direct rate, and the capacity plan a finished run supports.
 */
import { KEY_SPEC_INFO, type KeySpec } from '../src/crypto/algorithms.js';
import type { DirectRate } from './directRate.js';
import { formatRate } from './format.js';
import type { PlanOptions } from './options.js';
import { planCapacity } from './plan.js';
import { ceilingFor, combinedCeiling, splitVariant, stepsOf, type CapacityPlan, type CeilingResult, type LoadTestReport, type StepResult } from './results.js';

/** signature bytes of a typical answer, for the canned bare-HTTP responses. */
export function typicalSignatureBytes(spec: KeySpec): number {
  const info = KEY_SPEC_INFO[spec];
  const field = Math.ceil(info.bits / 8);
  // DER ECDSA: SEQUENCE of two INTEGERs of about the field size each (7 bytes of headers and sign pads).
  return info.keyType === 'RSA' ? field : 2 * field + 7;
}

/** The step with the median throughput (the lower middle of an even count). */
export function medianStep(steps: readonly StepResult[]): StepResult | undefined {
  if (steps.length === 0) return undefined;
  const sorted = [...steps].sort((a, b) => a.signaturesPerSec - b.signaturesPerSec);
  return sorted[Math.floor((sorted.length - 1) / 2)];
}

/** The knee of a sweep: the fewest connections reaching `share` of its best throughput. */
export function kneeOf(steps: readonly StepResult[], share = 0.9): StepResult | undefined {
  if (steps.length === 0) return undefined;
  const best = Math.max(...steps.map((s) => s.signaturesPerSec));
  return [...steps].sort((a, b) => a.connections - b.connections).find((s) => s.signaturesPerSec >= share * best);
}

/** Turns a finished run into capacity-plan inputs and the plan (pure). */
export function planFromReport(r: LoadTestReport, o: PlanOptions): { plan?: CapacityPlan; notes: string[] } {
  const notes: string[] = [];
  const base = r.steps.filter((s) => splitVariant(s.scenario).variant === undefined);
  const scenario = o.scenario ?? base[0]?.scenario;
  const steps = scenario ? stepsOf(base, scenario) : [];
  if (!scenario || steps.length === 0) return { notes: [`No capacity plan: no steps of ${scenario ?? 'any scenario'} in this run.`] };
  const best = steps.reduce((a, b) => (b.signaturesPerSec > a.signaturesPerSec ? b : a));
  const knee = kneeOf(steps)!;
  if (!(best.signaturesPerSec > 0)) return { notes: [`No capacity plan: ${scenario} did no work.`] };
  let perHsm = o.perHsmOpsPerSec;
  if (perHsm !== undefined) notes.push(`Plan: per-HSM rate ${formatRate(perHsm)} ops/s as given (--per-hsm-ops).`);
  const ceiling = ceilingFor(r.ceilings, scenario);
  if (perHsm === undefined && ceiling && ceiling.directOpsPerSec > 0) {
    perHsm = ceiling.directOpsPerSec;
    notes.push(
      `Plan: per-HSM rate = the direct PKCS#11 rate of this run's token (${formatRate(perHsm)} ops/s); for CloudHSM run \`npm run loadtest -- hsm\` from a client in the cluster's VPC and pass its rate as --per-hsm-ops.`,
    );
  }
  if (perHsm === undefined) {
    const hsms = o.hsms ?? 1;
    perHsm = best.signaturesPerSec / hsms;
    notes.push(
      `Plan: per-HSM rate = best service throughput ÷ ${hsms} HSM(s) (--hsms) = ${formatRate(perHsm)} ops/s, which assumes the HSMs were the bottleneck; ` +
        'measure them directly with `npm run loadtest -- hsm` (or pass --per-hsm-ops) if the service was.',
    );
  }
  const plan = planCapacity({
    targetOpsPerSec: o.targetOpsPerSec,
    perHsmOpsPerSec: perHsm,
    perInstanceOpsPerSec: best.signaturesPerSec,
    bestConnectionsPerInstance: knee.connections,
    ...(o.zones !== undefined ? { zones: o.zones } : {}),
    ...(o.spareHsms !== undefined ? { spareHsms: o.spareHsms } : {}),
    ...(o.maxUtilization !== undefined ? { maxUtilization: o.maxUtilization } : {}),
    scenario,
  });
  notes.push(
    `Plan: per-instance rate = best step of ${scenario} (${formatRate(best.signaturesPerSec)} sig/s at ${best.connections} connections); ` +
      `the knee (first step within 10% of the best) is ${knee.connections} connections.`,
  );
  return { plan, notes };
}

/**
 * A scenario's ceiling from its direct PKCS#11 rate and, when measured, its bare-HTTP rate (a batch
 * request pays HTTP once for all its items, so its HTTP ceiling in signatures is req/s × items).
 * Without HTTP (`loadtest hsm`) the HTTP and combined columns are 0.
 */
export function ceilingFrom(
  scenario: string,
  direct: Pick<DirectRate, 'opsPerSec' | 'processes' | 'inFlight'>,
  http?: { reqPerSec: number; items: number },
): CeilingResult {
  return {
    scenario,
    directOpsPerSec: direct.opsPerSec,
    directProcesses: direct.processes,
    directInFlight: direct.inFlight,
    httpReqPerSec: http ? http.reqPerSec : 0,
    combinedOpsPerSec: http ? combinedCeiling(direct.opsPerSec, http.reqPerSec * http.items) : 0,
  };
}
