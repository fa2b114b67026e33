/**
 * One step: a scenario held at one connection count for a while, driven by programmatic
 * autocannon in this process. autocannon supplies the connections and the clock; the harness
 * judges every answer itself (status, body shape, error code), verifies a sample of signatures,
 * and keeps its own latency list so errors and successes are measured alike.
 */
import autocannon from 'autocannon';
import type { Judgement, RequestTemplate, VerifyOutcome } from './requests.js';
import type { LatencyStats, ServiceSample, StepResult } from './results.js';
import { percentile } from '../testkit/percentile.js';
import { encodeLatencyHistogram, newLatencyHistogram, recordLatencyMs } from './latencyHistogram.js';
import type { ServiceProbe } from './serviceProbe.js';

export interface StepProgress {
  readonly elapsedSec: number;
  readonly durationSec: number;
  readonly requests: number;
  readonly ok: number;
  readonly signatures: number;
  readonly errors: number;
  readonly bad: number;
}

export interface StepOptions {
  readonly scenario: string;
  readonly urls: readonly string[];
  readonly templates: readonly RequestTemplate[];
  readonly connections: number;
  readonly durationSec: number;
  /** Fraction of good answers verified cryptographically; 0 for the bare-HTTP ceiling. */
  readonly sampleRate: number;
  readonly timeoutSec: number;
  readonly headers?: Record<string, string>;
  readonly probe?: ServiceProbe;
  /** About once a second. */
  readonly onProgress?: (p: StepProgress) => void;
  /** Each bad signature as it is found, so a run can shout before it ends. */
  readonly onBadSignature?: (reason: string) => void;
  /** Also keep every latency in an HdrHistogram and put it in the result (--generator-only). */
  readonly histogram?: boolean;
}

const round3 = (n: number): number => Math.round(n * 1000) / 1000;

export function latencyStats(values: Float64Array): LatencyStats {
  if (values.length === 0) return { p50: 0, p90: 0, p99: 0, max: 0, mean: 0 };
  const sorted = Float64Array.from(values).sort();
  let sum = 0;
  for (const v of sorted) sum += v;
  return {
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    max: sorted[sorted.length - 1]!,
    mean: sum / sorted.length,
  };
}

/** Every k-th good answer is verified: deterministic, and never below the requested rate. */
export function sampleEvery(rate: number): number {
  return rate > 0 ? Math.max(1, Math.floor(1 / rate)) : 0;
}

class GrowingList {
  private data = new Float64Array(4096);
  length = 0;
  push(v: number): void {
    if (this.length === this.data.length) {
      const next = new Float64Array(this.data.length * 2);
      next.set(this.data);
      this.data = next;
    }
    this.data[this.length++] = v;
  }
  values(): Float64Array {
    return this.data.subarray(0, this.length);
  }
}

/** The common path prefix of the target URLs ("" for a bare origin); requests are sent under it. */
export function basePath(urls: readonly string[]): string {
  const prefixes = new Set(urls.map((u) => new URL(u).pathname.replace(/\/+$/, '')));
  if (prefixes.size > 1) throw new Error(`all --url values must have the same path, got ${[...prefixes].join(', ')}`);
  return [...prefixes][0] ?? '';
}

export async function runStep(o: StepOptions): Promise<StepResult> {
  const every = sampleEvery(o.sampleRate);
  const latencies = new GrowingList();
  const histogram = o.histogram ? newLatencyHistogram() : undefined;
  const errors: Record<string, number> = {};
  const addError = (key: string, n = 1): void => {
    errors[key] = (errors[key] ?? 0) + n;
  };
  let responses = 0;
  let ok = 0;
  let signatures = 0;
  let sampled = 0;
  let bad = 0;
  let errorCount = 0;
  const pendingChecks: Promise<void>[] = [];

  const record = (v: VerifyOutcome): void => {
    sampled += v.checked;
    bad += v.bad;
    if (v.bad > 0) o.onBadSignature?.(v.reason ?? `${o.scenario}: a sampled signature did not verify`);
  };

  const onAnswer = (template: RequestTemplate, status: number, body: string): void => {
    responses++;
    let j: Judgement;
    try {
      j = template.judge(status, body);
    } catch (e) {
      j = { ok: false, error: `judge failed (${(e as Error).message})` };
    }
    if (!j.ok) {
      errorCount++;
      addError(j.error);
      return;
    }
    ok++;
    signatures += j.signatures;
    for (const e of j.itemErrors ?? []) addError(e);
    errorCount += j.itemErrors?.length ?? 0;
    if (every > 0 && (j.checkAlways === true || ok % every === 0)) {
      try {
        const v = j.verify();
        if (v instanceof Promise)
          pendingChecks.push(v.then(record, (e: unknown) => record({ checked: 1, bad: 1, reason: `check failed: ${(e as Error).message}` })));
        else record(v);
      } catch (e) {
        record({ checked: 1, bad: 1, reason: `check failed: ${(e as Error).message}` });
      }
    }
  };

  const prefix = basePath(o.urls);
  const requests = o.templates.map((t) => ({
    method: t.method,
    path: prefix + t.path,
    body: t.body,
    headers: { 'content-type': 'application/json', ...o.headers },
    onResponse: (status: number, body: string) => onAnswer(t, status, body),
  }));

  const started = Date.now();
  const startedAt = new Date(started).toISOString();
  const cpuStart = process.cpuUsage();
  o.probe?.start();
  const ticker = setInterval(() => {
    o.onProgress?.({
      elapsedSec: (Date.now() - started) / 1000,
      durationSec: o.durationSec,
      requests: responses,
      ok,
      signatures,
      errors: errorCount,
      bad,
    });
  }, 1000);
  let result: autocannon.Result;
  try {
    result = await new Promise<autocannon.Result>((resolve, reject) => {
      const instance = autocannon(
        {
          // autocannon spreads the connections over several URLs round-robin; its types say one string.
          url: (o.urls.length === 1 ? o.urls[0]! : [...o.urls]) as string,
          connections: o.connections,
          duration: o.durationSec,
          timeout: o.timeoutSec,
          requests,
        },
        (err, res) => (err ? reject(err) : resolve(res)),
      );
      instance.on('response', (_client, _status, _bytes, responseTime) => {
        latencies.push(responseTime);
        if (histogram) recordLatencyMs(histogram, responseTime);
      });
    });
  } finally {
    clearInterval(ticker);
  }
  const cpuUsed = process.cpuUsage(cpuStart);
  const service: ServiceSample | undefined = await o.probe?.stop();
  const serviceSec = o.probe?.cpuSeconds;
  await Promise.all(pendingChecks);

  if (result.timeouts > 0) addError('timeout', result.timeouts);
  // autocannon counts timeouts among its errors; the rest are connection failures.
  const connErrors = result.errors - result.timeouts;
  if (connErrors > 0) addError('connection error', connErrors);
  const durationSec = Math.max(result.duration, 0.001);
  return {
    scenario: o.scenario,
    connections: o.connections,
    durationSec: Number(durationSec.toFixed(3)),
    requests: responses + result.errors,
    okRequests: ok,
    signatures,
    requestsPerSec: ok / durationSec,
    signaturesPerSec: signatures / durationSec,
    latency: latencyStats(latencies.values()),
    errors,
    verified: { sampled, bad },
    ...(service ? { service } : {}),
    cpu: { ...(serviceSec !== undefined ? { serviceSec: round3(serviceSec) } : {}), clientSec: round3((cpuUsed.user + cpuUsed.system) / 1e6) },
    ...(histogram ? { startedAt, latencyHistogram: encodeLatencyHistogram(histogram) } : {}),
  };
}
