/**
 * What a load test is asked to do (LoadTestOptions, from the command line or a script), the
 * service set-ups it runs, and the events the engine emits while it runs.
 */
import type { KeySpec } from '../src/crypto/algorithms.js';
import type { LocalToken } from '../src/dev/softHsm.js';
import type { CeilingResult, PracticeResult, StepResult } from './results.js';
import type { ScenarioSpec } from './scenarios.js';
import type { StepProgress } from './stepRunner.js';

export interface PlanOptions {
  readonly targetOpsPerSec: number;
  readonly zones?: number;
  readonly spareHsms?: number;
  readonly maxUtilization?: number;
  /** The scenario whose rates size the plan; default the first one. */
  readonly scenario?: string;
  /** Per-HSM rate measured elsewhere (e.g. `loadtest hsm` from a client in the HSM's VPC). */
  readonly perHsmOpsPerSec?: number;
  /** HSMs behind a remote service, to turn its throughput into a per-HSM rate. */
  readonly hsms?: number;
}

export interface LoadTestOptions {
  /** The command line, for the report. */
  readonly command: string;
  /** Deployed service(s); empty = start the service here on the harness's own token. */
  readonly urls: readonly string[];
  readonly scenarios: readonly string[];
  readonly connections: readonly number[];
  /** The sweep of scenarios made only of batches (see DEFAULTS.batchConnections). */
  readonly batchConnections?: readonly number[];
  readonly durationSec: number;
  readonly warmupSec: number;
  /**
   * Each step (and each ceiling) is measured this many times, in rounds, and the median kept:
   * each round measures the ceilings and then every set-up, so that what a target compares meets
   * the same stretches of a shared host's drifting speed (see runRounds).
   */
  readonly repeat?: number;
  readonly sampleRate: number;
  readonly timeoutSec: number;
  readonly workers: number;
  readonly hsmSessions?: number;
  readonly hsmThreads?: number;
  /** Adds a run of every scenario through the latency shim. */
  readonly hsmLatencyUs?: number;
  /** Adds a run of every scenario on a token holding this many other objects. */
  readonly tokenObjects?: number;
  /** Adds a run of every scenario with the audit trail on: AUDIT_LOG to a file beside the harness token, new each round. */
  readonly auditLog?: boolean;
  readonly ceilings: boolean;
  readonly ceilingDurationSec: number;
  readonly ceilingConnections: number;
  readonly directInFlight: readonly number[];
  readonly directThreadpool: number;
  readonly authToken?: string;
  readonly cpuProfDir?: string;
  readonly tokenDir: string;
  readonly tokenLabel: string;
  readonly probeIntervalMs: number;
  readonly plan?: PlanOptions;
  /** Lets the issue scenario attach a throwaway CA certificate to a remote service's key. */
  readonly pkiSetup?: boolean;
  /** Seconds of the bare-HTTP / direct warm-up before a ceiling is measured. */
  readonly ceilingWarmupSec?: number;
  /**
   * `loadtest hsm` against an HSM other than the harness's SoftHSMv2 token (e.g. CloudHSM from a
   * client in its VPC): the module, token and credential, and the private-key label per key spec.
   */
  readonly externalHsm?: ExternalHsm;
  /**
   * --generator-only: only the load against --url (no ceilings, no plan), each step with its
   * latency histogram, for `loadtest merge` to add up with other generators' results.
   */
  readonly generatorOnly?: boolean;
  /**
   * --start-at: epoch milliseconds before which the first scenario's warm-up does not begin, so
   * that generators started apart begin their steps together.
   */
  readonly startAt?: number;
}

export interface ExternalHsm {
  readonly modulePath: string;
  readonly tokenLabel: string;
  /** HSM_SLOT: the token by its index in the list of slots with a token, instead of by label. */
  readonly slotIndex?: number;
  readonly pin: string;
  readonly keyLabels: Partial<Record<KeySpec, string>>;
}

export type HarnessEvent =
  | { readonly type: 'phase'; readonly text: string }
  | {
      readonly type: 'step-start';
      readonly scenario: string;
      readonly connections: number;
      readonly durationSec: number;
      readonly warmup: boolean;
      readonly index: number;
      readonly total: number;
    }
  | { readonly type: 'step-progress'; readonly scenario: string; readonly connections: number; readonly warmup: boolean; readonly progress: StepProgress }
  | { readonly type: 'step-done'; readonly step: StepResult; readonly warmup: boolean }
  | { readonly type: 'ceiling'; readonly ceiling: CeilingResult }
  | { readonly type: 'practice'; readonly practice: PracticeResult }
  | { readonly type: 'bad-signature'; readonly scenario: string; readonly reason: string }
  | { readonly type: 'note'; readonly text: string };

/** A service set-up the scenarios run against. */
export interface Variant {
  readonly label?: string;
  readonly token?: LocalToken;
  readonly modulePath: string;
  readonly env: Record<string, string>;
  readonly sessions?: number;
  readonly threads?: number;
  readonly latencyUs: number;
  /** AUDIT_LOG of this set-up: removed before each start, checked after each stop. */
  readonly auditLog?: string;
}

/** What the engine's parts share during a run: its options and scenarios, and where they report. */
export interface RunContext {
  readonly o: LoadTestOptions;
  readonly specs: readonly ScenarioSpec[];
  /** The harness starts the service itself (no --url). */
  readonly local: boolean;
  readonly headers: Record<string, string>;
  phase(text: string): void;
  note(text: string): void;
  addCeiling(ceiling: CeilingResult): void;
}
