/**
 * The report as a document model: sections of facts, paragraphs, lists and tables of
 * already-formatted strings. markdown.ts and html.ts render the same model, so the two reports
 * can never disagree on a number.
 */
import { ceilingFor, scenariosOf, stepsOf, type CapacityPlan, type LoadTestReport, type StepResult } from '../results.js';
import {
  NOT_AVAILABLE,
  formatInt,
  formatMs,
  formatNumber,
  formatPercent,
  formatTargetPercent,
  formatRate,
  formatRatio,
  formatSignedPercent,
  probeSummary,
} from '../format.js';
import { STEP_HEADERS, stepRow } from './stepTable.js';

export type Align = 'left' | 'right';

export interface Table {
  caption?: string;
  headers: string[];
  align: Align[];
  rows: string[][];
}

export interface Fact {
  label: string;
  value: string;
  /** Literal text such as a command line: rendered as code. */
  code?: boolean;
}

export type Block =
  | { kind: 'facts'; facts: Fact[] }
  | { kind: 'paragraph'; text: string }
  | { kind: 'warning'; text: string }
  | { kind: 'list'; ordered: boolean; items: string[] }
  | { kind: 'table'; table: Table }
  /** Only the HTML report can draw; Markdown skips this block. */
  | { kind: 'charts'; scenario: string };

export interface Section {
  id: string;
  title: string;
  /** Shown after the title as literal text (scenario names may hold anything). */
  code?: string;
  blocks: Block[];
}

export interface ReportModel {
  title: string;
  sections: Section[];
}

function durationBetween(startIso: string, endIso: string): string {
  const ms = Date.parse(endIso) - Date.parse(startIso);
  if (!Number.isFinite(ms) || ms < 0) return NOT_AVAILABLE;
  const s = Math.round(ms / 1000);
  const m = Math.floor(s / 60);
  return m > 0 ? `${m} min ${s % 60} s` : `${s} s`;
}

const slug = (s: string): string =>
  s
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-|-$/g, '') || 'x';

function headerSection(r: LoadTestReport): Section {
  const m = r.machine;
  const facts: Fact[] = [
    { label: 'Started', value: r.startedAt },
    { label: 'Finished', value: `${r.finishedAt} (${durationBetween(r.startedAt, r.finishedAt)})` },
    { label: 'Command', value: r.command, code: true },
    { label: 'Target', value: `${r.target.urls.join(', ') || NOT_AVAILABLE} (${r.target.local ? 'local, started by the harness' : 'remote'})` },
    { label: 'CPU', value: `${formatInt(m.cpus)} × ${m.cpuModel}` },
    { label: 'Memory', value: `${formatNumber(m.totalMemBytes / 1024 ** 3, 1)} GiB` },
    { label: 'Node', value: m.node },
    { label: 'Platform', value: m.platform },
    { label: 'HSM module', value: m.hsmModule },
    { label: 'Workers × sessions', value: `${formatInt(m.workers)} × ${formatInt(m.sessionsPerWorker)}` },
    { label: 'Simulated HSM latency', value: m.hsmLatencyUs > 0 ? `${formatInt(m.hsmLatencyUs)} µs` : 'none' },
    ...(m.probe ? [{ label: 'Machine steadiness', value: `start: ${probeSummary(m.probe.start)}; end: ${probeSummary(m.probe.end)}` }] : []),
  ];
  return { id: 'run', title: 'Run', blocks: [{ kind: 'facts', facts }] };
}

function scenarioSection(r: LoadTestReport, scenario: string, index: number): Section {
  const steps = stepsOf(r.steps, scenario);
  const blocks: Block[] = [];
  const ceiling = ceilingFor(r.ceilings, scenario);
  if (ceiling) {
    blocks.push({
      kind: 'paragraph',
      text:
        `Ceiling (${ceiling.scenario}): ${formatRate(ceiling.combinedOpsPerSec)} ops/s combined = ` +
        `${formatRate(ceiling.directOpsPerSec)} ops/s direct PKCS#11 with ${formatRate(ceiling.httpReqPerSec)} req/s of bare HTTP.`,
    });
  }
  const bad = steps.reduce((a, s) => a + s.verified.bad, 0);
  if (bad > 0) {
    blocks.push({ kind: 'warning', text: `${formatInt(bad)} sampled signatures did not verify: the throughput of this scenario is not trustworthy.` });
  }
  blocks.push({ kind: 'charts', scenario });
  blocks.push({
    kind: 'table',
    table: {
      headers: STEP_HEADERS,
      align: STEP_HEADERS.map((h) => (h === 'errors' || h === 'breaker' ? 'left' : 'right')),
      rows: steps.map((s) => stepRow(r, s)),
    },
  });
  const withCpu = steps.filter((s) => s.cpu !== undefined);
  if (withCpu.length > 0) {
    const cores = (sec: number | undefined, s: StepResult): string => (sec === undefined ? NOT_AVAILABLE : formatNumber(sec / s.durationSec, 2));
    const perSig = (sec: number | undefined, s: StepResult): string =>
      sec === undefined || s.signatures === 0 ? NOT_AVAILABLE : formatNumber((1000 * sec) / s.signatures, 3);
    blocks.push({
      kind: 'table',
      table: {
        caption: 'Where the cores went (CPU time during the step)',
        headers: ['connections', 'service, cores', 'service, CPU ms per signature', 'load generator, cores', 'load generator, CPU ms per request'],
        align: ['right', 'right', 'right', 'right', 'right'],
        rows: withCpu.map((s) => [
          formatInt(s.connections),
          cores(s.cpu!.serviceSec, s),
          perSig(s.cpu!.serviceSec, s),
          cores(s.cpu!.clientSec, s),
          s.okRequests === 0 ? NOT_AVAILABLE : formatNumber((1000 * s.cpu!.clientSec) / s.requests, 3),
        ]),
      },
    });
  }
  const merged = steps.filter((s) => s.generators !== undefined && s.generators.length > 0);
  if (merged.length > 0) blocks.push({ kind: 'table', table: generatorsTable(merged) });
  return { id: `scenario-${index + 1}-${slug(scenario)}`, title: 'Scenario', code: scenario, blocks };
}

/** A merged run: what each load generator measured and the cores it used, step by step. */
function generatorsTable(steps: readonly StepResult[]): Table {
  return {
    caption: 'Per load generator (merged run)',
    headers: ['connections', 'generator', 'its connections', 'sig/s', 'p50 ms', 'p99 ms', 'load generator, cores', 'started'],
    align: ['right', 'left', 'right', 'right', 'right', 'right', 'right', 'left'],
    rows: steps.flatMap((s) =>
      (s.generators ?? []).map((g) => [
        formatInt(s.connections),
        g.source,
        formatInt(g.connections),
        formatRate(g.signaturesPerSec),
        formatMs(g.latency.p50),
        formatMs(g.latency.p99),
        g.clientCores === undefined ? NOT_AVAILABLE : `${formatNumber(g.clientCores, 2)} of ${formatInt(g.cpus)}`,
        g.startedAt ?? NOT_AVAILABLE,
      ]),
    ),
  };
}

function ceilingsSection(r: LoadTestReport): Section {
  const headers = ['scenario', 'direct ops/s', 'processes × in flight', 'bare HTTP req/s', 'combined ops/s'];
  return {
    id: 'ceilings',
    title: 'Ceilings',
    blocks: [
      {
        kind: 'paragraph',
        text: 'What the HSM path and the HTTP layer each manage alone; combined = 1 / (1/direct + 1/HTTP), the best a request paying both can do.',
      },
      {
        kind: 'table',
        table: {
          headers,
          align: ['left', 'right', 'right', 'right', 'right'],
          rows: r.ceilings.map((c) => [
            c.scenario,
            formatRate(c.directOpsPerSec),
            `${formatInt(c.directProcesses)} × ${formatInt(c.directInFlight)}`,
            formatRate(c.httpReqPerSec),
            formatRate(c.combinedOpsPerSec),
          ]),
        },
      },
    ],
  };
}

function practicesSection(r: LoadTestReport): Section | undefined {
  if (!r.practices || r.practices.length === 0) return undefined;
  return {
    id: 'practices',
    title: 'PKCS#11 practices',
    blocks: [
      {
        kind: 'table',
        table: {
          headers: ['practice', 'good', 'ops/s', 'bad', 'ops/s', 'ratio'],
          align: ['left', 'left', 'right', 'left', 'right', 'right'],
          rows: r.practices.map((p) => [p.practice, p.goodLabel, formatRate(p.goodOpsPerSec), p.badLabel, formatRate(p.badOpsPerSec), formatRatio(p.ratio)]),
        },
      },
    ],
  };
}

function planSection(plan: CapacityPlan): Section {
  const { hsms, instances, inputs } = plan;
  const both = (f: (t: typeof hsms) => string): [string, string] => [f(hsms), f(instances)];
  const tierRows: Array<[string, ...string[]]> = [
    ['ops/s per unit (measured)', ...both((t) => formatRate(t.perUnitOpsPerSec))],
    [`needed for the load at ${formatPercent(inputs.maxUtilization, 0)}`, ...both((t) => formatInt(t.neededForLoad))],
    ['needed to survive a zone loss', ...both((t) => formatInt(t.neededForZoneLoss))],
    ['total', ...both((t) => formatInt(t.total))],
    ['per zone', ...both((t) => t.perZone.map(formatInt).join(' + '))],
    ['left after losing a zone', ...both((t) => formatInt(t.remainingAfterZoneLoss))],
    ['ops/s, every zone up (100%)', ...both((t) => formatRate(t.capacityAllZonesOpsPerSec))],
    ['ops/s after a zone loss (100%)', ...both((t) => formatRate(t.capacityAfterZoneLossOpsPerSec))],
    ['set by', ...both((t) => t.binding)],
  ];
  const system: string[][] = [
    ['target ops/s', formatRate(inputs.targetOpsPerSec)],
    ['zones', formatInt(inputs.zones)],
    ['spare HSMs', formatInt(inputs.spareHsms)],
    ['max utilisation', formatPercent(inputs.maxUtilization, 0)],
    ['system ops/s, every zone up', formatRate(plan.headroom.systemAllZonesOpsPerSec)],
    ['headroom, every zone up', formatSignedPercent(plan.headroom.allZones)],
    ['system ops/s after a zone loss', formatRate(plan.headroom.systemAfterZoneLossOpsPerSec)],
    ['headroom after a zone loss', formatSignedPercent(plan.headroom.afterZoneLoss)],
    ['concurrent requests per instance', formatInt(plan.concurrency.perInstance)],
    ['concurrent requests in total, after a zone loss', formatInt(plan.concurrency.totalAfterZoneLoss)],
    ['concurrent requests in total, every zone up', formatInt(plan.concurrency.totalAllZones)],
  ];
  const blocks: Block[] = [
    { kind: 'list', ordered: true, items: plan.explanation },
    {
      kind: 'table',
      table: { caption: 'Sizing', headers: ['', 'HSMs', 'service instances'], align: ['left', 'right', 'right'], rows: tierRows },
    },
    { kind: 'table', table: { caption: 'System', headers: ['', 'value'], align: ['left', 'right'], rows: system } },
  ];
  if (plan.notes.length > 0) blocks.push({ kind: 'list', ordered: false, items: plan.notes });
  blocks.push({
    kind: 'table',
    table: {
      caption: `Published cluster sign rates for comparison (${plan.awsPublished.source})`,
      headers: ['HSM type', 'key', 'HSMs', 'ops/s', 'ops/s per HSM'],
      align: ['left', 'left', 'right', 'right', 'right'],
      rows: plan.awsPublished.rows.map((row) => [
        row.hsmType,
        row.keySpec,
        formatInt(row.hsms),
        formatRate(row.opsPerSec),
        formatRate(row.opsPerSec / row.hsms),
      ]),
    },
  });
  blocks.push({ kind: 'paragraph', text: plan.awsPublished.note });
  return { id: 'plan', title: 'Capacity plan', ...(inputs.scenario ? { code: inputs.scenario } : {}), blocks };
}

function targetsSection(r: LoadTestReport): Section | undefined {
  if (!r.targets || r.targets.length === 0) return undefined;
  const measured = r.targets.filter((t) => t.met !== undefined);
  const missing = r.targets.filter((t) => t.met === undefined);
  const blocks: Block[] = [];
  if (measured.length > 0) {
    blocks.push({
      kind: 'table',
      table: {
        headers: ['target', 'measured', 'needed', 'verdict', 'from'],
        align: ['left', 'right', 'right', 'left', 'left'],
        rows: measured.map((t) => [
          t.description,
          formatTargetPercent(t.measured, t.threshold),
          `${t.kind === 'min' ? '≥' : '≤'} ${formatPercent(t.threshold, 0)}`,
          t.met ? 'met' : 'MISSED',
          t.detail,
        ]),
      },
    });
  }
  // Listed, not dropped: a reader should see which targets this run could not judge, and why.
  if (missing.length > 0) {
    blocks.push({ kind: 'paragraph', text: 'Not measured in this run:' });
    blocks.push({ kind: 'list', ordered: false, items: missing.map((t) => `${t.description} (${t.detail})`) });
  }
  return { id: 'targets', title: 'Targets', blocks };
}

export function buildReportModel(report: LoadTestReport): ReportModel {
  const sections: Section[] = [headerSection(report)];
  for (const [i, s] of scenariosOf(report.steps).entries()) sections.push(scenarioSection(report, s, i));
  if (report.ceilings.length > 0) sections.push(ceilingsSection(report));
  const practices = practicesSection(report);
  if (practices) sections.push(practices);
  if (report.plan) sections.push(planSection(report.plan));
  const targets = targetsSection(report);
  if (targets) sections.push(targets);
  if (report.notes.length > 0) {
    sections.push({ id: 'notes', title: 'Notes', blocks: [{ kind: 'list', ordered: false, items: report.notes }] });
  }
  return { title: 'hsm-signer load test', sections };
}
