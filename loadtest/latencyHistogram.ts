/**
 * Every answer's latency in an HdrHistogram (hdr-histogram-js, the library autocannon uses), so
 * that the steps of several load generators can be merged exactly: adding histograms adds their
 * counts, and the merge's percentiles are those of all the generators' samples together.
 *
 * Values are whole microseconds with 5 significant digits: every latency below 262 ms is kept to
 * the microsecond, longer ones to 1 part in 100,000. (autocannon's own latency histogram holds
 * whole milliseconds and only 2xx answers, too coarse for a p50 of a few ms.)
 */
import * as hdr from 'hdr-histogram-js';
import type { LatencyStats } from './results.js';

export type LatencyHistogram = hdr.Histogram;

/** How a step's latencyHistogram is written in report.json. */
export const LATENCY_HISTOGRAM_FORMAT = 'HdrHistogram, microseconds, hdr-histogram-js encodeIntoCompressedBase64';

export function newLatencyHistogram(): LatencyHistogram {
  return hdr.build({
    bitBucketSize: 64,
    autoResize: true,
    lowestDiscernibleValue: 1,
    highestTrackableValue: 1_000_000,
    numberOfSignificantValueDigits: 5,
  });
}

/** Milliseconds (autocannon's responseTime, fractional) -> the histogram's whole microseconds. */
export function toMicros(ms: number): number {
  return Math.max(0, Math.round(ms * 1000));
}

export function recordLatencyMs(h: LatencyHistogram, ms: number): void {
  h.recordValue(toMicros(ms));
}

export function encodeLatencyHistogram(h: LatencyHistogram): string {
  return hdr.encodeIntoCompressedBase64(h);
}

/** The inverse of encodeLatencyHistogram; `where` names the field in the error. */
export function decodeLatencyHistogram(text: string, where: string): LatencyHistogram {
  let h: LatencyHistogram;
  try {
    h = hdr.decodeFromCompressedBase64(text, 64);
  } catch (e) {
    throw new Error(`${where}: not an encoded HdrHistogram (${(e as Error).message})`);
  }
  h.autoResize = true;
  return h;
}

/** One histogram holding every value of the given ones. */
export function mergeLatencyHistograms(parts: readonly LatencyHistogram[]): LatencyHistogram {
  const merged = newLatencyHistogram();
  for (const p of parts) merged.add(p);
  return merged;
}

/** p50/p90/p99 (nearest rank, as for the harness's own latency list), max and mean, in milliseconds. */
export function latencyStatsOf(h: LatencyHistogram): LatencyStats {
  if (h.totalCount === 0) return { p50: 0, p90: 0, p99: 0, max: 0, mean: 0 };
  const ms = (us: number): number => us / 1000;
  return {
    p50: ms(h.getValueAtPercentile(50)),
    p90: ms(h.getValueAtPercentile(90)),
    p99: ms(h.getValueAtPercentile(99)),
    // The highest value of the top bucket, as every percentile is, whether the histogram was recorded or decoded.
    max: ms(h.getValueAtPercentile(100)),
    mean: ms(h.mean),
  };
}
