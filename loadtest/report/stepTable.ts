/** One row per step: the columns every scenario's table shows, formatted. */
import { formatBytesMiB, formatInt, formatMs, formatPercent, formatRate, NOT_AVAILABLE } from '../format.js';
import { ceilingFor, efficiency, totalErrors, type LoadTestReport, type StepResult } from '../results.js';

/** "12 (0.40%): 503 OVERLOADED 10, timeout 2", biggest first so the cause is read first. */
export function errorsSummary(step: StepResult): string {
  const total = totalErrors(step);
  if (total === 0) return '0';
  const parts = Object.entries(step.errors)
    .filter(([, n]) => n > 0)
    .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0], 'en'))
    .map(([k, n]) => `${k} ${formatInt(n)}`);
  const rate = step.requests > 0 ? ` (${formatPercent(total / step.requests, 2)})` : '';
  return `${formatInt(total)}${rate}: ${parts.join(', ')}`;
}

function poolCell(step: StepResult): string {
  const s = step.service;
  if (s?.poolInUse === undefined && s?.poolWaiting === undefined) return NOT_AVAILABLE;
  const f = (n: number | undefined): string => (n === undefined ? NOT_AVAILABLE : formatInt(n));
  return `${f(s.poolInUse)}/${f(s.poolWaiting)}`;
}

function rssCell(step: StepResult): string {
  const rss = step.service?.rssBytes;
  return rss && rss.length > 0 ? formatBytesMiB(Math.max(...rss)) : NOT_AVAILABLE;
}

export const STEP_HEADERS = [
  'connections',
  'req/s',
  'sig/s',
  'p50 ms',
  'p90 ms',
  'p99 ms',
  'max ms',
  'errors',
  'bad sigs',
  'vs ceiling',
  'pool in use/waiting',
  'breaker',
  'RSS max',
];

export function stepRow(report: LoadTestReport, step: StepResult): string[] {
  const eff = efficiency(step, ceilingFor(report.ceilings, step.scenario));
  return [
    formatInt(step.connections),
    formatRate(step.requestsPerSec),
    formatRate(step.signaturesPerSec),
    formatMs(step.latency.p50),
    formatMs(step.latency.p90),
    formatMs(step.latency.p99),
    formatMs(step.latency.max),
    errorsSummary(step),
    `${formatInt(step.verified.bad)}/${formatInt(step.verified.sampled)}`,
    formatPercent(eff),
    poolCell(step),
    step.service?.breakerState ?? NOT_AVAILABLE,
    rssCell(step),
  ];
}
