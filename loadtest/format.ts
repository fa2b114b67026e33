/**
 * Number formatting shared by the plan's sentences and every reporter, and the spread of repeated
 * samples. Locale-free: a report renders byte-for-byte the same on every machine.
 */
import { percentile } from '../testkit/percentile.js';
import type { MachineProbe } from './results.js';

const NA = '–';

function groupThousands(digits: string): string {
  return digits.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

/** 12345.678 -> "12,345.68" with decimals = 2. */
export function formatNumber(n: number, decimals = 0): string {
  if (!Number.isFinite(n)) return NA;
  const fixed = Math.abs(n).toFixed(decimals);
  const [int = '0', frac] = fixed.split('.');
  const sign = n < 0 && Number(fixed) !== 0 ? '-' : '';
  return sign + groupThousands(int) + (frac === undefined ? '' : `.${frac}`);
}

export function formatInt(n: number): string {
  return formatNumber(n, 0);
}

/** Rates: whole numbers once they are large enough that decimals are noise. */
export function formatRate(n: number): string {
  return formatNumber(n, Math.abs(n) >= 100 ? 0 : 1);
}

export function formatMs(n: number): string {
  return formatNumber(n, 2);
}

/** 7.9 -> "7.9x", 12.345 -> "12.35x", 8 -> "8.0x". */
export function formatRatio(r: number): string {
  if (!Number.isFinite(r)) return NA;
  let s = formatNumber(r, 2);
  if (s.endsWith('0')) s = s.slice(0, -1);
  return `${s}x`;
}

/** 0.123 -> "12.3%". */
export function formatPercent(fraction: number | undefined, decimals = 1): string {
  if (fraction === undefined || !Number.isFinite(fraction)) return NA;
  return `${formatNumber(fraction * 100, decimals)}%`;
}

/**
 * A target's measured share: one decimal, or as many more as it takes not to print the threshold
 * itself beside a verdict that says otherwise (0.84966 against 0.85 is "84.97%", not a missed "85.0%").
 */
export function formatTargetPercent(measured: number | undefined, threshold: number): string {
  if (measured === undefined || measured === threshold) return formatPercent(measured);
  for (let decimals = 1; decimals < 6; decimals++) {
    const shown = formatPercent(measured, decimals);
    if (shown !== formatPercent(threshold, decimals)) return shown;
  }
  return formatPercent(measured, 6);
}

/** 0.123 -> "+12.3%", -0.05 -> "-5.0%": for changes, where the sign is the point. */
export function formatSignedPercent(fraction: number | undefined, decimals = 1): string {
  if (fraction === undefined || !Number.isFinite(fraction)) return NA;
  const s = formatPercent(fraction, decimals);
  return s.startsWith('-') || Number(s.replace(/[,%]/g, '')) === 0 ? s : `+${s}`;
}

export function formatBytesMiB(bytes: number): string {
  return `${formatNumber(bytes / (1024 * 1024), 1)} MiB`;
}

export const NOT_AVAILABLE = NA;

/** (slowest − fastest) ÷ median: 0.1 means the same work took up to 10% longer from one sample to the next. */
export function spreadOf(ms: readonly number[]): number {
  if (ms.length === 0) return NaN;
  const sorted = [...ms].sort((a, b) => a - b);
  return (sorted[sorted.length - 1]! - sorted[0]!) / percentile(sorted, 50);
}

const loop = (ms: readonly number[]): string => {
  const sorted = [...ms].sort((a, b) => a - b);
  return `${sorted[0]} to ${sorted[sorted.length - 1]} ms (median ${percentile(sorted, 50)}, spread ${formatPercent(spreadOf(sorted), 0)})`;
};

/** The medians say how fast the host's memory was (comparable between runs on one machine), the spreads how steady. */
export function probeSummary(p: MachineProbe): string {
  return `memory-bound loop ${loop(p.memoryMs)}, compute loop ${loop(p.computeMs)}`;
}
