/**
 * The load-test engine. It runs a whole test - token, ceilings, the service in each set-up, the
 * sweep, the targets, the plan - and tells the world what happens only through events; it
 * prints nothing. Reporters (report/*) turn the finished LoadTestReport into files, and
 * progress.ts turns events into a live line.
 */
import { EventEmitter } from 'node:events';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { availableParallelism, cpus, loadavg, platform, arch, totalmem } from 'node:os';
import { KEY_SPEC_INFO, type KeySpec } from '../src/crypto/algorithms.js';
import { SOFTHSM_MODULE, type LocalToken } from '../src/dev/softHsm.js';
import { keyLabel } from '../src/hsm/keyLabel.js';
import { DEFAULTS } from './defaults.js';
import { measureDirectRate, measurePractices, type DirectTarget } from './directRate.js';
import { practiceResults } from './practices.js';
import { ensureFillerObjects, keyNameFor, prepareToken, serviceEnvFor } from './harnessToken.js';
import { formatLatency, latencyModule } from './hsmLatency.js';
import { probeMachine, probeNote } from './machineProbe.js';
import { startLocalService, type LocalService } from './localService.js';
import { planCapacity } from './plan.js';
import { fixturesFor } from './pkiFixtures.js';
import { buildTemplates, type KeyUnderTest } from './requests.js';
import { ceilingFor, combinedCeiling, splitVariant, stepsOf, withVariant, type CapacityPlan, type CeilingResult, type LoadTestReport, type MachineFacts, type PracticeResult, type StepResult } from './results.js';
import { formatInt, formatNumber, formatRate } from './format.js';
import { isCeilingScenario, parseScenario, type ScenarioSpec } from './scenarios.js';
import { ServiceClient, pickKey } from './serviceClient.js';
import { ServiceProbe } from './serviceProbe.js';
import { runStep, type StepProgress } from './stepRunner.js';
import { evaluateTargets } from './targets.js';
import { AUDIT_LOG_VARIANT, latencyVariant, tokenObjectsVariant } from './variants.js';

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
}

export interface ExternalHsm {
  readonly modulePath: string;
  readonly tokenLabel: string;
  readonly pin: string;
  readonly keyLabels: Partial<Record<KeySpec, string>>;
}

export type HarnessEvent =
  | { readonly type: 'phase'; readonly text: string }
  | { readonly type: 'step-start'; readonly scenario: string; readonly connections: number; readonly durationSec: number; readonly warmup: boolean; readonly index: number; readonly total: number }
  | { readonly type: 'step-progress'; readonly scenario: string; readonly connections: number; readonly warmup: boolean; readonly progress: StepProgress }
  | { readonly type: 'step-done'; readonly step: StepResult; readonly warmup: boolean }
  | { readonly type: 'ceiling'; readonly ceiling: CeilingResult }
  | { readonly type: 'practice'; readonly practice: PracticeResult }
  | { readonly type: 'bad-signature'; readonly scenario: string; readonly reason: string }
  | { readonly type: 'note'; readonly text: string };

/** A service set-up the scenarios run against. */
interface Variant {
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

interface RunningVariant {
  readonly variant: Variant;
  readonly service?: LocalService;
  readonly urls: string[];
  readonly api: ServiceClient;
  readonly keys: KeyUnderTest[];
}

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
    notes.push(`Plan: per-HSM rate = the direct PKCS#11 rate of this run's token (${formatRate(perHsm)} ops/s); for CloudHSM run \`npm run loadtest -- hsm\` from a client in the cluster's VPC and pass its rate as --per-hsm-ops.`);
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

/** Other work on the machine skews every number: the report says how busy it was. */
function loadNote(before: number[], after: number[]): string {
  const f = (l: number[]): string => l.map((x) => x.toFixed(2)).join(', ');
  return `Load average (1, 5, 15 min) at the start: ${f(before)}; at the end: ${f(after)} (on ${availableParallelism()} CPUs; it counts this run's own threads too, the service's HSM threads among them, so a high figure at the end is mostly the run itself; anything else running competes with the service and the load generator).`;
}

/** Every round's ceiling measurements, until finishCeilings keeps the medians. */
interface CeilingRounds {
  readonly direct: Map<string, Awaited<ReturnType<typeof measureDirectRate>>[]>;
  readonly http: Map<string, StepResult[]>;
}

export class LoadTest extends EventEmitter<{ event: [HarnessEvent] }> {
  private readonly specs: ScenarioSpec[];
  private readonly notes: string[] = [];
  private readonly steps: StepResult[] = [];
  private readonly ceilings: CeilingResult[] = [];
  private readonly repeats: string[] = [];
  private bad = 0;

  constructor(private readonly o: LoadTestOptions) {
    super();
    this.specs = o.scenarios.map(parseScenario);
  }

  private emitEvent(e: HarnessEvent): void {
    this.emit('event', e);
  }

  private phase(text: string): void {
    this.emitEvent({ type: 'phase', text });
  }

  private get local(): boolean {
    return this.o.urls.length === 0;
  }

  private get headers(): Record<string, string> {
    return this.o.authToken ? { authorization: `Bearer ${this.o.authToken}` } : {};
  }

  private sweepOf(spec: ScenarioSpec): readonly number[] {
    const batchOnly = spec.ops.every((o) => o.op.kind === 'batch');
    return batchOnly && this.o.batchConnections ? this.o.batchConnections : this.o.connections;
  }

  private get repeat(): number {
    return Math.max(1, this.o.repeat ?? 1);
  }

  private stepTotal(variants: number): number {
    return this.repeat * variants * this.specs.reduce((a, s) => a + this.sweepOf(s).length, 0);
  }

  async run(): Promise<LoadTestReport> {
    const startedAt = new Date().toISOString();
    const loadBefore = loadavg();
    this.phase('probing how steady the machine is');
    const probeStart = await probeMachine(DEFAULTS.machineProbeSamples);
    const specs = [...new Set(this.specs.map((s) => s.keySpec))];
    let token: LocalToken | undefined;
    let keyNames = new Map<KeySpec, string>(specs.map((s) => [s, keyNameFor(s)]));
    const variants: Variant[] = [];

    if (this.local) {
      this.phase(`preparing the harness token in ${this.o.tokenDir}`);
      const prepared = await prepareToken(this.o.tokenDir, this.o.tokenLabel, specs);
      token = prepared.token;
      keyNames = prepared.keys;
      const env = { SOFTHSM2_CONF: token.conf };
      variants.push({ token, modulePath: SOFTHSM_MODULE, env, ...this.sessionSettings(), latencyUs: 0 });
      if (this.o.tokenObjects !== undefined && this.o.tokenObjects > 0) {
        const n = this.o.tokenObjects;
        this.phase(`preparing a token with ${formatInt(n)} other objects`);
        const crowded = (await prepareToken(`${this.o.tokenDir}-objects-${n}`, `${this.o.tokenLabel}-objects`, specs)).token;
        await ensureFillerObjects(crowded, n, (done, total) => this.phase(`creating other objects: ${done}/${total}`));
        variants.push({ label: tokenObjectsVariant(n), token: crowded, modulePath: SOFTHSM_MODULE, env: { SOFTHSM2_CONF: crowded.conf }, ...this.sessionSettings(), latencyUs: 0 });
      }
      if (this.o.auditLog) {
        // The plain set-up plus AUDIT_LOG: the two differ in nothing else, and the rounds interleave them.
        const auditLog = resolve(`${this.o.tokenDir}-audit`, 'audit.log');
        variants.push({ label: AUDIT_LOG_VARIANT, token, modulePath: SOFTHSM_MODULE, env: { ...env, AUDIT_LOG: auditLog }, ...this.sessionSettings(), latencyUs: 0, auditLog });
      }
      if (this.o.hsmLatencyUs !== undefined && this.o.hsmLatencyUs > 0) {
        const shim = latencyModule(SOFTHSM_MODULE, this.o.hsmLatencyUs);
        variants.push({
          label: latencyVariant(this.o.hsmLatencyUs),
          token,
          modulePath: shim.modulePath,
          env: { ...env, ...shim.env },
          sessions: this.o.hsmSessions ?? DEFAULTS.latencyHsmSessions,
          threads: this.o.hsmThreads ?? DEFAULTS.latencyHsmThreads,
          latencyUs: this.o.hsmLatencyUs,
        });
      }
    } else {
      if (this.o.hsmLatencyUs) this.note('--hsm-latency applies only when the harness starts the service; ignored with --url.');
      if (this.o.tokenObjects) this.note('--token-objects applies only when the harness starts the service; ignored with --url.');
      if (this.o.auditLog) this.note('--audit-log applies only when the harness starts the service; ignored with --url.');
      this.note('Remote target: ceilings and worker RSS need the service and HSM on this machine, so they are not measured.');
      variants.push({ modulePath: 'remote', env: {}, latencyUs: 0 });
    }

    await this.runRounds(variants, keyNames, this.stepTotal(variants.length), this.local && this.o.ceilings ? token : undefined);
    this.phase('probing how steady the machine is');
    const probe = { start: probeStart, end: await probeMachine(DEFAULTS.machineProbeSamples) };

    const report: LoadTestReport = {
      version: 1,
      startedAt,
      finishedAt: new Date().toISOString(),
      command: this.o.command,
      machine: { ...this.machine(), probe },
      target: { urls: this.local ? [] : [...this.o.urls], local: this.local },
      ceilings: this.ceilings,
      steps: this.steps,
      notes: [],
    };
    if (this.o.plan) {
      const { plan, notes } = planFromReport(report, this.o.plan);
      if (plan) report.plan = plan;
      this.notes.push(...notes);
    }
    report.targets = evaluateTargets(report);
    if (this.repeats.length > 0) {
      this.notes.push(`Each step was measured ${this.repeat} times in rounds and the median kept (by signatures/s): ${this.repeats.join('; ')}.`);
    }
    report.notes = [...this.standardNotes(variants), loadNote(loadBefore, loadavg()), probeNote(probe.start, probe.end), ...this.notes];
    return report;
  }

  /** How the direct PKCS#11 rate is measured, for the ceilings and for `loadtest hsm`. */
  private directRateOptions(): Parameters<typeof measureDirectRate>[1] {
    return {
      processes: this.o.workers,
      inFlight: this.o.directInFlight,
      threadpool: this.o.directThreadpool,
      durationSec: this.o.ceilingDurationSec,
      warmupSec: this.o.ceilingWarmupSec ?? 1,
    };
  }

  private sessionSettings(): { sessions?: number; threads?: number } {
    return {
      ...(this.o.hsmSessions !== undefined ? { sessions: this.o.hsmSessions } : {}),
      ...(this.o.hsmThreads !== undefined ? { threads: this.o.hsmThreads } : {}),
    };
  }

  /**
   * What the audit set-up wrote in one round: every line must be one whole JSON record (the workers
   * append to one file). The count is every sign answered, warm-up included, so it exceeds the steps' total.
   */
  private checkAuditLog(file: string, round: number): void {
    let text = '';
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      this.note(`Audit set-up, round ${round + 1}: no audit log at ${file} (${(e as NodeJS.ErrnoException).code ?? 'error'}).`);
      return;
    }
    const lines = text.split('\n').filter((l) => l !== '');
    let broken = 0;
    for (const l of lines) {
      try {
        JSON.parse(l);
      } catch {
        broken++;
      }
    }
    this.note(
      `Audit set-up, round ${round + 1}: ${formatInt(lines.length)} records (${formatNumber(text.length / 2 ** 20, 1)} MiB) in ${file}` +
        (broken > 0 ? `; ${formatInt(broken)} line(s) are NOT whole JSON records.` : ', every line a whole JSON record.'),
    );
    rmSync(file, { force: true });
  }

  private note(text: string): void {
    this.notes.push(text);
    this.emitEvent({ type: 'note', text });
  }

  private machine(): MachineFacts {
    const latency = this.o.hsmLatencyUs ?? 0;
    return {
      cpus: availableParallelism(),
      cpuModel: cpus()[0]?.model.trim() ?? 'unknown',
      totalMemBytes: totalmem(),
      node: process.version,
      platform: `${platform()} ${arch()}`,
      hsmModule: this.local ? `softhsm2 (${SOFTHSM_MODULE})${latency > 0 ? ` and the p11shim latency module` : ''}` : 'remote service',
      workers: this.local ? this.o.workers : 0,
      sessionsPerWorker: this.o.hsmSessions ?? 16,
      hsmLatencyUs: this.local ? latency : 0,
    };
  }

  private standardNotes(variants: readonly Variant[]): string[] {
    const n: string[] = [
      'Throughput counts only 2xx answers whose bodies had the expected shape; req/s is of those. Errors are counted by status and code, timeouts and connection errors apart.',
      `A sample of good answers (${(this.o.sampleRate * 100).toFixed(1)}%, every ${Math.max(1, Math.floor(1 / this.o.sampleRate))}th; every verify answer) is verified with node:crypto against the key's public key from GET /v1/keys.`,
    ];
    if (this.local) {
      n.push(
        `The load generator (autocannon) runs in the harness process on the same ${availableParallelism()} cores as the service, and so does the bare-HTTP ceiling, so the efficiency compares like with like; on a bigger client the service would do better than shown.`,
        'Pool in use/waiting and breaker come from /readyz, sampled on fresh connections so the samples spread over the workers; each sample describes one worker and the table shows the largest seen. RSS is read from /proc for every worker process.',
        `The direct rate uses pkcs11js's async path (C_SignInit, then C_SignAsync on the libuv pool with UV_THREADPOOL_SIZE=${this.o.directThreadpool}) in ${this.o.workers} process(es), the best of ${this.o.directInFlight.join(' and ')} operations in flight per process; the service instead runs every PKCS#11 call on worker threads of its own (HSM_THREADS).`,
      );
      for (const v of variants) {
        const settings = `HSM_SESSIONS=${v.sessions ?? 'default (16)'}, HSM_THREADS=${v.threads ?? 'default (min(sessions, 4))'}`;
        n.push(
          `Service set-up ${v.label ?? '(plain)'}: WORKERS=${this.o.workers}, ${settings}${v.latencyUs > 0 ? `, ${formatLatency(v.latencyUs)} added before every networked PKCS#11 call by the p11shim module` : ''}` +
            `${v.auditLog ? `, AUDIT_LOG=${v.auditLog} (a new file each round)` : ''}.`,
        );
      }
    }
    if (this.bad > 0) n.unshift(`FAILED: ${this.bad} sampled signature(s) did not verify. Throughput with wrong signatures is worthless.`);
    return n;
  }

  /**
   * One round of the ceilings: the direct PKCS#11 rate of each key and algorithm, then the bare-HTTP
   * rate of each scenario. The rounds interleave with the service's (see runRounds); finishCeilings
   * keeps the medians.
   */
  private async measureCeilingRound(token: LocalToken, keyNames: Map<KeySpec, string>, rounds: CeilingRounds): Promise<void> {
    const specs = this.specs.filter(isCeilingScenario);
    if (specs.length === 0) return;
    const measured = new Set<string>();
    for (const spec of specs) {
      const id = `${spec.keySpec}:${spec.algorithm}`;
      if (measured.has(id)) continue;
      measured.add(id);
      this.phase(`ceiling: direct PKCS#11 ${id}, ${this.o.workers} process(es)`);
      const target: DirectTarget = {
        modulePath: SOFTHSM_MODULE,
        env: { SOFTHSM2_CONF: token.conf },
        tokenLabel: token.label,
        pin: token.pin,
        keyLabel: keyLabel(keyNames.get(spec.keySpec)!, 1),
        keySpec: spec.keySpec,
        algorithm: spec.algorithm,
      };
      const x = await measureDirectRate(target, this.directRateOptions());
      rounds.direct.set(id, [...(rounds.direct.get(id) ?? []), x]);
      this.note(
        `Direct PKCS#11 ${id}: ${x.tried.map((t) => `${formatRate(t.opsPerSec)} ops/s with ${t.inFlight} in flight (${formatNumber(t.cpuMsPerOp, 3)} ms CPU per signature)`).join(', ')} (${x.processes} process(es)).`,
      );
    }

    this.phase(`ceiling: bare HTTP (Express, ${this.o.workers} worker(s))`);
    const sizes = Object.fromEntries([...keyNames].map(([spec, name]) => [name, typicalSignatureBytes(spec)]));
    const server = await startLocalService({
      script: 'loadtest/httpCeilingServer.ts',
      env: { CEILING_SIGNATURE_BYTES: JSON.stringify(sizes) },
      workers: this.o.workers,
      readyPath: '/healthz',
    });
    try {
      for (const spec of specs) {
        const key: KeyUnderTest = { name: keyNames.get(spec.keySpec)!, keySpec: spec.keySpec, publicKeys: new Map() };
        const templates = await buildTemplates(spec, key, DEFAULTS.bodiesPerScenario);
        const common = { scenario: spec.name, urls: [server.url], templates, sampleRate: 0, timeoutSec: this.o.timeoutSec, connections: this.o.ceilingConnections };
        await runStep({ ...common, durationSec: this.o.ceilingWarmupSec ?? 1 });
        const probe = new ServiceProbe({ pids: () => server.workerPids(), intervalMs: this.o.probeIntervalMs });
        const step = await runStep({ ...common, durationSec: this.o.ceilingDurationSec, probe });
        rounds.http.set(spec.name, [...(rounds.http.get(spec.name) ?? []), step]);
      }
    } finally {
      await server.stop();
    }
  }

  /** The ceilings from every round's measurements: the median of each. */
  private finishCeilings(rounds: CeilingRounds): void {
    for (const spec of this.specs.filter(isCeilingScenario)) {
      const httpRounds = rounds.http.get(spec.name) ?? [];
      const directRounds = rounds.direct.get(`${spec.keySpec}:${spec.algorithm}`) ?? [];
      if (httpRounds.length === 0 || directRounds.length === 0) continue;
      const http = medianStep(httpRounds)!;
      const cpu = http.cpu;
      this.note(
        `Bare HTTP ${spec.name}: ${httpRounds.map((h) => formatRate(h.requestsPerSec)).join(', ')} req/s${httpRounds.length > 1 ? ', kept the median' : ''}` +
          (cpu?.serviceSec !== undefined && http.okRequests > 0
            ? `; ${formatNumber((1000 * cpu.serviceSec) / http.okRequests, 3)} ms CPU per request in the server, ${formatNumber((1000 * cpu.clientSec) / http.okRequests, 3)} ms in the load generator.`
            : '.'),
      );
      const d = [...directRounds].sort((a, b) => a.opsPerSec - b.opsPerSec)[Math.floor((directRounds.length - 1) / 2)]!;
      const items = spec.ops[0]!.op.items;
      // A batch request pays HTTP once for `items` signatures: its HTTP ceiling in signatures is req/s × items.
      const ceiling: CeilingResult = {
        scenario: spec.name,
        directOpsPerSec: d.opsPerSec,
        directProcesses: d.processes,
        directInFlight: d.inFlight,
        httpReqPerSec: http.requestsPerSec,
        combinedOpsPerSec: combinedCeiling(d.opsPerSec, http.requestsPerSec * items),
      };
      if (items > 1) this.note(`Ceiling of ${spec.name}: bare HTTP ${formatRate(http.requestsPerSec)} req/s = ${formatRate(http.requestsPerSec * items)} signatures/s, which the combined ceiling uses.`);
      if (Object.keys(http.errors).length > 0) this.note(`Bare-HTTP ceiling of ${spec.name} had errors: ${JSON.stringify(http.errors)}.`);
      this.ceilings.push(ceiling);
      this.emitEvent({ type: 'ceiling', ceiling });
    }
  }

  /** Starts the service in one set-up (or connects to the remote one) and reads its keys. */
  private async startVariant(v: Variant): Promise<RunningVariant> {
    let service: LocalService | undefined;
    let urls = [...this.o.urls];
    if (this.local) {
      if (v.auditLog) {
        // A new file each round: what it holds is then this round's records only (checkAuditLog).
        mkdirSync(dirname(v.auditLog), { recursive: true });
        rmSync(v.auditLog, { force: true });
      }
      this.phase(`starting the service${v.label ? ` (${v.label})` : ''}: ${this.o.workers} worker(s)`);
      service = await startLocalService({
        env: {
          ...serviceEnvFor(v.token!),
          ...v.env,
          HSM_MODULE: v.modulePath,
          ...(v.sessions !== undefined ? { HSM_SESSIONS: String(v.sessions) } : {}),
          ...(v.threads !== undefined ? { HSM_THREADS: String(v.threads) } : {}),
        },
        workers: this.o.workers,
        ...(this.o.cpuProfDir ? { cpuProfDir: this.o.cpuProfDir } : {}),
      });
      urls = [service.url];
    }
    try {
      const api = new ServiceClient(urls[0]!, this.headers);
      return { variant: v, urls, api, keys: await api.keys(), ...(service ? { service } : {}) };
    } catch (e) {
      await service?.stop();
      throw e;
    }
  }

  /**
   * Every step, `repeat` times, in rounds: each round measures the ceilings (local runs), then
   * starts each set-up in turn, runs its whole sweep and stops it. The host's speed drifts over
   * minutes (the machine probe shows it), so the ceilings and the set-ups a target compares meet
   * the same stretches of it instead of following one another; the medians are kept.
   *
   * One set-up at a time: running them side by side would let one set-up's background work leak
   * into the others' numbers: a crowded token's periodic key rescan, for one, keeps a core busy.
   */
  private async runRounds(variants: readonly Variant[], keyNames: Map<KeySpec, string>, total: number, ceilingToken: LocalToken | undefined): Promise<void> {
    let index = 0;
    // Keyed by position, not by name: a scenario given twice keeps its own steps.
    const results = new Map<string, StepResult[]>();
    const keyOf = (variant: number, spec: number, connections: number): string => `${variant}/${spec}/${connections}`;
    const ceilingRounds: CeilingRounds = { direct: new Map(), http: new Map() };
    for (let round = 0; round < this.repeat; round++) {
      if (ceilingToken) await this.measureCeilingRound(ceilingToken, keyNames, ceilingRounds);
      for (const [vi, v] of variants.entries()) {
        const r = await this.startVariant(v);
        try {
          for (const [si, spec] of this.specs.entries()) {
            const sweep = this.sweepOf(spec);
            const p = await this.prepareScenario(spec, r, keyNames, sweep);
            for (const connections of sweep) {
              index++;
              this.emitEvent({ type: 'step-start', scenario: p.scenario, connections, durationSec: this.o.durationSec, warmup: false, index, total });
              const step = await runStep({
                ...p.common,
                scenario: p.scenario,
                connections,
                durationSec: this.o.durationSec,
                probe: p.probe(),
                onProgress: (progress) => this.emitEvent({ type: 'step-progress', scenario: p.scenario, connections, warmup: false, progress }),
              });
              const key = keyOf(vi, si, connections);
              results.set(key, [...(results.get(key) ?? []), step]);
              this.emitEvent({ type: 'step-done', step, warmup: false });
            }
          }
        } finally {
          await r.service?.stop();
        }
        if (v.auditLog) this.checkAuditLog(v.auditLog, round);
      }
    }
    if (ceilingToken) this.finishCeilings(ceilingRounds);
    for (const [vi, v] of variants.entries()) {
      for (const [si, spec] of this.specs.entries()) {
        const scenario = withVariant(spec.name, v.label);
        for (const connections of this.sweepOf(spec)) {
          const all = results.get(keyOf(vi, si, connections)) ?? [];
          const kept = medianStep(all);
          if (!kept) continue;
          // A bad signature in any repeat must not vanish with the median.
          const bad = all.reduce((a, x) => a + x.verified.bad, 0);
          this.steps.push(bad > kept.verified.bad ? { ...kept, verified: { ...kept.verified, bad } } : kept);
          if (all.length > 1) {
            this.repeats.push(`${scenario} @ ${connections}: ${all.map((x) => formatRate(x.signaturesPerSec)).join(', ')} sig/s, kept ${formatRate(kept.signaturesPerSec)}`);
          }
        }
      }
    }
  }

  /** Fixtures, request bodies and a warm-up of one scenario on one running set-up. */
  private async prepareScenario(spec: ScenarioSpec, r: RunningVariant, keyNames: Map<KeySpec, string>, sweep: readonly number[]) {
    const scenario = withVariant(spec.name, r.variant.label);
    const key = pickKey(r.keys, spec.keySpec, keyNames.get(spec.keySpec));
    if (!key) throw new Error(`${spec.name}: the service has no ${spec.keySpec} key (GET /v1/keys)`);
    const fixtures = await fixturesFor(spec, key, r.api, { mayAttachCa: this.local || this.o.pkiSetup === true });
    const templates = await buildTemplates(spec, key, DEFAULTS.bodiesPerScenario, fixtures);
    const readyzUrl = `${r.urls[0]!.replace(/\/+$/, '')}/readyz`;
    const service = r.service;
    const probe = (): ServiceProbe =>
      new ServiceProbe({
        readyzUrl,
        headers: this.headers,
        intervalMs: this.o.probeIntervalMs,
        ...(service ? { pids: () => service.workerPids() } : {}),
      });
    const common = {
      urls: r.urls,
      templates,
      sampleRate: this.o.sampleRate,
      timeoutSec: this.o.timeoutSec,
      ...(Object.keys(this.headers).length ? { headers: this.headers } : {}),
      onBadSignature: (reason: string) => {
        this.bad++;
        this.emitEvent({ type: 'bad-signature', scenario, reason });
      },
    };
    if (this.o.warmupSec > 0) {
      const connections = Math.min(Math.max(...sweep), 64);
      this.emitEvent({ type: 'step-start', scenario, connections, durationSec: this.o.warmupSec, warmup: true, index: 0, total: 0 });
      const warm = await runStep({
        ...common,
        scenario,
        connections,
        durationSec: this.o.warmupSec,
        onProgress: (progress) => this.emitEvent({ type: 'step-progress', scenario, connections, warmup: true, progress }),
      });
      this.emitEvent({ type: 'step-done', step: warm, warmup: true });
    }
    return { scenario, common, probe };
  }

  /**
   * `loadtest hsm`: no HTTP at all. On the token (through the latency module if asked), for each
   * key spec of the scenarios: the four practices in one process, then the direct rate with as
   * many processes as the service would have workers.
   */
  async runHsm(o: { practiceDurationSec: number; practiceInFlight: number }): Promise<LoadTestReport> {
    const startedAt = new Date().toISOString();
    const pairs = [...new Map(this.specs.map((s) => [`${s.keySpec}:${s.algorithm}`, s])).values()];
    const ext = this.o.externalHsm;
    let modulePath: string;
    let env: Record<string, string> = {};
    let tokenLabel: string;
    let pin: string;
    const labels = new Map<KeySpec, string>();
    if (ext) {
      ({ modulePath, tokenLabel, pin } = ext);
      for (const s of pairs) {
        const label = ext.keyLabels[s.keySpec];
        if (!label) throw new Error(`no key label for ${s.keySpec}: pass --key ${s.keySpec}=<CKA_LABEL of the private key>`);
        labels.set(s.keySpec, label);
      }
    } else {
      this.phase(`preparing the harness token in ${this.o.tokenDir}`);
      const { token, keys } = await prepareToken(this.o.tokenDir, this.o.tokenLabel, pairs.map((s) => s.keySpec));
      ({ modulePath, label: tokenLabel, pin } = token);
      env = { SOFTHSM2_CONF: token.conf };
      for (const [spec, name] of keys) labels.set(spec, keyLabel(name, 1));
    }
    if (this.o.hsmLatencyUs) {
      const shim = latencyModule(modulePath, this.o.hsmLatencyUs);
      modulePath = shim.modulePath;
      env = { ...env, ...shim.env };
    }
    const loadBefore = loadavg();
    const practices: PracticeResult[] = [];
    for (const s of pairs) {
      const target: DirectTarget = { modulePath, env, tokenLabel, pin, keyLabel: labels.get(s.keySpec)!, keySpec: s.keySpec, algorithm: s.algorithm };
      this.phase(`practices: ${s.keySpec} ${s.algorithm}, ${o.practiceDurationSec} s per measurement`);
      const m = await measurePractices(target, { inFlight: o.practiceInFlight, threadpool: this.o.directThreadpool, durationSec: o.practiceDurationSec });
      for (const p of practiceResults(m, `${s.keySpec} ${s.algorithm}`, o.practiceInFlight)) {
        practices.push(p);
        this.emitEvent({ type: 'practice', practice: p });
      }
      this.phase(`direct rate: ${s.keySpec} ${s.algorithm}, ${this.o.workers} process(es)`);
      const d = await measureDirectRate(target, this.directRateOptions());
      const ceiling: CeilingResult = {
        scenario: `sign:${s.keySpec}:${s.algorithm}`,
        directOpsPerSec: d.opsPerSec,
        directProcesses: d.processes,
        directInFlight: d.inFlight,
        httpReqPerSec: 0,
        combinedOpsPerSec: 0,
      };
      this.ceilings.push(ceiling);
      this.emitEvent({ type: 'ceiling', ceiling });
    }
    const latency = this.o.hsmLatencyUs ?? 0;
    return {
      version: 1,
      startedAt,
      finishedAt: new Date().toISOString(),
      command: this.o.command,
      machine: {
        ...this.machine(),
        hsmModule: `${ext ? ext.modulePath : `softhsm2 (${SOFTHSM_MODULE})`}${latency > 0 ? ' behind the p11shim latency module' : ''}`,
        hsmLatencyUs: latency,
      },
      target: { urls: [], local: true },
      ceilings: this.ceilings,
      steps: [],
      practices,
      notes: [
        'Direct PKCS#11 only, no HTTP: the ceilings table shows the direct rate; its HTTP columns are 0.',
        `Practices run in one process: the good side of "operations in flight" keeps ${o.practiceInFlight} C_SignAsync outstanding (UV_THREADPOOL_SIZE=${this.o.directThreadpool}); every other measurement is a synchronous loop, one operation at a time, so only the practice differs. The ratio is good ÷ bad.`,
        ...(latency > 0
          ? [
              `${formatLatency(latency)} was added before every networked PKCS#11 call (p11shim), as a networked HSM would.`,
              'With latency the "in flight" side stays near 1 / latency per process: pkcs11js has no async C_SignInit, so each one blocks the event loop for a round trip. That is why the service runs every PKCS#11 call, C_SignInit included, on threads of its own.',
            ]
          : []),
        loadNote(loadBefore, loadavg()),
        ...this.notes,
      ],
    };
  }

  get badSignatures(): number {
    return this.bad;
  }
}
