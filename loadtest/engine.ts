/**
 * The load-test engine. It runs a whole test - token, ceilings, the service in each set-up, the
 * sweep, the targets, the plan - and tells the world what happens only through events; it
 * prints nothing. Reporters (report/*) turn the finished LoadTestReport into files, and
 * progress.ts turns events into a live line. The set-ups are built and started in setups.ts,
 * the ceilings measured in ceilings.ts; the arithmetic on results is in analysis.ts and the
 * report's sentences in notes.ts.
 */
import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { availableParallelism, cpus, loadavg, platform, arch, totalmem } from 'node:os';
import type { KeySpec } from '../src/crypto/algorithms.js';
import type { LocalToken } from '../src/dev/softHsm.js';
import { ceilingFrom, medianStep, planFromReport } from './analysis.js';
import { directRateOptions, finishCeilings, measureCeilingRound, type CeilingRounds } from './ceilings.js';
import { DEFAULTS } from './defaults.js';
import { measureDirectRate, measurePractices, type DirectTarget } from './directRate.js';
import { formatNumber, formatRate } from './format.js';
import { probeMachine, probeNote } from './machineProbe.js';
import {
  directHsmModule,
  directRateNote,
  generatorOnlyNote,
  hsmOnlyNotes,
  loadNote,
  repeatsNote,
  serviceHsmModule,
  serviceHsmSettings,
  standardNotes,
} from './notes.js';
import type { HarnessEvent, LoadTestOptions, RunContext, Variant } from './options.js';
import { fixturesFor } from './pkiFixtures.js';
import { practiceResults } from './practices.js';
import { buildTemplates } from './requests.js';
import { withVariant, type CeilingResult, type LoadTestReport, type MachineFacts, type PracticeResult, type StepResult } from './results.js';
import { parseScenario, type ScenarioSpec } from './scenarios.js';
import { pickKey } from './serviceClient.js';
import { ServiceProbe } from './serviceProbe.js';
import { checkAuditLog, directTargetFor, prepareVariants, startVariant, type RunningVariant } from './setups.js';
import { runStep } from './stepRunner.js';
import { evaluateTargets } from './targets.js';

export class LoadTest extends EventEmitter<{ event: [HarnessEvent] }> {
  private readonly specs: ScenarioSpec[];
  private readonly notes: string[] = [];
  private readonly steps: StepResult[] = [];
  private readonly ceilings: CeilingResult[] = [];
  private readonly repeats: string[] = [];
  private bad = 0;
  private waitedForStart = false;

  private readonly ctx: RunContext;

  constructor(private readonly o: LoadTestOptions) {
    super();
    this.specs = o.scenarios.map(parseScenario);
    this.ctx = {
      o,
      specs: this.specs,
      local: this.local,
      headers: this.headers,
      phase: (text) => this.phase(text),
      note: (text) => this.note(text),
      addCeiling: (ceiling) => this.addCeiling(ceiling),
    };
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
    const { token, keyNames, variants } = await prepareVariants(this.ctx, specs);

    await this.runRounds(variants, keyNames, this.stepTotal(variants.length), this.local && this.o.ceilings ? token : undefined);
    this.phase('probing how steady the machine is');
    const probe = { start: probeStart, end: await probeMachine(DEFAULTS.machineProbeSamples) };

    const report = this.report(startedAt, { ...this.machine(), probe }, { urls: this.local ? [] : [...this.o.urls], local: this.local }, this.steps);
    if (this.o.plan) {
      const { plan, notes } = planFromReport(report, this.o.plan);
      if (plan) report.plan = plan;
      this.notes.push(...notes);
    }
    report.targets = evaluateTargets(report);
    if (this.o.generatorOnly) {
      report.generatorOnly = true;
      this.notes.push(generatorOnlyNote);
    }
    if (this.repeats.length > 0) this.notes.push(repeatsNote(this.repeat, this.repeats));
    report.notes = [
      ...standardNotes(this.o, this.local, variants, this.bad),
      loadNote(loadBefore, loadavg()),
      probeNote(probe.start, probe.end),
      ...this.notes,
    ];
    return report;
  }

  /** The report's frame, the same for a service run and `loadtest hsm`; the caller adds the plan, targets and notes. */
  private report(
    startedAt: string,
    machine: MachineFacts,
    target: LoadTestReport['target'],
    steps: StepResult[],
    practices?: PracticeResult[],
  ): LoadTestReport {
    return {
      version: 1,
      startedAt,
      finishedAt: new Date().toISOString(),
      command: this.o.command,
      machine,
      target,
      ceilings: this.ceilings,
      steps,
      ...(practices ? { practices } : {}),
      notes: [],
    };
  }

  private addCeiling(ceiling: CeilingResult): void {
    this.ceilings.push(ceiling);
    this.emitEvent({ type: 'ceiling', ceiling });
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
      hsmModule: this.local ? serviceHsmModule(latency) : 'remote service',
      workers: this.local ? this.o.workers : 0,
      // The plain set-up's sessions: the service's own default unless given.
      sessionsPerWorker: serviceHsmSettings(this.o.hsmSessions).sessions,
      hsmLatencyUs: this.local ? latency : 0,
    };
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
      if (ceilingToken) await measureCeilingRound(this.ctx, ceilingToken, keyNames, ceilingRounds);
      for (const [vi, v] of variants.entries()) {
        const r = await startVariant(this.ctx, v);
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
                ...(this.o.generatorOnly ? { histogram: true } : {}),
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
        if (v.auditLog) checkAuditLog(this.ctx, v.auditLog, round);
      }
    }
    if (ceilingToken) finishCeilings(this.ctx, ceilingRounds);
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
            this.repeats.push(
              `${scenario} @ ${connections}: ${all.map((x) => formatRate(x.signaturesPerSec)).join(', ')} sig/s, kept ${formatRate(kept.signaturesPerSec)}`,
            );
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
    await this.waitForStart();
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

  /** --start-at, once, before the first warm-up: generators started apart then load together. */
  private async waitForStart(): Promise<void> {
    if (this.o.startAt === undefined || this.waitedForStart) return;
    this.waitedForStart = true;
    const late = Date.now() - this.o.startAt;
    if (late > 0) {
      this.note(`--start-at ${new Date(this.o.startAt).toISOString()} had passed ${formatNumber(late / 1000, 1)} s before this generator was ready to load.`);
      return;
    }
    this.phase(`waiting until ${new Date(this.o.startAt).toISOString()} (--start-at)`);
    await sleep(-late);
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
    const { labels, ...where } = await directTargetFor(this.ctx, pairs);
    const loadBefore = loadavg();
    const practices: PracticeResult[] = [];
    for (const s of pairs) {
      const target: DirectTarget = { ...where, keyLabel: labels.get(s.keySpec)!, keySpec: s.keySpec, algorithm: s.algorithm };
      this.phase(`practices: ${s.keySpec} ${s.algorithm}, ${o.practiceDurationSec} s per measurement`);
      const m = await measurePractices(target, { inFlight: o.practiceInFlight, threadpool: this.o.directThreadpool, durationSec: o.practiceDurationSec });
      for (const p of practiceResults(m, `${s.keySpec} ${s.algorithm}`, o.practiceInFlight)) {
        practices.push(p);
        this.emitEvent({ type: 'practice', practice: p });
      }
      this.phase(`direct rate: ${s.keySpec} ${s.algorithm}, ${this.o.workers} process(es)`);
      const d = await measureDirectRate(target, directRateOptions(this.o));
      this.note(directRateNote(`${s.keySpec}:${s.algorithm}`, d));
      this.addCeiling(ceilingFrom(`sign:${s.keySpec}:${s.algorithm}`, d));
    }
    const latency = this.o.hsmLatencyUs ?? 0;
    const report = this.report(
      startedAt,
      { ...this.machine(), hsmModule: directHsmModule(latency, ext?.modulePath), hsmLatencyUs: latency },
      { urls: [], local: true },
      [],
      practices,
    );
    report.notes = [...hsmOnlyNotes(latency, o.practiceInFlight, this.o.directThreadpool), loadNote(loadBefore, loadavg()), ...this.notes];
    return report;
  }

  get badSignatures(): number {
    return this.bad;
  }
}
