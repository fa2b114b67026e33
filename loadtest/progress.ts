/**
 * The harness's console: engine events -> lines. Formatting is pure (tested); the writer keeps
 * one live line per step on a terminal (a bar, rewritten about once a second) and prints only
 * the finished steps when the output is a file or a pipe. Nothing is printed per request.
 */
import type { Writable } from 'node:stream';
import type { HarnessEvent } from './options.js';
import { totalErrors, type StepResult } from './results.js';
import { formatInt, formatMs, formatRate } from './format.js';
import type { StepProgress } from './stepRunner.js';

export function bar(fraction: number, width = 20): string {
  const f = Math.min(1, Math.max(0, Number.isFinite(fraction) ? fraction : 0));
  const full = Math.round(f * width);
  return `${'█'.repeat(full)}${'░'.repeat(width - full)}`;
}

const stepName = (scenario: string, connections: number): string => `${scenario} @ ${connections} conn`;

export function formatLive(scenario: string, connections: number, warmup: boolean, p: StepProgress, position: string): string {
  const rate = p.elapsedSec > 0 ? p.signatures / p.elapsedSec : 0;
  const elapsed = Math.min(p.elapsedSec, p.durationSec);
  return (
    `${position ? `${position} ` : ''}${warmup ? 'warm-up ' : ''}${stepName(scenario, connections)} ${bar(elapsed / p.durationSec)} ` +
    `${elapsed.toFixed(0)}/${p.durationSec} s  ${formatRate(rate)} sig/s  errors ${formatInt(p.errors)}${p.bad > 0 ? `  BAD ${formatInt(p.bad)}` : ''}`
  );
}

export function formatStepDone(step: StepResult, position: string): string {
  const errors = totalErrors(step);
  const svc = step.service;
  const pool = svc?.poolInUse !== undefined ? `, pool ${formatInt(svc.poolInUse)}/${formatInt(svc.poolWaiting ?? 0)} waiting` : '';
  return (
    `${position} ${stepName(step.scenario, step.connections)}: ${formatRate(step.signaturesPerSec)} sig/s ` +
    `(${formatRate(step.requestsPerSec)} req/s), p50 ${formatMs(step.latency.p50)} ms, p99 ${formatMs(step.latency.p99)} ms, ` +
    `errors ${formatInt(errors)}${errors > 0 ? ` ${JSON.stringify(step.errors)}` : ''}, verified ${formatInt(step.verified.sampled)} (${formatInt(step.verified.bad)} bad)${pool}`
  );
}

/** The line for an event, or undefined for events that only update the live line. */
export function formatEvent(e: HarnessEvent, position = ''): string | undefined {
  switch (e.type) {
    case 'phase':
      return `» ${e.text}`;
    case 'note':
      return `  note: ${e.text}`;
    case 'ceiling': {
      const c = e.ceiling;
      const direct = `direct ${formatRate(c.directOpsPerSec)} ops/s (${c.directProcesses} × ${c.directInFlight} in flight)`;
      if (!(c.httpReqPerSec > 0)) return `  ${c.scenario}: ${direct}`;
      return `  ceiling ${c.scenario}: ${direct}, bare HTTP ${formatRate(c.httpReqPerSec)} req/s, combined ${formatRate(c.combinedOpsPerSec)} ops/s`;
    }
    case 'practice':
      return `  ${e.practice.practice}: ${e.practice.goodLabel} ${formatRate(e.practice.goodOpsPerSec)} ops/s vs ${e.practice.badLabel} ${formatRate(e.practice.badOpsPerSec)} ops/s`;
    case 'bad-signature':
      return `!! BAD SIGNATURE in ${e.scenario}: ${e.reason}`;
    case 'step-done':
      return e.warmup ? undefined : formatStepDone(e.step, position);
    case 'step-start':
    case 'step-progress':
      return undefined;
  }
}

/** Writes a run's events to a stream (stderr by default, so stdout stays for results). */
export function attachConsole(
  emitter: { on(event: 'event', fn: (e: HarnessEvent) => void): unknown },
  out: Writable & { isTTY?: boolean } = process.stderr,
): void {
  const tty = out.isTTY === true;
  let live = false;
  let position = '';
  let shownBad = 0;
  const clear = (): void => {
    if (live) out.write('\r\x1b[2K');
    live = false;
  };
  emitter.on('event', (e) => {
    if (e.type === 'step-start') position = e.warmup ? '' : `[${e.index}/${e.total}]`;
    if (e.type === 'step-progress') {
      if (!tty) return;
      clear();
      out.write(formatLive(e.scenario, e.connections, e.warmup, e.progress, position));
      live = true;
      return;
    }
    // A flood of bad signatures is shown as the first few and a count at the end of the step.
    if (e.type === 'bad-signature' && ++shownBad > 5) return;
    const line = formatEvent(e, position);
    if (e.type === 'step-done') {
      clear();
      if (shownBad > 5) out.write(`!! ... and ${shownBad - 5} more bad signatures\n`);
      shownBad = 0;
    }
    if (line === undefined) return;
    clear();
    out.write(`${line}\n`);
  });
}
