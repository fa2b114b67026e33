/**
 * The service's own view during a step: pool and breaker from /readyz, and each worker's RSS
 * from /proc when the harness started the service itself. /readyz is asked on a fresh
 * connection each time, so the cluster primary hands successive samples to different workers;
 * a sample describes one worker, and the step keeps the largest figure any worker showed.
 */
import http from 'node:http';
import https from 'node:https';
import { cpuSecondsOf, rssOf } from '../testkit/processProbe.js';
import type { ServiceSample } from './results.js';

export interface ProbeOptions {
  /** Full /readyz URL; omitted: no pool/breaker figures. */
  readonly readyzUrl?: string;
  readonly headers?: Record<string, string>;
  /** The worker processes to read RSS of (re-read every sample: a restarted worker has a new pid). */
  readonly pids?: () => number[];
  readonly intervalMs: number;
}

interface Readyz {
  sessions?: { inUse?: number; waiting?: number };
  breaker?: string;
}

function getJson(url: string, headers: Record<string, string>, timeoutMs: number): Promise<Readyz | undefined> {
  const mod = url.startsWith('https:') ? https : http;
  return new Promise((resolve) => {
    // agent: false = a new connection, so the samples spread over the workers.
    const req = mod.get(url, { headers, agent: false, timeout: timeoutMs, rejectUnauthorized: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => {
        try {
          resolve(JSON.parse(body) as Readyz);
        } catch {
          resolve(undefined);
        }
      });
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(undefined));
  });
}

export class ServiceProbe {
  private timer: NodeJS.Timeout | undefined;
  private inFlight: Promise<void> | undefined;
  private poolInUse: number | undefined;
  private poolWaiting: number | undefined;
  private readyzSamples = 0;
  private readonly breakerStates: string[] = [];
  private readonly rss = new Map<number, number[]>();
  private readonly rssMax: number[] = [];

  constructor(private readonly options: ProbeOptions) {}

  private cpuAtStart = new Map<number, number>();
  private cpuSec: number | undefined;

  start(): void {
    for (const pid of this.options.pids?.() ?? []) {
      const c = cpuSecondsOf(pid);
      if (c !== undefined) this.cpuAtStart.set(pid, c);
    }
    this.sample();
    this.timer = setInterval(() => this.sample(), this.options.intervalMs);
  }

  private sample(): void {
    const pids = this.options.pids?.() ?? [];
    let largest: number | undefined;
    for (const pid of pids) {
      const rss = rssOf(pid);
      if (rss === undefined) continue;
      const series = this.rss.get(pid) ?? [];
      series.push(rss);
      this.rss.set(pid, series);
      largest = Math.max(largest ?? 0, rss);
    }
    if (largest !== undefined) this.rssMax.push(largest);
    // One /readyz at a time: a slow answer under load must not pile up probes.
    if (this.options.readyzUrl && !this.inFlight) {
      this.inFlight = getJson(this.options.readyzUrl, this.options.headers ?? {}, Math.max(1000, this.options.intervalMs * 4)).then((r) => {
        this.inFlight = undefined;
        if (!r) return;
        this.readyzSamples++;
        const s = r.sessions;
        if (typeof s?.inUse === 'number') this.poolInUse = Math.max(this.poolInUse ?? 0, s.inUse);
        if (typeof s?.waiting === 'number') this.poolWaiting = Math.max(this.poolWaiting ?? 0, s.waiting);
        if (typeof r.breaker === 'string' && !this.breakerStates.includes(r.breaker)) this.breakerStates.push(r.breaker);
      });
    }
  }

  /** CPU seconds the worker processes used between start() and stop(); undefined if unknown. */
  get cpuSeconds(): number | undefined {
    return this.cpuSec;
  }

  async stop(): Promise<ServiceSample | undefined> {
    clearInterval(this.timer);
    if (this.cpuAtStart.size > 0) {
      let used = 0;
      for (const [pid, before] of this.cpuAtStart) used += (cpuSecondsOf(pid) ?? before) - before;
      this.cpuSec = used;
    }
    await this.inFlight;
    const out: ServiceSample = {};
    if (this.poolInUse !== undefined) out.poolInUse = this.poolInUse;
    if (this.poolWaiting !== undefined) out.poolWaiting = this.poolWaiting;
    if (this.breakerStates.length > 0) {
      // The worst state seen is the one worth a column; all of them are kept beside it.
      out.breakerState = ['open', 'halfOpen'].find((s) => this.breakerStates.includes(s)) ?? this.breakerStates[0]!;
      out.breakerStates = [...this.breakerStates];
    }
    if (this.readyzSamples > 0) out.readyzSamples = this.readyzSamples;
    if (this.rssMax.length > 0) {
      out.rssBytes = [...this.rssMax];
      out.rssByWorker = Object.fromEntries([...this.rss.entries()].map(([pid, s]) => [String(pid), s]));
    }
    return Object.keys(out).length > 0 ? out : undefined;
  }
}
