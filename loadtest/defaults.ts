import type { PublishedSignRates } from './results.js';

export interface HarnessDefaults {
  /** Connection counts of a sweep; dense at the low end where the knee usually is. */
  connections: readonly number[];
  durationSec: number;
  /** Not recorded: the first seconds include JIT, pool fill and TLS/keep-alive setup. */
  warmupSec: number;
  scenarios: readonly string[];
  outDir: string;
  /** Fraction of responses whose signature is verified locally. */
  sampleRate: number;
  zones: number;
  spareHsms: number;
  maxUtilization: number;
  /** Items per request of a "batch" scenario that does not say (batch = batch64). */
  batchSize: number;
  /**
   * Connections of a batch scenario's sweep: each request holds batchSize signatures in flight,
   * so 16 connections of batch64 are already 1,024 - more than a worker queues by default.
   */
  batchConnections: readonly number[];
  /** Distinct request bodies per scenario, so the service does not sign one digest over and over. */
  bodiesPerScenario: number;
  /** Seconds per ceiling measurement (each direct in-flight setting, each bare-HTTP shape). */
  ceilingDurationSec: number;
  /** Connections of the bare-HTTP ceiling: the top of the range the targets are set for. */
  ceilingConnections: number;
  /** Operations in flight per direct-PKCS#11 process; the best one is the ceiling. */
  directInFlight: readonly number[];
  /** UV_THREADPOOL_SIZE of a direct process: pkcs11js runs C_SignAsync there; 4 beat 16 and 64 here. */
  directThreadpool: number;
  /** Service settings for --hsm-latency: each thread is one round trip in flight, so many of both. */
  latencyHsmThreads: number;
  latencyHsmSessions: number;
  /** How often /readyz and the workers' RSS are sampled during a step. */
  probeIntervalMs: number;
  machineProbeSamples: number;
  /** autocannon's per-request timeout; a slower answer counts as "timeout". */
  requestTimeoutSec: number;
  /** Where the harness keeps its own SoftHSMv2 token (git-ignored), apart from the dev token. */
  tokenDir: string;
  tokenLabel: string;
  /** Seconds per side of each practice measurement in `loadtest hsm`. */
  practiceDurationSec: number;
  /** Operations in flight for the "many in flight" side of the practices. */
  practiceInFlight: number;
  /** `npm run bench`: one short fixed run, the same every time so its numbers compare. */
  bench: {
    readonly connections: number;
    readonly durationSec: number;
    readonly warmupSec: number;
    readonly scenarios: readonly string[];
  };
}

/** The one defaults object of the harness; CLI flags override field by field. */
export const DEFAULTS: HarnessDefaults = Object.freeze({
  connections: Object.freeze([1, 8, 25, 50, 75, 100, 150]),
  durationSec: 10,
  warmupSec: 3,
  scenarios: Object.freeze(['sign:RSA_2048:RSASSA_PKCS1_V1_5_SHA_256', 'sign:ECC_NIST_P256:ECDSA_SHA_256']),
  outDir: 'reports',
  sampleRate: 0.02,
  zones: 3,
  spareHsms: 1,
  // Past ~80% an HSM's queue grows fast and p99 with it; plan to stay below the knee.
  maxUtilization: 0.8,
  batchSize: 64,
  batchConnections: Object.freeze([1, 2, 4, 8, 16]),
  bodiesPerScenario: 16,
  ceilingDurationSec: 5,
  ceilingConnections: 100,
  directInFlight: Object.freeze([4, 16]),
  directThreadpool: 4,
  // 1 ms per call, two calls per signature: 32 threads per worker keep up to ~16,000 signatures/s
  // of round trips in flight. Measured at 100 connections with 1 ms: 16 fell short, 32 and 64 did
  // alike (BENCHMARKS.md); each HSM thread is a V8 isolate, so the smaller one.
  latencyHsmThreads: 32,
  latencyHsmSessions: 32,
  probeIntervalMs: 500,
  /** Passes of each machine-steadiness loop at the start and the end of a run (machineProbe.ts). */
  machineProbeSamples: 6,
  requestTimeoutSec: 10,
  tokenDir: '.hsm/loadtest',
  tokenLabel: 'loadtest',
  practiceDurationSec: 2,
  practiceInFlight: 16,
  bench: Object.freeze({
    connections: 64,
    durationSec: 5,
    warmupSec: 2,
    scenarios: Object.freeze(['sign:RSA_2048:RSASSA_PKCS1_V1_5_SHA_256', 'sign:ECC_NIST_P256:ECDSA_SHA_256']),
  }),
});

/**
 * The performance targets of issue #4, as data: targets.ts judges a report against them and
 * BENCHMARKS.md records the outcome. Changing a threshold is a decision, not a code change.
 */
export const TARGETS = Object.freeze({
  /** signatures/s ÷ combined ceiling, for single signs at these connection counts. */
  efficiency: Object.freeze({
    min: 0.85,
    connections: Object.freeze([64, 100]),
    scenarios: Object.freeze(['sign:RSA_2048:RSASSA_PKCS1_V1_5_SHA_256', 'sign:ECC_NIST_P256:ECDSA_SHA_256']),
  }),
  /** Best batch signatures/s ÷ direct PKCS#11 rate of the same key. */
  batch: Object.freeze({ min: 0.7, scenario: 'batch64:ECC_NIST_P256:ECDSA_SHA_256' }),
  /** Throughput with simulated latency ÷ without, same run, at these connections. */
  hsmLatency: Object.freeze({ min: 0.8, connections: 100, latencyUs: 1000, scenario: 'sign:RSA_2048:RSASSA_PKCS1_V1_5_SHA_256' }),
  /**
   * Largest per-worker RSS drift over a step at least this long (after the warm-up): the median
   * of each fifth of the step against the first fifth's (targets.ts, rssDrift).
   */
  rss: Object.freeze({ max: 0.1, minDurationSec: 300 }),
  /** Sign throughput with that many other objects on the token ÷ without. */
  tokenObjects: Object.freeze({ min: 0.95, objects: 1000 }),
  /** Issue 12: sign throughput with the audit trail on (AUDIT_LOG to a file) ÷ off, same run, at these connections. */
  auditLog: Object.freeze({ min: 0.9, connections: 64, scenario: 'sign:ECC_NIST_P256:ECDSA_SHA_256' }),
});

/**
 * AWS's published approximate cluster sign rates, for putting a measured per-HSM rate next to
 * the vendor's figure. Data only: the plan prints it, nothing branches on it.
 */
export const AWS_PUBLISHED_SIGN_RATES: PublishedSignRates = Object.freeze({
  source: 'AWS CloudHSM documentation, performance section',
  note: 'Approximate, measured by AWS with a multi-threaded Java client on EC2; your workload will differ.',
  rows: Object.freeze(
    (
      [
        ['RSA_2048', 'hsm1.medium', [2000, 3000, 5000]],
        ['RSA_2048', 'hsm2m.medium', [2000, 3000, 5000]],
        ['ECC_NIST_P256', 'hsm1.medium', [500, 750, 1500]],
        ['ECC_NIST_P256', 'hsm2m.medium', [3000, 4500, 7000]],
      ] as const
    ).flatMap(([keySpec, hsmType, rates]) =>
      [2, 3, 6].map((hsms, i) => ({ operation: 'sign' as const, keySpec, hsmType, hsms, opsPerSec: rates[i] as number })),
    ),
  ),
});

/** AWS CloudHSM documentation, quotas section. */
export const AWS_CLOUDHSM_QUOTAS = Object.freeze({
  /** Hard limit, not adjustable: beyond it the load must be split over clusters. */
  maxHsmsPerCluster: 28,
  /** Per account per region; adjustable through Service Quotas. */
  defaultHsmsPerRegion: 6,
  maxClientConnectionsPerCluster: 900,
  maxSessionsPerApplication: 1024,
});

/** AWS CloudHSM documentation: fewer than three HSMs risks losing a key created just before a failure. */
export const AWS_MIN_HSMS_FOR_DURABLE_NEW_KEYS = 3;
/** One HSM can fail and signing continues. */
export const MIN_HSMS_SIGNING_ONLY = 2;
/** An instance can be replaced or deployed without an outage. */
export const MIN_INSTANCES = 2;
