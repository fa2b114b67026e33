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
});

/**
 * AWS's published approximate cluster sign rates, for putting a measured per-HSM rate next to
 * the vendor's figure. Data only: the plan prints it, nothing branches on it.
 */
export const AWS_PUBLISHED_SIGN_RATES: PublishedSignRates = Object.freeze({
  source: 'AWS CloudHSM documentation, performance section',
  note: 'Approximate, measured by AWS with a multi-threaded Java client on EC2; your workload will differ.',
  rows: Object.freeze([
    { operation: 'sign', keySpec: 'RSA_2048', hsmType: 'hsm1.medium', hsms: 2, opsPerSec: 2000 },
    { operation: 'sign', keySpec: 'RSA_2048', hsmType: 'hsm1.medium', hsms: 3, opsPerSec: 3000 },
    { operation: 'sign', keySpec: 'RSA_2048', hsmType: 'hsm1.medium', hsms: 6, opsPerSec: 5000 },
    { operation: 'sign', keySpec: 'RSA_2048', hsmType: 'hsm2m.medium', hsms: 2, opsPerSec: 2000 },
    { operation: 'sign', keySpec: 'RSA_2048', hsmType: 'hsm2m.medium', hsms: 3, opsPerSec: 3000 },
    { operation: 'sign', keySpec: 'RSA_2048', hsmType: 'hsm2m.medium', hsms: 6, opsPerSec: 5000 },
    { operation: 'sign', keySpec: 'ECC_NIST_P256', hsmType: 'hsm1.medium', hsms: 2, opsPerSec: 500 },
    { operation: 'sign', keySpec: 'ECC_NIST_P256', hsmType: 'hsm1.medium', hsms: 3, opsPerSec: 750 },
    { operation: 'sign', keySpec: 'ECC_NIST_P256', hsmType: 'hsm1.medium', hsms: 6, opsPerSec: 1500 },
    { operation: 'sign', keySpec: 'ECC_NIST_P256', hsmType: 'hsm2m.medium', hsms: 2, opsPerSec: 3000 },
    { operation: 'sign', keySpec: 'ECC_NIST_P256', hsmType: 'hsm2m.medium', hsms: 3, opsPerSec: 4500 },
    { operation: 'sign', keySpec: 'ECC_NIST_P256', hsmType: 'hsm2m.medium', hsms: 6, opsPerSec: 7000 },
  ]),
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
