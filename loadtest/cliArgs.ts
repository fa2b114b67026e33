/**
 * Command line -> options, pure: DEFAULTS overridden flag by flag. Bad input throws a UsageError
 * naming the flag.
 */
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { DEFAULTS } from './defaults.js';
import type { LoadTestOptions, PlanOptions } from './options.js';
import { parseLatency } from './hsmLatency.js';
import { parseScenario, ScenarioError } from './scenarios.js';
import { isKeySpec, type KeySpec } from '../src/crypto/algorithms.js';

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export const USAGE = `Usage:
  npm run loadtest -- [options]                 start the service on a local SoftHSMv2 token, sweep, report
  npm run loadtest -- --url https://signer:8443 [--url ...] [options]   load a deployed service (or replicas)
  npm run loadtest -- hsm [--hsm-latency 1ms]   PKCS#11 practices and the direct rate on the token, no HTTP
  npm run loadtest -- compare old.json new.json change per step between two reports
  npm run loadtest -- render dir/report.json    re-judge the targets and rewrite report.md and report.html
  npm run loadtest -- --url URL --generator-only --out DIR   one load generator of several: the load and raw results only
  npm run loadtest -- merge DIR [DIR...] [--out DIR] [--target-ops N ...]   add up generators' results into one report

Load:
  --scenario S[,S...]   sign:SPEC[:ALG], verify:SPEC[:ALG], batchN:SPEC[:ALG], csr:SPEC, issue:SPEC,
                        mix:80sign/20verify:SPEC[:ALG]      (default: ${DEFAULTS.scenarios.join(', ')})
  --connections 1,8,25  concurrent connections per step          (default: ${DEFAULTS.connections.join(',')})
  --batch-connections 1,4  the same for batch scenarios (each request is N signatures in flight)
                                                                  (default: ${DEFAULTS.batchConnections.join(',')})
  --duration 10s        per step                                  (default: ${DEFAULTS.durationSec}s)
  --warmup 3s           per scenario, not recorded                (default: ${DEFAULTS.warmupSec}s)
  --repeat 3            measure each step and ceiling N times in rounds, keep the median (default: 1)
  --sample-rate 0.02    share of answers verified (at least 0.01) (default: ${DEFAULTS.sampleRate})
  --timeout 10s         per request                               (default: ${DEFAULTS.requestTimeoutSec}s)
  --auth-token T        bearer token for a deployed service (or env LOADTEST_AUTH_TOKEN)
  --pki-setup           let issue:SPEC attach a throwaway CA certificate to a deployed service's key
  --generator-only      with --url: no plan; each step also keeps its latency histogram, for merge
  --start-at TIME       ISO 8601 time to begin the first warm-up at, so generators load together

Local service (when no --url):
  --workers N           service worker processes                  (default: CPU count, ${availableParallelism()})
  --hsm-sessions N      HSM_SESSIONS per worker                   (default: the service's, 16; ${DEFAULTS.latencyHsmSessions} with --hsm-latency)
  --hsm-threads N       HSM_THREADS per worker                    (default: the service's, 4; ${DEFAULTS.latencyHsmThreads} with --hsm-latency)
  --hsm-latency 1ms     also run every scenario through a PKCS#11 module that adds this delay to each
                        networked call (a simulated network HSM), beside the plain run
  --token-objects N     also run every scenario on a token holding N other objects
  --audit-log           also run every scenario with the audit trail on (AUDIT_LOG to a file), beside the plain run
  --no-ceiling          skip the direct-PKCS#11 and bare-HTTP ceilings
  --ceiling-duration 5s / --ceiling-connections 100
  --cpu-prof DIR        write V8 CPU profiles of the service processes to DIR

hsm mode (default: the harness's SoftHSMv2 token; or the HSM named by HSM_MODULE, HSM_TOKEN_LABEL
or HSM_SLOT, and HSM_PIN or HSM_PIN_FILE):
  --key SPEC=LABEL      the CKA_LABEL of the private key to sign with, per key spec
  --connections 1,16,64 operations in flight per process for the direct rate, each level measured
                        (default: ${DEFAULTS.directInFlight.join(',')}); --workers processes at once
  --ceiling-duration 10s  per direct-rate level (default: ${DEFAULTS.ceilingDurationSec}s)
  --hsm-latency, --scenario as above; --duration is per practice measurement

Plan:
  --target-ops N        size HSMs, instances and concurrency for N signatures/s
  --zones 3 --spare-hsms 1 --max-utilization 0.8 --plan-scenario S
  --per-hsm-ops N       per-HSM rate measured elsewhere (e.g. loadtest hsm in the cluster's VPC)
  --hsms N              HSMs behind a deployed service (per-HSM rate = its throughput / N)

Output:
  --out DIR             report.json, report.md, report.html       (default: ${DEFAULTS.outDir})
  --compare old.json    print the change per step against an earlier report
`;

export type Command =
  | { readonly kind: 'help' }
  | { readonly kind: 'compare'; readonly oldPath: string; readonly newPath: string }
  | { readonly kind: 'render'; readonly path: string }
  | { readonly kind: 'merge'; readonly paths: readonly string[]; readonly outDir: string; readonly command: string; readonly plan?: PlanOptions }
  | { readonly kind: 'run'; readonly options: LoadTestOptions; readonly outDir: string; readonly comparePath?: string }
  | {
      readonly kind: 'hsm';
      readonly options: LoadTestOptions;
      readonly outDir: string;
      readonly practiceDurationSec: number;
      readonly practiceInFlight: number;
      /** --key SPEC=LABEL: private-key labels on an HSM named by HSM_MODULE. */
      readonly keyLabels: Partial<Record<KeySpec, string>>;
    };

/** "10", "10s", "500ms", "2m" -> seconds. */
export function parseSeconds(flag: string, text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$/.exec(text);
  if (!m) throw new UsageError(`${flag}: '${text}' is not a duration such as 10s, 500ms or 5m`);
  const n = Number(m[1]);
  const s = m[2] === 'ms' ? n / 1000 : m[2] === 'm' ? n * 60 : n;
  if (!(s > 0) && flag !== '--warmup') throw new UsageError(`${flag}: must be more than 0`);
  return s;
}

function positiveInt(flag: string, text: string, min = 1): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < min) throw new UsageError(`${flag}: '${text}' must be an integer >= ${min}`);
  return n;
}

function positiveNumber(flag: string, text: string): number {
  const n = Number(text);
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`${flag}: '${text}' must be a number > 0`);
  return n;
}

const list = (values: readonly string[] | undefined): string[] =>
  (values ?? [])
    .flatMap((v) => v.split(','))
    .map((v) => v.trim())
    .filter((v) => v !== '');

/** The command line as node:util reads it (its types follow the options); what it refuses is a UsageError. */
function readArgv(argv: readonly string[]) {
  try {
    return parseArgs({
      args: [...argv],
      allowPositionals: true,
      strict: true,
      options: {
        help: { type: 'boolean', short: 'h' },
        url: { type: 'string', multiple: true },
        scenario: { type: 'string', multiple: true },
        connections: { type: 'string' },
        'batch-connections': { type: 'string' },
        duration: { type: 'string' },
        warmup: { type: 'string' },
        repeat: { type: 'string' },
        out: { type: 'string' },
        'target-ops': { type: 'string' },
        zones: { type: 'string' },
        'spare-hsms': { type: 'string' },
        'max-utilization': { type: 'string' },
        'plan-scenario': { type: 'string' },
        'per-hsm-ops': { type: 'string' },
        hsms: { type: 'string' },
        'hsm-latency': { type: 'string' },
        'token-objects': { type: 'string' },
        'audit-log': { type: 'boolean' },
        workers: { type: 'string' },
        'hsm-sessions': { type: 'string' },
        'hsm-threads': { type: 'string' },
        'sample-rate': { type: 'string' },
        timeout: { type: 'string' },
        compare: { type: 'string' },
        'auth-token': { type: 'string' },
        'no-ceiling': { type: 'boolean' },
        'ceiling-duration': { type: 'string' },
        'ceiling-connections': { type: 'string' },
        'cpu-prof': { type: 'string' },
        'pki-setup': { type: 'boolean' },
        key: { type: 'string', multiple: true },
        'generator-only': { type: 'boolean' },
        'start-at': { type: 'string' },
        // For the test suite: a tiny sweep that takes seconds.
        quick: { type: 'boolean' },
      },
    });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

type ParsedValues = ReturnType<typeof readArgv>['values'];

/** --target-ops and the flags that shape the plan; undefined without --target-ops. */
function planOptions(v: ParsedValues): PlanOptions | undefined {
  if (v['target-ops'] === undefined) return undefined;
  const plan: PlanOptions = {
    targetOpsPerSec: positiveNumber('--target-ops', v['target-ops']),
    ...(v.zones !== undefined ? { zones: positiveInt('--zones', v.zones) } : {}),
    ...(v['spare-hsms'] !== undefined ? { spareHsms: positiveInt('--spare-hsms', v['spare-hsms'], 0) } : {}),
    ...(v['max-utilization'] !== undefined ? { maxUtilization: positiveNumber('--max-utilization', v['max-utilization']) } : {}),
    ...(v['plan-scenario'] !== undefined ? { scenario: parseScenario(v['plan-scenario']).name } : {}),
    ...(v['per-hsm-ops'] !== undefined ? { perHsmOpsPerSec: positiveNumber('--per-hsm-ops', v['per-hsm-ops']) } : {}),
    ...(v.hsms !== undefined ? { hsms: positiveInt('--hsms', v.hsms) } : {}),
  };
  if (plan.maxUtilization !== undefined && plan.maxUtilization > 1) throw new UsageError('--max-utilization: must be at most 1');
  return plan;
}

/** `merge DIR...`: each DIR holds a --generator-only run's report.json (a report.json path is taken as is). */
function parseMerge(rest: readonly string[], v: ParsedValues, argv: readonly string[]): Command {
  if (rest.length === 0) throw new UsageError('merge: give the output directories (or report.json files) of one or more --generator-only runs');
  const plan = planOptions(v);
  return {
    kind: 'merge',
    paths: [...rest],
    outDir: v.out ?? DEFAULTS.outDir,
    command: ['npm run loadtest --', ...argv].join(' '),
    ...(plan ? { plan } : {}),
  };
}

/** --generator-only loads a deployed service and leaves the plan to merge, which sees all the generators. */
function checkGeneratorOnly(v: ParsedValues, urls: readonly string[], mode: string | undefined): boolean {
  if (v['generator-only'] !== true) return false;
  if (mode !== undefined) throw new UsageError(`--generator-only: not for '${mode}'`);
  if (urls.length === 0) throw new UsageError('--generator-only: give --url, the service every generator loads');
  if (v['target-ops'] !== undefined) throw new UsageError('--generator-only: --target-ops belongs to merge, which sees every generator');
  if (v.compare !== undefined) throw new UsageError('--generator-only: --compare the merged report instead');
  return true;
}

export function parseCommandLine(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): Command {
  const parsed = readArgv(argv);
  const v = parsed.values;
  const [mode, ...rest] = parsed.positionals;
  if (v.help) return { kind: 'help' };
  if (mode === 'compare') {
    if (rest.length !== 2) throw new UsageError('compare: give two report.json files, old then new');
    return { kind: 'compare', oldPath: rest[0]!, newPath: rest[1]! };
  }
  if (mode === 'render') {
    if (rest.length !== 1) throw new UsageError('render: give one report.json');
    return { kind: 'render', path: rest[0]! };
  }
  if (mode === 'merge') return parseMerge(rest, v, argv);
  if (mode !== undefined && mode !== 'hsm') throw new UsageError(`unknown command '${mode}' (hsm, compare, render, merge, or options only)`);
  if (rest.length > 0) throw new UsageError(`unexpected argument '${rest[0]}'`);

  const quick = v.quick === true;
  const scenarios = list(v.scenario);
  for (const s of scenarios) {
    try {
      parseScenario(s);
    } catch (e) {
      if (e instanceof ScenarioError) throw new UsageError(`--scenario ${e.message}`);
      throw e;
    }
  }
  const connections =
    v.connections !== undefined ? list([v.connections]).map((c) => positiveInt('--connections', c)) : quick ? [1, 8] : [...DEFAULTS.connections];
  if (connections.length === 0) throw new UsageError('--connections: give at least one count');
  const batchConnections =
    v['batch-connections'] !== undefined
      ? list([v['batch-connections']]).map((c) => positiveInt('--batch-connections', c))
      : quick
        ? [1, 2]
        : [...DEFAULTS.batchConnections];
  if (batchConnections.length === 0) throw new UsageError('--batch-connections: give at least one count');
  const sampleRate = v['sample-rate'] !== undefined ? positiveNumber('--sample-rate', v['sample-rate']) : DEFAULTS.sampleRate;
  if (sampleRate < 0.01 || sampleRate > 1) throw new UsageError('--sample-rate: must be between 0.01 (1%) and 1');
  const urls = list(v.url);
  for (const u of urls) {
    try {
      const parsedUrl = new URL(u);
      if (parsedUrl.protocol !== 'http:' && parsedUrl.protocol !== 'https:') throw new Error('not http(s)');
    } catch {
      throw new UsageError(`--url: '${u}' is not an http(s) URL`);
    }
  }
  const plan = planOptions(v);
  const generatorOnly = checkGeneratorOnly(v, urls, mode);
  const startAt = v['start-at'] !== undefined ? Date.parse(v['start-at']) : undefined;
  if (startAt !== undefined && !Number.isFinite(startAt))
    throw new UsageError(`--start-at: '${v['start-at']}' is not an ISO 8601 time such as 2026-12-03T23:00:00Z`);
  let hsmLatencyUs: number | undefined;
  if (v['hsm-latency'] !== undefined) {
    try {
      hsmLatencyUs = parseLatency(v['hsm-latency']);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  }
  const authToken = v['auth-token'] ?? env.LOADTEST_AUTH_TOKEN;
  const options: LoadTestOptions = {
    command: ['npm run loadtest --', ...argv].join(' ').replace(/ --$/, ''),
    urls,
    scenarios: (scenarios.length > 0 ? scenarios : [...DEFAULTS.scenarios]).map((s) => parseScenario(s).name),
    connections,
    batchConnections,
    durationSec: v.duration !== undefined ? parseSeconds('--duration', v.duration) : quick ? 1 : DEFAULTS.durationSec,
    warmupSec: v.warmup !== undefined ? parseSeconds('--warmup', v.warmup) : quick ? 0.5 : DEFAULTS.warmupSec,
    ...(v.repeat !== undefined ? { repeat: positiveInt('--repeat', v.repeat) } : {}),
    sampleRate,
    timeoutSec: v.timeout !== undefined ? parseSeconds('--timeout', v.timeout) : DEFAULTS.requestTimeoutSec,
    workers: v.workers !== undefined ? positiveInt('--workers', v.workers) : availableParallelism(),
    ...(v['hsm-sessions'] !== undefined ? { hsmSessions: positiveInt('--hsm-sessions', v['hsm-sessions']) } : {}),
    ...(v['hsm-threads'] !== undefined ? { hsmThreads: positiveInt('--hsm-threads', v['hsm-threads']) } : {}),
    ...(hsmLatencyUs !== undefined ? { hsmLatencyUs } : {}),
    ...(v['token-objects'] !== undefined ? { tokenObjects: positiveInt('--token-objects', v['token-objects']) } : {}),
    ...(v['audit-log'] ? { auditLog: true } : {}),
    ceilings: v['no-ceiling'] !== true,
    ceilingDurationSec:
      v['ceiling-duration'] !== undefined ? parseSeconds('--ceiling-duration', v['ceiling-duration']) : quick ? 1 : DEFAULTS.ceilingDurationSec,
    ceilingConnections:
      v['ceiling-connections'] !== undefined ? positiveInt('--ceiling-connections', v['ceiling-connections']) : quick ? 8 : DEFAULTS.ceilingConnections,
    // In hsm mode --connections sets the direct rate's operations in flight per process.
    directInFlight:
      mode === 'hsm' && v.connections !== undefined
        ? connections
        : quick
          ? [DEFAULTS.directInFlight[DEFAULTS.directInFlight.length - 1]!]
          : [...DEFAULTS.directInFlight],
    directThreadpool: DEFAULTS.directThreadpool,
    ceilingWarmupSec: quick ? 0.3 : 1,
    ...(authToken ? { authToken } : {}),
    ...(v['cpu-prof'] !== undefined ? { cpuProfDir: v['cpu-prof'] } : {}),
    tokenDir: env.LOADTEST_TOKEN_DIR ?? DEFAULTS.tokenDir,
    tokenLabel: DEFAULTS.tokenLabel,
    probeIntervalMs: DEFAULTS.probeIntervalMs,
    ...(plan ? { plan } : {}),
    ...(v['pki-setup'] ? { pkiSetup: true } : {}),
    ...(generatorOnly ? { generatorOnly: true } : {}),
    ...(startAt !== undefined ? { startAt } : {}),
  };
  const outDir = v.out ?? DEFAULTS.outDir;
  if (mode === 'hsm') {
    const keyLabels: Partial<Record<KeySpec, string>> = {};
    for (const k of v.key ?? []) {
      const [spec, label] = [k.slice(0, k.indexOf('=')), k.slice(k.indexOf('=') + 1)];
      if (!k.includes('=') || !isKeySpec(spec) || label === '') throw new UsageError(`--key: '${k}' is not SPEC=LABEL, e.g. RSA_2048=payments-rsa`);
      keyLabels[spec] = label;
    }
    return {
      keyLabels,
      kind: 'hsm',
      options,
      outDir,
      practiceDurationSec: v.duration !== undefined ? options.durationSec : quick ? 0.5 : DEFAULTS.practiceDurationSec,
      practiceInFlight: DEFAULTS.practiceInFlight,
    };
  }
  return { kind: 'run', options, outDir, ...(v.compare !== undefined ? { comparePath: v.compare } : {}) };
}
