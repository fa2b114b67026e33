/**
 * The shape of one load-test run, as the runner records it and every reporter reads it.
 * Everything here is plain JSON data so a report written today can be re-read and compared
 * with one written next month (see report/compare.ts); bump `version` on any breaking change.
 */

/** Two fixed loops timed a few times each (loadtest/machineProbe.ts). */
export interface MachineProbe {
  /** Milliseconds per pass of the compute loop, one per sample. */
  computeMs: number[];
  /** Milliseconds per pass of the memory-bound loop, one per sample. */
  memoryMs: number[];
}

/** Where the numbers came from: without these a req/s figure cannot be compared with another. */
export interface MachineFacts {
  cpus: number;
  cpuModel: string;
  totalMemBytes: number;
  /** process.version of the harness, e.g. "v20.20.2". */
  node: string;
  /** e.g. "linux x64". */
  platform: string;
  /** The PKCS#11 module path or a short name ("softhsm2", "cloudhsm"). */
  hsmModule: string;
  workers: number;
  sessionsPerWorker: number;
  /** Simulated per-operation HSM latency, 0 when talking to a real HSM. */
  hsmLatencyUs: number;
  /** How steady the machine was at the start and the end of the run (loadtest/machineProbe.ts). */
  probe?: { start: MachineProbe; end: MachineProbe };
}

/** Milliseconds. */
export interface LatencyStats {
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

/** What the service itself said during the step (scraped from /metrics or /healthz). */
export interface ServiceSample {
  poolInUse?: number;
  poolWaiting?: number;
  breakerState?: string;
  /** RSS samples taken during the step; a rising series hints at a leak. */
  rssBytes?: number[];
  /**
   * The same per worker process (pid -> samples, one every rssIntervalMs): `rssBytes` holds the
   * largest worker's, this shows whether any single worker grows.
   */
  rssByWorker?: Record<string, number[]>;
  /** How many /readyz answers the pool and breaker figures come from (they reach one worker each). */
  readyzSamples?: number;
  /** Every breaker state seen during the step, in the order first seen. */
  breakerStates?: string[];
}

/** One point of a sweep: one scenario held at one connection count for durationSec. */
export interface StepResult {
  /**
   * "<kind>:<keySpec>:<algorithm>" - kind is "sign", "verify", "batch<N>" (N items per request)
   * or a free-form "mix:80sign/20verify".
   */
  scenario: string;
  connections: number;
  durationSec: number;
  requests: number;
  /** 2xx with a body that parsed and had the expected shape. */
  okRequests: number;
  /** A batch request counts each item, so this is what compares with an HSM ceiling. */
  signatures: number;
  requestsPerSec: number;
  signaturesPerSec: number;
  latency: LatencyStats;
  /** Keys like "503 OVERLOADED", "504 DEADLINE_EXCEEDED", "timeout", "non2xx 500". */
  errors: Record<string, number>;
  /** A sample of signatures checked against the public key: throughput with bad output is worthless. */
  verified: { sampled: number; bad: number };
  service?: ServiceSample;
  /**
   * CPU seconds used during the step: by the service's worker processes (all their threads, from
   * /proc; local runs only) and by the load generator (the harness process). On a shared machine
   * they show where the cores went.
   */
  cpu?: { serviceSec?: number; clientSec: number };
  /** When the step began (ISO 8601); with the histogram, so a merge can tell how well generators overlapped. */
  startedAt?: string;
  /**
   * Every answer's latency (the same answers as `latency`) as an HdrHistogram in microseconds,
   * compressed base64 (loadtest/latencyHistogram.ts). Written by --generator-only runs and by
   * merge, which adds the generators' histograms and recomputes `latency` from the sum.
   */
  latencyHistogram?: string;
  /** A merged step: what each generator measured, in the order the merge was given them. */
  generators?: GeneratorStep[];
}

/** One generator's share of a merged step. */
export interface GeneratorStep {
  /** Where its results were read from. */
  source: string;
  connections: number;
  signaturesPerSec: number;
  latency: LatencyStats;
  /** CPU cores its load generator used during the step (CPU seconds ÷ duration), of `cpus`. */
  clientCores?: number;
  cpus: number;
  startedAt?: string;
}

/** The best an HSM path can do without our HTTP layer, to judge how much the service costs. */
export interface CeilingResult {
  scenario: string;
  /** Raw PKCS#11 C_Sign rate with `directProcesses` × `directInFlight` operations outstanding. */
  directOpsPerSec: number;
  directProcesses: number;
  directInFlight: number;
  /** An HTTP no-op (same framework, no HSM) at the same concurrency. */
  httpReqPerSec: number;
  /** combinedCeiling(directOpsPerSec, httpReqPerSec): both costs paid once per request. */
  combinedOpsPerSec: number;
}

/** A/B measurement of one PKCS#11 usage rule, so the report shows why the service does what it does. */
export interface PracticeResult {
  practice: string;
  goodLabel: string;
  badLabel: string;
  goodOpsPerSec: number;
  badOpsPerSec: number;
  /** goodOpsPerSec / badOpsPerSec. */
  ratio: number;
}

/** Inputs to planCapacity (loadtest/plan.ts); the optional ones have defaults in loadtest/defaults.ts. */
export interface PlanInput {
  targetOpsPerSec: number;
  perHsmOpsPerSec: number;
  perInstanceOpsPerSec: number;
  bestConnectionsPerInstance: number;
  zones?: number;
  spareHsms?: number;
  maxUtilization?: number;
  /** Which scenario the per-HSM / per-instance rates were measured with, for the report. */
  scenario?: string;
}

export type ResolvedPlanInput = Required<Omit<PlanInput, 'scenario'>> & { scenario?: string };

/** Which rule decided a tier's size, so an operator knows which knob would change it. */
export type BindingRule = 'load' | 'zone-loss' | 'spare' | 'minimum';

/** The sizing of one tier (HSMs or service instances). Capacities are at 100% utilisation. */
export interface TierPlan {
  unit: 'HSM' | 'instance';
  perUnitOpsPerSec: number;
  /** ceil(target / (perUnit × maxUtilization)). */
  neededForLoad: number;
  /** Smallest T with T − ceil(T / zones) ≥ neededForLoad (or neededForLoad with one zone). */
  neededForZoneLoss: number;
  total: number;
  /** How `total` is spread over the zones, largest first. Sums to `total`. */
  perZone: number[];
  /** total − max(perZone). */
  remainingAfterZoneLoss: number;
  capacityAllZonesOpsPerSec: number;
  capacityAfterZoneLossOpsPerSec: number;
  binding: BindingRule;
}

export interface PublishedSignRate {
  operation: string;
  keySpec: string;
  hsmType: string;
  hsms: number;
  opsPerSec: number;
}

export interface PublishedSignRates {
  source: string;
  note: string;
  rows: readonly PublishedSignRate[];
}

export interface CapacityPlan {
  inputs: ResolvedPlanInput;
  hsms: TierPlan;
  instances: TierPlan;
  concurrency: {
    perInstance: number;
    /** What the clients together should keep in flight when a zone is down. */
    totalAfterZoneLoss: number;
    totalAllZones: number;
  };
  /** (capacity − target) / target, system capacity being the weaker tier. 0.25 = 25% spare. */
  headroom: {
    allZones: number;
    afterZoneLoss: number;
    systemAllZonesOpsPerSec: number;
    systemAfterZoneLossOpsPerSec: number;
  };
  /** The arithmetic as sentences, in the order it was applied. */
  explanation: string[];
  notes: string[];
  awsPublished: PublishedSignRates;
}

/**
 * One of the project's performance targets, judged from this report. `met` is undefined when
 * the run did not hold the steps the target needs (e.g. no --hsm-latency variant).
 */
export interface TargetCheck {
  id: string;
  description: string;
  /** The measured value in the target's unit (a ratio for most). */
  measured?: number;
  threshold: number;
  /** 'min': measured must be at least threshold; 'max': at most. */
  kind: 'min' | 'max';
  met?: boolean;
  /** The numbers the value came from, as a sentence. */
  detail: string;
}

export interface LoadTestReport {
  version: 1;
  /** ISO 8601; reporters never read the clock, so the same report always renders the same. */
  startedAt: string;
  finishedAt: string;
  command: string;
  machine: MachineFacts;
  target: { urls: string[]; local: boolean };
  ceilings: CeilingResult[];
  steps: StepResult[];
  practices?: PracticeResult[];
  plan?: CapacityPlan;
  targets?: TargetCheck[];
  notes: string[];
  /** A --generator-only run: load and raw results only, to be merged (`loadtest merge`). */
  generatorOnly?: boolean;
  /** A merge of generator runs: the directories or files it read, in order. */
  mergedFrom?: string[];
}

/**
 * Throughput as seen by callers, when each request pays both the HSM's and the HTTP layer's
 * cost once: 1 / (1/direct + 1/http). Zero if either side cannot do anything.
 */
export function combinedCeiling(directOpsPerSec: number, httpReqPerSec: number): number {
  if (!(directOpsPerSec > 0) || !(httpReqPerSec > 0)) return 0;
  return 1 / (1 / directOpsPerSec + 1 / httpReqPerSec);
}

/** "batch64:ECC_NIST_P256:ECDSA_SHA_256" -> { kind: "batch64", rest: "ECC_NIST_P256:ECDSA_SHA_256" }. */
export function splitScenario(scenario: string): { kind: string; rest: string } {
  const i = scenario.indexOf(':');
  return i < 0 ? { kind: scenario, rest: '' } : { kind: scenario.slice(0, i), rest: scenario.slice(i + 1) };
}

/**
 * A scenario run against a differently set-up service in the same run (added HSM latency, a
 * token full of other objects) carries the variant after '@', so its steps stay apart from the
 * plain ones in every table and in compare: "sign:RSA_2048:RSASSA_PKCS1_V1_5_SHA_256@hsm-latency=1000us".
 */
export function splitVariant(scenario: string): { base: string; variant?: string } {
  const i = scenario.indexOf('@');
  return i < 0 ? { base: scenario } : { base: scenario.slice(0, i), variant: scenario.slice(i + 1) };
}

export function withVariant(base: string, variant: string | undefined): string {
  return variant === undefined || variant === '' ? base : `${base}@${variant}`;
}

/**
 * The ceiling a step should be judged against: the one measured for its own scenario, or, for a
 * batch, the single-sign ceiling of the same key and algorithm - a batch still costs one C_Sign
 * per item, so that is the HSM limit it runs into.
 */
export function ceilingFor(ceilings: readonly CeilingResult[], scenario: string): CeilingResult | undefined {
  const exact = ceilings.find((c) => c.scenario === scenario);
  if (exact) return exact;
  const { kind, rest } = splitScenario(scenario);
  if (!/^batch\d*$/.test(kind) || rest === '') return undefined;
  return ceilings.find((c) => c.scenario === `sign:${rest}`);
}

/** Fraction of the combined ceiling the service reached; undefined when there is nothing to compare with. */
export function efficiency(step: StepResult, ceiling: CeilingResult | undefined): number | undefined {
  if (!ceiling || !(ceiling.combinedOpsPerSec > 0)) return undefined;
  return step.signaturesPerSec / ceiling.combinedOpsPerSec;
}

export function totalErrors(step: StepResult): number {
  return Object.values(step.errors).reduce((a, b) => a + b, 0);
}

/** Scenario names in first-seen order, so reports follow the order the sweep ran in. */
export function scenariosOf(steps: readonly StepResult[]): string[] {
  return [...new Set(steps.map((s) => s.scenario))];
}

/** A scenario's steps ordered by connections (stable for repeated connection counts). */
export function stepsOf(steps: readonly StepResult[], scenario: string): StepResult[] {
  return steps.filter((s) => s.scenario === scenario).sort((a, b) => a.connections - b.connections);
}
