/**
 * One self-contained HTML page: inline CSS and hand-drawn inline SVG, no scripts and no
 * network references, so it can be attached to a ticket or opened from an air-gapped host.
 * Every string from the report is escaped - scenario names and notes come from the command line.
 */
import { ceilingFor, stepsOf, type LoadTestReport } from '../results.js';
import { formatNumber } from '../format.js';
import { buildReportModel, type Block, type Table } from './model.js';

export function escapeHtml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');
}

// ---- charts ----

export interface Series {
  name: string;
  color: string;
  points: Array<[number, number]>;
}

export interface ChartSpec {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  /** Horizontal reference lines such as the measured ceiling. */
  references?: Array<{ name: string; y: number; color: string }>;
}

const W = 600;
const H = 320;
const M = { left: 70, right: 20, top: 52, bottom: 48 };

/** 1-2-5 steps so tick labels are round numbers. */
export function niceStep(range: number, targetTicks = 5): number {
  const raw = range / targetTicks;
  if (!(raw > 0) || !Number.isFinite(raw)) return 1;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const err = raw / mag;
  return (err >= 7.5 ? 10 : err >= 3.5 ? 5 : err >= 1.5 ? 2 : 1) * mag;
}

function axisMax(values: number[]): { max: number; step: number } {
  // 5% air above the highest point so a line at the ceiling is not drawn on the frame.
  const top = Math.max(0, ...values.filter(Number.isFinite)) * 1.05;
  if (top === 0) return { max: 1, step: 0.2 };
  const step = niceStep(top);
  return { max: Math.ceil(top / step - 1e-9) * step, step };
}

function tickLabel(v: number, step: number): string {
  const decimals = step >= 1 ? 0 : Math.min(6, Math.ceil(-Math.log10(step) - 1e-9));
  return formatNumber(v, decimals);
}

const r1 = (n: number): string => (Math.round(n * 10) / 10).toString();

export function lineChart(spec: ChartSpec): string {
  const pts = spec.series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  const xs = axisMax(pts.map(([x]) => x));
  const ys = axisMax([...pts.map(([, y]) => y), ...(spec.references ?? []).map((r) => r.y)]);
  const pw = W - M.left - M.right;
  const ph = H - M.top - M.bottom;
  const sx = (x: number): number => M.left + (x / xs.max) * pw;
  const sy = (y: number): number => M.top + ph - (y / ys.max) * ph;
  const out: string[] = [];
  out.push(
    `<svg class="chart" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${escapeHtml(spec.title)}">`,
    `<text class="title" x="${M.left}" y="20">${escapeHtml(spec.title)}</text>`,
  );
  // Grid and ticks.
  for (let i = 0; i * ys.step <= ys.max + ys.step * 1e-9; i++) {
    const v = i * ys.step;
    const y = r1(sy(v));
    out.push(
      `<line class="grid" x1="${M.left}" y1="${y}" x2="${W - M.right}" y2="${y}"/>`,
      `<text class="tick" x="${M.left - 6}" y="${y}" text-anchor="end" dominant-baseline="middle">${escapeHtml(tickLabel(v, ys.step))}</text>`,
    );
  }
  for (let i = 0; i * xs.step <= xs.max + xs.step * 1e-9; i++) {
    const v = i * xs.step;
    const x = r1(sx(v));
    out.push(
      `<line class="axis" x1="${x}" y1="${M.top + ph}" x2="${x}" y2="${M.top + ph + 5}"/>`,
      `<text class="tick" x="${x}" y="${M.top + ph + 18}" text-anchor="middle">${escapeHtml(tickLabel(v, xs.step))}</text>`,
    );
  }
  out.push(
    `<line class="axis" x1="${M.left}" y1="${M.top}" x2="${M.left}" y2="${M.top + ph}"/>`,
    `<line class="axis" x1="${M.left}" y1="${M.top + ph}" x2="${W - M.right}" y2="${M.top + ph}"/>`,
    `<text class="label" x="${M.left + pw / 2}" y="${H - 8}" text-anchor="middle">${escapeHtml(spec.xLabel)}</text>`,
    `<text class="label" transform="translate(16 ${M.top + ph / 2}) rotate(-90)" text-anchor="middle">${escapeHtml(spec.yLabel)}</text>`,
  );
  for (const ref of spec.references ?? []) {
    if (!Number.isFinite(ref.y)) continue;
    const y = r1(sy(ref.y));
    out.push(`<line x1="${M.left}" y1="${y}" x2="${W - M.right}" y2="${y}" stroke="${ref.color}" stroke-dasharray="6 4"/>`);
  }
  for (const s of spec.series) {
    const good = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
    if (good.length > 1) {
      const d = good.map(([x, y]) => `${r1(sx(x))},${r1(sy(y))}`).join(' ');
      out.push(`<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${d}"/>`);
    }
    for (const [x, y] of good) {
      out.push(
        `<circle cx="${r1(sx(x))}" cy="${r1(sy(y))}" r="3.5" fill="${s.color}"><title>${escapeHtml(
          `${s.name}: ${formatNumber(y, y < 100 ? 2 : 0)} at ${formatNumber(x)} ${spec.xLabel}`,
        )}</title></circle>`,
      );
    }
  }
  // Legend, one row under the title.
  const entries = [
    ...spec.series.map((s) => ({ name: s.name, color: s.color, dashed: false })),
    ...(spec.references ?? []).map((r) => ({ name: r.name, color: r.color, dashed: true })),
  ];
  let lx = M.left;
  for (const e of entries) {
    out.push(
      `<line x1="${lx}" y1="38" x2="${lx + 18}" y2="38" stroke="${e.color}" stroke-width="2"${e.dashed ? ' stroke-dasharray="6 4"' : ''}/>`,
      `<text class="legend" x="${lx + 24}" y="38" dominant-baseline="middle">${escapeHtml(e.name)}</text>`,
    );
    lx += 24 + Math.max(60, e.name.length * 7) + 16;
  }
  out.push('</svg>');
  return out.join('\n');
}

const COLORS = { throughput: '#2563eb', ceiling: '#6b7280', p50: '#16a34a', p99: '#dc2626' };

export function scenarioCharts(report: LoadTestReport, scenario: string): string {
  const steps = stepsOf(report.steps, scenario);
  if (steps.length === 0) return '';
  const ceiling = ceilingFor(report.ceilings, scenario);
  const throughput = lineChart({
    title: `Throughput: ${scenario}`,
    xLabel: 'connections',
    yLabel: 'signatures/s',
    series: [{ name: 'sig/s', color: COLORS.throughput, points: steps.map((s) => [s.connections, s.signaturesPerSec]) }],
    ...(ceiling && ceiling.combinedOpsPerSec > 0 ? { references: [{ name: 'combined ceiling', y: ceiling.combinedOpsPerSec, color: COLORS.ceiling }] } : {}),
  });
  const latency = lineChart({
    title: `Latency: ${scenario}`,
    xLabel: 'connections',
    yLabel: 'ms',
    series: [
      { name: 'p50', color: COLORS.p50, points: steps.map((s) => [s.connections, s.latency.p50]) },
      { name: 'p99', color: COLORS.p99, points: steps.map((s) => [s.connections, s.latency.p99]) },
    ],
  });
  return `<div class="charts">\n${throughput}\n${latency}\n</div>`;
}

// ---- page ----

function htmlTable(t: Table): string {
  const cls = (i: number): string => (t.align[i] === 'right' ? ' class="num"' : '');
  const head = t.headers.map((h, i) => `<th${cls(i)}>${escapeHtml(h)}</th>`).join('');
  const body = t.rows.map((row) => `<tr>${row.map((c, i) => `<td${cls(i)}>${escapeHtml(c)}</td>`).join('')}</tr>`).join('\n');
  const caption = t.caption ? `<caption>${escapeHtml(t.caption)}</caption>` : '';
  return `<table>${caption}<thead><tr>${head}</tr></thead>\n<tbody>\n${body}\n</tbody></table>`;
}

function htmlBlock(report: LoadTestReport, b: Block): string {
  switch (b.kind) {
    case 'facts':
      return `<dl class="facts">${b.facts
        .map((f) => `<dt>${escapeHtml(f.label)}</dt><dd>${f.code ? `<code>${escapeHtml(f.value)}</code>` : escapeHtml(f.value)}</dd>`)
        .join('')}</dl>`;
    case 'paragraph':
      return `<p>${escapeHtml(b.text)}</p>`;
    case 'warning':
      return `<p class="warning"><strong>Warning:</strong> ${escapeHtml(b.text)}</p>`;
    case 'list': {
      const tag = b.ordered ? 'ol' : 'ul';
      return `<${tag}>${b.items.map((i) => `<li>${escapeHtml(i)}</li>`).join('')}</${tag}>`;
    }
    case 'table':
      return `<div class="scroll">${htmlTable(b.table)}</div>`;
    case 'charts':
      return scenarioCharts(report, b.scenario);
  }
}

const CSS = `
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#111827;margin:0 auto;max-width:1280px;padding:16px 24px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #e5e7eb;padding-bottom:4px}
code{font:13px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#f3f4f6;padding:1px 4px;border-radius:3px;word-break:break-all}
nav a{margin-right:12px}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px}dl.facts dt{font-weight:600}dl.facts dd{margin:0}
.scroll{overflow-x:auto}
table{border-collapse:collapse;margin:8px 0 16px}caption{text-align:left;font-weight:600;padding:4px 0}
th,td{border:1px solid #e5e7eb;padding:3px 8px;white-space:nowrap}th{background:#f9fafb}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tbody tr:nth-child(even){background:#fcfcfd}
.warning{background:#fef2f2;border-left:4px solid #dc2626;padding:6px 10px}
.charts{display:flex;flex-wrap:wrap;gap:12px}
svg.chart{background:#fff;border:1px solid #e5e7eb;border-radius:4px;max-width:100%;height:auto}
svg .grid{stroke:#f0f0f0}svg .axis{stroke:#374151}
svg text{font:11px system-ui,sans-serif;fill:#374151}svg .title{font-size:13px;font-weight:600;fill:#111827}
svg .label{font-size:12px}svg .legend{font-size:12px}
`;

export function toHtml(report: LoadTestReport): string {
  const model = buildReportModel(report);
  const nav = model.sections.map((s) => `<a href="#${escapeHtml(s.id)}">${escapeHtml(s.title + (s.code === undefined ? '' : ` ${s.code}`))}</a>`).join('\n');
  const sections = model.sections.map((s) => {
    const title = `${escapeHtml(s.title)}${s.code === undefined ? '' : ` <code>${escapeHtml(s.code)}</code>`}`;
    return `<section id="${escapeHtml(s.id)}">\n<h2>${title}</h2>\n${s.blocks.map((b) => htmlBlock(report, b)).join('\n')}\n</section>`;
  });
  return [
    '<!DOCTYPE html>',
    '<html lang="en">',
    '<head>',
    '<meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    `<title>${escapeHtml(`${model.title} ${report.startedAt}`)}</title>`,
    `<style>${CSS}</style>`,
    '</head>',
    '<body>',
    `<h1>${escapeHtml(model.title)}</h1>`,
    `<nav>${nav}</nav>`,
    ...sections,
    '</body>',
    '</html>',
    '',
  ].join('\n');
}
