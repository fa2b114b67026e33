/**
 * Where the time goes, from V8 CPU profiles (`npm run loadtest -- --cpu-prof DIR` writes one per
 * service process): self time per function and per package, across every profile given.
 *
 *   node --import tsx bench/profileSummary.ts DIR|FILE... [--top 25] [--skip 10] [--threads main|workers|all]
 *
 * --skip drops each profile's first seconds (start-up: module loading, compiling), so the
 * summary shows the steady state; --threads picks the event-loop threads (file names
 * CPU.<date>.<time>.<pid>.0.<n>) or the worker threads (the HSM threads).
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { isMainModule } from '../src/isMainModule.js';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

/** "node_modules/express/..." -> "express", "src/http/..." -> "src/http", "node:internal/..." -> "node:internal/http". */
export function packageOf(url: string, functionName: string): string {
  if (url === '') return functionName.startsWith('(') ? functionName : '(native)';
  if (url.startsWith('data:')) return '(inline module)';
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (nm) return nm[1]!;
  const internal = /^node:internal\/([^/]+)(?:\/([^/]+))?/.exec(url);
  if (internal) return `node:${internal[1]}${internal[2] && !internal[2].endsWith('.js') ? `/${internal[2]}` : ''}`;
  if (url.startsWith('node:')) return url;
  const src = /\/(src|loadtest)\/([^/]+)\//.exec(url);
  if (src) return `${src[1]}/${src[2]}`;
  return url
    .replace(/^file:\/\//, '')
    .split('/')
    .slice(-2)
    .join('/');
}

export interface Summary {
  totalMs: number;
  byFunction: Array<{ key: string; ms: number }>;
  byPackage: Array<{ key: string; ms: number }>;
  /** Self plus callees, for the service's and its libraries' functions: what a call really costs. */
  inclusive: Array<{ key: string; ms: number }>;
}

const shortUrl = (url: string): string =>
  url.startsWith('data:')
    ? '(inline module)'
    : url
        .replace(/^file:\/\//, '')
        .replace(/^.*node_modules\//, '')
        .replace(/^.*\/(src|loadtest)\//, '$1/');

export function summarize(profiles: readonly CpuProfile[], skipSec = 0): Summary {
  const fn = new Map<string, number>();
  const pkg = new Map<string, number>();
  const incl = new Map<string, number>();
  let total = 0;
  for (const p of profiles) {
    const nodes = new Map(p.nodes.map((n) => [n.id, n]));
    const parent = new Map<number, number>();
    for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
    let at = 0;
    for (let i = 0; i < p.samples.length; i++) {
      const node = nodes.get(p.samples[i]!);
      const ms = (p.timeDeltas[i] ?? 0) / 1000;
      at += ms;
      if (!node || ms <= 0 || at < skipSec * 1000) continue;
      const { functionName, url, lineNumber } = node.callFrame;
      // Idle is waiting, not work: leave it out so shares are of the CPU actually used.
      if (functionName === '(idle)') continue;
      total += ms;
      const short = shortUrl(url);
      const key = `${functionName || '(anonymous)'} ${short ? `${short}:${lineNumber + 1}` : ''}`.trim();
      fn.set(key, (fn.get(key) ?? 0) + ms);
      const pk = packageOf(url, functionName);
      pkg.set(pk, (pkg.get(pk) ?? 0) + ms);
      // Each frame on the stack once (recursion would count twice), library and project code only.
      const seen = new Set<string>();
      for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
        const cf = nodes.get(id)!.callFrame;
        if (!/node_modules|\/src\/|^node:internal\/(worker|http|_http)/.test(cf.url) && cf.functionName !== 'postMessage') continue;
        const k = `${cf.functionName || '(anonymous)'} ${shortUrl(cf.url)}:${cf.lineNumber + 1}`;
        if (seen.has(k)) continue;
        seen.add(k);
        incl.set(k, (incl.get(k) ?? 0) + ms);
      }
    }
  }
  const sorted = (m: Map<string, number>) => [...m.entries()].map(([key, ms]) => ({ key, ms })).sort((a, b) => b.ms - a.ms);
  return { totalMs: total, byFunction: sorted(fn), byPackage: sorted(pkg), inclusive: sorted(incl) };
}

export function formatSummary(s: Summary, top = 25): string {
  const pct = (ms: number): string => `${((100 * ms) / (s.totalMs || 1)).toFixed(1).padStart(5)}%`;
  const lines = [`CPU time sampled (not idle): ${(s.totalMs / 1000).toFixed(1)} s`, '', 'by package / area (self time):'];
  for (const r of s.byPackage.slice(0, top)) lines.push(`  ${pct(r.ms)}  ${r.key}`);
  lines.push('', 'by function (self time):');
  for (const r of s.byFunction.slice(0, top)) lines.push(`  ${pct(r.ms)}  ${r.key}`);
  lines.push('', 'by function, including what it calls (service and library code):');
  for (const r of s.inclusive.slice(0, top)) lines.push(`  ${pct(r.ms)}  ${r.key}`);
  return `${lines.join('\n')}\n`;
}

function profileFiles(paths: readonly string[]): string[] {
  return paths.flatMap((p) =>
    statSync(p).isDirectory()
      ? readdirSync(p)
          .filter((f) => f.endsWith('.cpuprofile'))
          .map((f) => join(p, f))
      : [p],
  );
}

if (isMainModule(import.meta.url)) {
  const args = process.argv.slice(2);
  const option = (name: string): string | undefined => {
    const i = args.indexOf(name);
    return i >= 0 ? args.splice(i, 2)[1] : undefined;
  };
  const top = Number(option('--top') ?? 25);
  const skip = Number(option('--skip') ?? 0);
  const threads = option('--threads') ?? 'all';
  const isMain = (f: string): boolean => /\.\d+\.0\.\d+\.cpuprofile$/.test(f);
  const files = profileFiles(args).filter((f) => threads === 'all' || (threads === 'main') === isMain(f));
  if (files.length === 0) {
    process.stderr.write('usage: node --import tsx bench/profileSummary.ts DIR|FILE.cpuprofile... [--top N]\n');
    process.exit(2);
  }
  const profiles = files.map((f) => JSON.parse(readFileSync(f, 'utf8')) as CpuProfile);
  process.stdout.write(`${files.length} profile(s), threads: ${threads}, first ${skip} s skipped\n${formatSummary(summarize(profiles, skip), top)}`);
}
