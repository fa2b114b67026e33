/**
 * `loadtest merge`: several --generator-only runs against one service, added up into one report
 * (pure). Throughputs, counts and CPU seconds add; the latency histograms add, and the merged
 * step's percentiles are recomputed from the sum, so they are those of every generator's answers
 * together. The steps must line up: the same scenarios, in the same order, at the same
 * connections on every generator; the merged step's connections are their sum.
 */
import { planFromReport } from './analysis.js';
import { formatInt, formatNumber } from './format.js';
import { decodeLatencyHistogram, encodeLatencyHistogram, latencyStatsOf, mergeLatencyHistograms } from './latencyHistogram.js';
import { generatorOnlyNote } from './notes.js';
import type { PlanOptions } from './options.js';
import type { GeneratorStep, LoadTestReport, ServiceSample, StepResult } from './results.js';
import { evaluateTargets } from './targets.js';

export interface GeneratorResult {
  /** The file it was read from, for errors and the report. */
  readonly source: string;
  readonly report: LoadTestReport;
}

export class MergeError extends Error {
  override readonly name = 'MergeError';
}

/**
 * A generator's event loop is one core: a step where it used this share of one core or more was
 * likely limited by the generator, not by the service.
 */
export const GENERATOR_BUSY_CORES = 0.8;

const sum = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0);

function checkInputs(inputs: readonly GeneratorResult[]): void {
  if (inputs.length === 0) throw new MergeError('merge: give at least one generator result');
  const [first] = inputs as [GeneratorResult, ...GeneratorResult[]];
  for (const { source, report } of inputs) {
    if (report.generatorOnly !== true) {
      throw new MergeError(`${source}: generatorOnly is not true (not the result of a --generator-only run)`);
    }
    if (report.steps.length === 0) throw new MergeError(`${source}: steps is empty`);
    if (report.steps.length !== first.report.steps.length) {
      throw new MergeError(
        `${source}: steps has ${report.steps.length} step(s), ${first.source} has ${first.report.steps.length} (every generator must run the same sweep)`,
      );
    }
    for (const [i, s] of report.steps.entries()) {
      const f = first.report.steps[i]!;
      if (s.scenario !== f.scenario) {
        throw new MergeError(
          `${source}: steps[${i}].scenario is '${s.scenario}', ${first.source} has '${f.scenario}' (every generator must run the same sweep)`,
        );
      }
      if (s.connections !== f.connections) {
        throw new MergeError(
          `${source}: steps[${i}].connections is ${s.connections}, ${first.source} has ${f.connections} (every generator must run the same sweep)`,
        );
      }
      if (typeof s.latencyHistogram !== 'string' || s.latencyHistogram === '') {
        throw new MergeError(`${source}: steps[${i}].latencyHistogram is missing`);
      }
    }
  }
}

function mergeService(samples: readonly (ServiceSample | undefined)[]): ServiceSample | undefined {
  const seen = samples.filter((s): s is ServiceSample => s !== undefined);
  if (seen.length === 0) return undefined;
  const max = (f: (s: ServiceSample) => number | undefined): number | undefined => {
    const xs = seen.map(f).filter((n): n is number => n !== undefined);
    return xs.length > 0 ? Math.max(...xs) : undefined;
  };
  const states = [...new Set(seen.flatMap((s) => s.breakerStates ?? (s.breakerState ? [s.breakerState] : [])))];
  const inUse = max((s) => s.poolInUse);
  const waiting = max((s) => s.poolWaiting);
  const readyz = sum(seen.map((s) => s.readyzSamples ?? 0));
  // The worst state any generator saw: a breaker that opened for one of them opened.
  const breakerState = states.find((s) => s !== 'closed') ?? states[0];
  return {
    ...(inUse !== undefined ? { poolInUse: inUse } : {}),
    ...(waiting !== undefined ? { poolWaiting: waiting } : {}),
    ...(breakerState !== undefined ? { breakerState } : {}),
    ...(states.length > 0 ? { breakerStates: states } : {}),
    ...(readyz > 0 ? { readyzSamples: readyz } : {}),
  };
}

function mergeStep(inputs: readonly GeneratorResult[], i: number): StepResult {
  const parts = inputs.map((g) => g.report.steps[i]!);
  const first = parts[0]!;
  const histogram = mergeLatencyHistograms(
    parts.map((s, g) => {
      try {
        return decodeLatencyHistogram(s.latencyHistogram!, `${inputs[g]!.source}: steps[${i}].latencyHistogram`);
      } catch (e) {
        throw new MergeError((e as Error).message);
      }
    }),
  );
  const errors: Record<string, number> = {};
  for (const s of parts) for (const [k, n] of Object.entries(s.errors)) errors[k] = (errors[k] ?? 0) + n;
  const starts = parts.map((s) => s.startedAt).filter((t): t is string => t !== undefined);
  const service = mergeService(parts.map((s) => s.service));
  const clientSecs = parts.map((s) => s.cpu?.clientSec);
  const generators: GeneratorStep[] = parts.map((s, g) => ({
    source: inputs[g]!.source,
    connections: s.connections,
    signaturesPerSec: s.signaturesPerSec,
    latency: s.latency,
    ...(s.cpu ? { clientCores: s.cpu.clientSec / s.durationSec } : {}),
    cpus: inputs[g]!.report.machine.cpus,
    ...(s.startedAt ? { startedAt: s.startedAt } : {}),
  }));
  return {
    scenario: first.scenario,
    connections: sum(parts.map((s) => s.connections)),
    durationSec: Math.max(...parts.map((s) => s.durationSec)),
    requests: sum(parts.map((s) => s.requests)),
    okRequests: sum(parts.map((s) => s.okRequests)),
    signatures: sum(parts.map((s) => s.signatures)),
    requestsPerSec: sum(parts.map((s) => s.requestsPerSec)),
    signaturesPerSec: sum(parts.map((s) => s.signaturesPerSec)),
    latency: latencyStatsOf(histogram),
    errors,
    verified: { sampled: sum(parts.map((s) => s.verified.sampled)), bad: sum(parts.map((s) => s.verified.bad)) },
    ...(service ? { service } : {}),
    ...(clientSecs.every((c) => c !== undefined) ? { cpu: { clientSec: Number(sum(clientSecs as number[]).toFixed(3)) } } : {}),
    ...(starts.length > 0 ? { startedAt: starts.sort()[0]! } : {}),
    latencyHistogram: encodeLatencyHistogram(histogram),
    generators,
  };
}

/** How far apart the generators began each step: a merge adds rates, which assumes the steps overlapped. */
function skewNote(steps: readonly StepResult[]): string | undefined {
  let worst: { gap: number; step: StepResult } | undefined;
  for (const step of steps) {
    const t = (step.generators ?? []).map((g) => (g.startedAt ? Date.parse(g.startedAt) : Number.NaN)).filter(Number.isFinite);
    if (t.length < 2) continue;
    const gap = (Math.max(...t) - Math.min(...t)) / 1000;
    if (!worst || gap > worst.gap) worst = { gap, step };
  }
  if (!worst) return undefined;
  const share = worst.gap / worst.step.durationSec;
  const where = `${worst.step.scenario} at ${formatInt(worst.step.connections)} connections`;
  const text = `The generators began each step within ${formatNumber(worst.gap, 1)} s of each other (largest gap: ${where}, ${formatNumber(100 * share, 0)}% of the step).`;
  return share > 0.1
    ? `${text} The steps overlapped only in part, so the summed rate is not what the service held at the summed connections: start the generators together (one Indexed Job) or lengthen --duration.`
    : text;
}

/** Per generator, the busiest step of its load generator (one event loop: at most about one core). */
function generatorCpuNotes(inputs: readonly GeneratorResult[]): string[] {
  return inputs.map(({ source, report }) => {
    const m = report.machine;
    let busiest: { cores: number; step: StepResult } | undefined;
    for (const s of report.steps) {
      if (!s.cpu) continue;
      const cores = s.cpu.clientSec / s.durationSec;
      if (!busiest || cores > busiest.cores) busiest = { cores, step: s };
    }
    const head = `Generator ${source}: ${formatInt(m.cpus)} × ${m.cpuModel}, Node ${m.node}`;
    if (!busiest) return `${head}.`;
    const where = `${busiest.step.scenario} at ${formatInt(busiest.step.connections)} connections`;
    const busy =
      busiest.cores >= GENERATOR_BUSY_CORES
        ? ` At or above ${formatNumber(GENERATOR_BUSY_CORES, 1)} of a core its event loop was near full: it, not the service, may have limited that step; add generators.`
        : '';
    return `${head}; its load generator used at most ${formatNumber(busiest.cores, 2)} cores (${where}).${busy}`;
  });
}

/** The notes of the generators: those every generator wrote once, the others under their source. */
function inputNotes(inputs: readonly GeneratorResult[]): string[] {
  const out: string[] = [];
  const all = (n: string): boolean => inputs.every((g) => g.report.notes.includes(n));
  for (const { source, report } of inputs) {
    for (const n of report.notes) {
      if (n === generatorOnlyNote) continue;
      const text = all(n) ? n : `${source}: ${n}`;
      if (!out.includes(text)) out.push(text);
    }
  }
  return out;
}

export function mergeGeneratorResults(inputs: readonly GeneratorResult[], o: { command: string; plan?: PlanOptions }): LoadTestReport {
  checkInputs(inputs);
  const first = inputs[0]!.report;
  const steps = first.steps.map((_, i) => mergeStep(inputs, i));
  const report: LoadTestReport = {
    version: 1,
    startedAt: inputs.map((g) => g.report.startedAt).sort()[0]!,
    finishedAt: inputs
      .map((g) => g.report.finishedAt)
      .sort()
      .at(-1)!,
    command: o.command,
    machine: { ...first.machine, cpus: sum(inputs.map((g) => g.report.machine.cpus)) },
    target: { urls: [...new Set(inputs.flatMap((g) => g.report.target.urls))], local: false },
    ceilings: [],
    steps,
    notes: [],
    mergedFrom: inputs.map((g) => g.source),
  };
  const notes = [
    `Merged from ${formatInt(inputs.length)} load generator(s): ${inputs.map((g) => g.source).join(', ')}. ` +
      'Each step adds their rates, counts and load-generator CPU (connections are the sum); its latencies are the percentiles of every answer of every generator (their HdrHistograms added). ' +
      "The Run section's CPU is the generators' cores together, the model the first one's.",
    ...(skewNote(steps) !== undefined ? [skewNote(steps)!] : []),
    ...generatorCpuNotes(inputs),
  ];
  if (o.plan) {
    const p = planFromReport(report, o.plan);
    if (p.plan) report.plan = p.plan;
    notes.push(...p.notes);
  }
  report.targets = evaluateTargets(report);
  report.notes = [...notes, ...inputNotes(inputs)];
  return report;
}
