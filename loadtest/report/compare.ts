/**
 * Old run vs new run as a plain-text table for a terminal or a PR comment: did a change make
 * signing faster or slower, at which concurrency?
 */
import type { LoadTestReport, MachineFacts, StepResult } from '../results.js';
import { NOT_AVAILABLE, formatInt, formatMs, formatPercent, formatRate, formatSignedPercent, spreadOf } from '../format.js';
import { percentile } from '../../testkit/percentile.js';

/** (new − old) / old; undefined when there is no base to compare with. */
export function relativeChange(oldValue: number, newValue: number): number | undefined {
  if (!Number.isFinite(oldValue) || !Number.isFinite(newValue)) return undefined;
  if (oldValue === 0) return newValue === 0 ? 0 : undefined;
  return (newValue - oldValue) / oldValue;
}

export function textTable(headers: string[], rightAligned: boolean[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => {
        const w = widths[i] ?? 0;
        return rightAligned[i] ? c.padStart(w) : c.padEnd(w);
      })
      .join('  ')
      .trimEnd();
  return [line(headers), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

const stepKey = (s: StepResult): string => `${s.scenario}\u0000${s.connections}`;

/** First step per (scenario, connections); a repeat is reported, not averaged in silently. */
function index(steps: readonly StepResult[]): { map: Map<string, StepResult>; repeats: number } {
  const map = new Map<string, StepResult>();
  let repeats = 0;
  for (const s of steps) {
    if (map.has(stepKey(s))) repeats++;
    else map.set(stepKey(s), s);
  }
  return { map, repeats };
}

const MACHINE_FIELDS: Array<keyof MachineFacts> = ['cpus', 'cpuModel', 'node', 'platform', 'hsmModule', 'workers', 'sessionsPerWorker', 'hsmLatencyUs'];

function runLine(label: string, r: LoadTestReport): string {
  const m = r.machine;
  return `${label}: ${r.startedAt}  ${m.cpus} × ${m.cpuModel}, ${m.hsmModule}, ${m.workers} workers × ${m.sessionsPerWorker} sessions  $ ${r.command}`;
}

export function compareReports(oldR: LoadTestReport, newR: LoadTestReport): string {
  const out: string[] = [runLine('old', oldR), runLine('new', newR)];

  const differing = MACHINE_FIELDS.filter((f) => oldR.machine[f] !== newR.machine[f]);
  if (differing.length > 0) {
    out.push(
      '',
      'Warning: the runs differ in setup, so changes may not be caused by the code:',
      ...differing.map((f) => `  ${f}: ${String(oldR.machine[f])} -> ${String(newR.machine[f])}`),
    );
  }

  const steadiness = (r: LoadTestReport): string | undefined => {
    const p = r.machine.probe;
    if (!p) return undefined;
    const all = [...p.start.memoryMs, ...p.end.memoryMs].sort((a, b) => a - b);
    return `median ${percentile(all, 50)} ms, spread ${formatPercent(spreadOf(all), 0)}`;
  };
  const [so, sn] = [steadiness(oldR), steadiness(newR)];
  if (so !== undefined && sn !== undefined) {
    out.push(
      '',
      `Machine steadiness (memory-bound probe, start and end together): old ${so}; new ${sn}. A slower median means a busier host; a change smaller than the spreads is not settled.`,
    );
  }

  const olds = index(oldR.steps);
  const news = index(newR.steps);
  const rows: string[][] = [];
  const onlyOld: StepResult[] = [];
  for (const [key, o] of olds.map) {
    const n = news.map.get(key);
    if (!n) {
      onlyOld.push(o);
      continue;
    }
    rows.push([
      o.scenario,
      formatInt(o.connections),
      formatRate(o.signaturesPerSec),
      formatRate(n.signaturesPerSec),
      formatSignedPercent(relativeChange(o.signaturesPerSec, n.signaturesPerSec)),
      formatMs(o.latency.p99),
      formatMs(n.latency.p99),
      formatSignedPercent(relativeChange(o.latency.p99, n.latency.p99)),
    ]);
  }
  const onlyNew = [...news.map.entries()].filter(([k]) => !olds.map.has(k)).map(([, s]) => s);

  out.push('');
  if (rows.length > 0) {
    out.push(
      textTable(
        ['scenario', 'conns', 'old sig/s', 'new sig/s', 'sig/s Δ', 'old p99 ms', 'new p99 ms', 'p99 Δ'],
        [false, true, true, true, true, true, true, true],
        rows,
      ),
    );
  } else {
    out.push('No (scenario, connections) step is present in both reports.');
  }

  const describe = (s: StepResult): string =>
    `  ${s.scenario} @ ${formatInt(s.connections)} connections: ${formatRate(s.signaturesPerSec)} sig/s, p99 ${formatMs(s.latency.p99)} ms`;
  if (onlyOld.length > 0) out.push('', 'Only in old:', ...onlyOld.map(describe));
  if (onlyNew.length > 0) out.push('', 'Only in new:', ...onlyNew.map(describe));
  if (olds.repeats + news.repeats > 0) {
    out.push('', `Note: repeated (scenario, connections) steps were ignored after the first (old ${olds.repeats}, new ${news.repeats}).`);
  }
  out.push('', `Δ is (new − old) / old; ${NOT_AVAILABLE} where old is 0. Higher sig/s is better, lower p99 is better.`);
  return `${out.join('\n')}\n`;
}
