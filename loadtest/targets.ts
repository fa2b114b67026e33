/**
 * Judges a report against the project's performance targets (TARGETS in defaults.ts). Pure: a
 * report in, checks out; a target whose steps the run did not hold is listed with met undefined,
 * so BENCHMARKS.md can say "not measured" instead of silently dropping it.
 */
import { TARGETS } from './defaults.js';
import { ceilingFor, withVariant, type LoadTestReport, type StepResult, type TargetCheck } from './results.js';
import { formatBytesMiB, formatInt, formatPercent, formatRate } from './format.js';
import { AUDIT_LOG_VARIANT, latencyVariant, tokenObjectsVariant } from './variants.js';

const stepAt = (steps: readonly StepResult[], scenario: string, connections: number): StepResult | undefined =>
  steps.find((s) => s.scenario === scenario && s.connections === connections);

function check(id: string, description: string, threshold: number, kind: 'min' | 'max', measured: number | undefined, detail: string): TargetCheck {
  const met = measured === undefined || !Number.isFinite(measured) ? undefined : kind === 'min' ? measured >= threshold : measured <= threshold;
  return {
    id,
    description,
    threshold,
    kind,
    ...(measured !== undefined && Number.isFinite(measured) ? { measured } : {}),
    ...(met === undefined ? {} : { met }),
    detail,
  };
}

function efficiencyChecks(r: LoadTestReport): TargetCheck[] {
  const t = TARGETS.efficiency;
  const out: TargetCheck[] = [];
  for (const scenario of t.scenarios) {
    const ceiling = ceilingFor(r.ceilings, scenario);
    for (const c of t.connections) {
      const step = stepAt(r.steps, scenario, c);
      const description = `${scenario} at ${c} connections: at least ${formatPercent(t.min, 0)} of the combined ceiling`;
      const id = `efficiency:${scenario}@${c}`;
      if (!step || !ceiling || !(ceiling.combinedOpsPerSec > 0)) {
        out.push(check(id, description, t.min, 'min', undefined, !step ? `no step at ${c} connections in this run` : 'no ceiling measured in this run'));
        continue;
      }
      const e = step.signaturesPerSec / ceiling.combinedOpsPerSec;
      out.push(
        check(
          id,
          description,
          t.min,
          'min',
          e,
          `${formatRate(step.signaturesPerSec)} sig/s of ${formatRate(ceiling.combinedOpsPerSec)} combined ` +
            `(direct ${formatRate(ceiling.directOpsPerSec)}, bare HTTP ${formatRate(ceiling.httpReqPerSec)} req/s)`,
        ),
      );
    }
  }
  return out;
}

function batchCheck(r: LoadTestReport): TargetCheck {
  const t = TARGETS.batch;
  const description = `${t.scenario}: best throughput at least ${formatPercent(t.min, 0)} of the direct PKCS#11 rate`;
  const steps = r.steps.filter((s) => s.scenario === t.scenario);
  const ceiling = ceilingFor(r.ceilings, t.scenario);
  if (steps.length === 0 || !ceiling || !(ceiling.directOpsPerSec > 0)) {
    return check('batch', description, t.min, 'min', undefined, steps.length === 0 ? 'no batch steps in this run' : 'no direct rate measured in this run');
  }
  const best = steps.reduce((a, b) => (b.signaturesPerSec > a.signaturesPerSec ? b : a));
  return check(
    'batch',
    description,
    t.min,
    'min',
    best.signaturesPerSec / ceiling.directOpsPerSec,
    `${formatRate(best.signaturesPerSec)} sig/s at ${best.connections} connections of ${formatRate(ceiling.directOpsPerSec)} direct`,
  );
}

function latencyCheck(r: LoadTestReport): TargetCheck {
  const t = TARGETS.hsmLatency;
  const description = `${t.scenario} with ${formatInt(t.latencyUs)} µs added per HSM call, ${t.connections} connections: at least ${formatPercent(t.min, 0)} of the same run without`;
  const base = stepAt(r.steps, t.scenario, t.connections);
  const slow = stepAt(r.steps, withVariant(t.scenario, latencyVariant(t.latencyUs)), t.connections);
  if (!base || !slow)
    return check('hsm-latency', description, t.min, 'min', undefined, 'the run did not hold both steps (needs --hsm-latency 1ms and 100 connections)');
  return check(
    'hsm-latency',
    description,
    t.min,
    'min',
    slow.signaturesPerSec / base.signaturesPerSec,
    `${formatRate(slow.signaturesPerSec)} sig/s with the latency, ${formatRate(base.signaturesPerSec)} without`,
  );
}

function auditLogCheck(r: LoadTestReport): TargetCheck {
  const t = TARGETS.auditLog;
  const description = `${t.scenario} with the audit trail on, ${t.connections} connections: at least ${formatPercent(t.min, 0)} of the same run with it off`;
  const off = stepAt(r.steps, t.scenario, t.connections);
  const on = stepAt(r.steps, withVariant(t.scenario, AUDIT_LOG_VARIANT), t.connections);
  if (!off || !on)
    return check('audit-log', description, t.min, 'min', undefined, `the run did not hold both steps (needs --audit-log and ${t.connections} connections)`);
  return check(
    'audit-log',
    description,
    t.min,
    'min',
    on.signaturesPerSec / off.signaturesPerSec,
    `${formatRate(on.signaturesPerSec)} sig/s with the audit trail, ${formatRate(off.signaturesPerSec)} without`,
  );
}

function tokenObjectsChecks(r: LoadTestReport): TargetCheck[] {
  const t = TARGETS.tokenObjects;
  const variant = tokenObjectsVariant(t.objects);
  const out: TargetCheck[] = [];
  const bases = [...new Set(r.steps.map((s) => s.scenario))].filter((s) => s.startsWith('sign:') && !s.includes('@'));
  for (const base of bases) {
    const description = `${base} with ${formatInt(t.objects)} other objects on the token: within ${formatPercent(1 - t.min, 0)} of the throughput with none`;
    const pairs = r.steps
      .filter((s) => s.scenario === base)
      .map((s) => [s, stepAt(r.steps, withVariant(base, variant), s.connections)] as const)
      .filter((p): p is readonly [StepResult, StepResult] => p[1] !== undefined);
    if (pairs.length === 0) continue;
    // Summed over the common connection counts: one noisy step should not decide it.
    const with_ = pairs.reduce((a, [, w]) => a + w.signaturesPerSec, 0);
    const without = pairs.reduce((a, [b]) => a + b.signaturesPerSec, 0);
    out.push(
      check(
        `token-objects:${base}`,
        description,
        t.min,
        'min',
        with_ / without,
        `${formatRate(with_ / pairs.length)} vs ${formatRate(without / pairs.length)} sig/s on average over ${pairs.map(([b]) => b.connections).join(', ')} connections`,
      ),
    );
  }
  if (out.length === 0)
    out.push(
      check(
        'token-objects',
        `sign throughput with ${formatInt(t.objects)} other objects on the token within ${formatPercent(1 - t.min, 0)} of none`,
        t.min,
        'min',
        undefined,
        `needs --token-objects ${t.objects}`,
      ),
    );
  return out;
}

/** Largest spread (max − min) / min of any one worker's RSS over the step. */
export function rssSpread(step: StepResult): { spread: number; worker: string; min: number; max: number } | undefined {
  let worst: { spread: number; worker: string; min: number; max: number } | undefined;
  for (const [worker, series] of Object.entries(step.service?.rssByWorker ?? {})) {
    if (series.length < 2) continue;
    const min = Math.min(...series);
    const max = Math.max(...series);
    const spread = (max - min) / min;
    if (!worst || spread > worst.spread) worst = { spread, worker, min, max };
  }
  return worst;
}

const medianOf = (xs: readonly number[]): number => {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? 0;
};

/**
 * Drift of a worker's RSS: the series cut into `windows` equal parts, the median of each, and
 * the largest distance of a later median from the first, relative to the first. Medians ride
 * over the garbage collector's saw-tooth, so this is growth, not the GC's amplitude.
 */
export function rssDrift(step: StepResult, windows = 5): { drift: number; worker: string; medians: number[] } | undefined {
  let worst: { drift: number; worker: string; medians: number[] } | undefined;
  for (const [worker, series] of Object.entries(step.service?.rssByWorker ?? {})) {
    const size = Math.floor(series.length / windows);
    if (size < 1) continue;
    const medians = Array.from({ length: windows }, (_, i) => medianOf(series.slice(i * size, (i + 1) * size)));
    const first = medians[0]!;
    const drift = Math.max(...medians.map((m) => Math.abs(m - first) / first));
    if (!worst || drift > worst.drift) worst = { drift, worker, medians };
  }
  return worst;
}

function rssChecks(r: LoadTestReport): TargetCheck[] {
  const t = TARGETS.rss;
  const out: TargetCheck[] = [];
  for (const step of r.steps.filter((s) => s.durationSec >= t.minDurationSec * 0.98)) {
    const d = rssDrift(step);
    const s = rssSpread(step);
    const description = `${step.scenario} at ${step.connections} connections for ${formatInt(step.durationSec)} s: every worker's RSS flat within ${formatPercent(t.max, 0)}`;
    const detail = d
      ? `worker ${d.worker}, median RSS per fifth of the step: ${d.medians.map((m) => formatBytesMiB(m)).join(', ')}` +
        (s
          ? `; all samples of worker ${s.worker} between ${formatBytesMiB(s.min)} and ${formatBytesMiB(s.max)} (${formatPercent(s.spread)}, the GC's saw-tooth)`
          : '')
      : 'no RSS samples (only when the harness starts the service)';
    out.push(check(`rss:${step.scenario}@${step.connections}`, description, t.max, 'max', d?.drift, detail));
  }
  if (out.length === 0)
    out.push(
      check(
        'rss',
        `per-worker RSS flat within ${formatPercent(t.max, 0)} over a ${t.minDurationSec / 60}-minute step`,
        t.max,
        'max',
        undefined,
        `needs a step of at least ${t.minDurationSec} s (--duration ${t.minDurationSec})`,
      ),
    );
  return out;
}

export function evaluateTargets(r: LoadTestReport): TargetCheck[] {
  return [...efficiencyChecks(r), batchCheck(r), latencyCheck(r), ...tokenObjectsChecks(r), auditLogCheck(r), ...rssChecks(r)];
}
