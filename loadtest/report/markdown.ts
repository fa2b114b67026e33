/** The report model rendered as Markdown (report.md). */
import type { LoadTestReport } from '../results.js';
import { buildReportModel, type Block, type Table } from './model.js';

/** A code span that survives backticks in the text (CommonMark: use a longer fence). */
function mdCode(text: string): string {
  const runs = text.match(/`+/g) ?? [];
  const fence = '`'.repeat(Math.max(0, ...runs.map((r) => r.length)) + 1);
  const pad = text.startsWith('`') || text.endsWith('`') ? ' ' : '';
  return `${fence}${pad}${text}${pad}${fence}`;
}

const oneLine = (s: string): string => s.replace(/\r?\n/g, ' ');
const mdCell = (s: string): string => oneLine(s).replace(/\\/g, '\\\\').replace(/\|/g, '\\|');

export function markdownTable(t: Table): string {
  const lines: string[] = [];
  if (t.caption) lines.push(`**${oneLine(t.caption)}**`, '');
  const headers = t.headers.map((h) => (h === '' ? ' ' : mdCell(h)));
  lines.push(`| ${headers.join(' | ')} |`);
  lines.push(`|${t.align.map((a) => (a === 'right' ? '---:' : ':---')).join('|')}|`);
  for (const row of t.rows) lines.push(`| ${row.map(mdCell).join(' | ')} |`);
  return lines.join('\n');
}

function markdownBlock(b: Block): string | undefined {
  switch (b.kind) {
    case 'facts':
      return b.facts.map((f) => `- **${f.label}:** ${f.code ? mdCode(oneLine(f.value)) : oneLine(f.value)}`).join('\n');
    case 'paragraph':
      return oneLine(b.text);
    case 'warning':
      return `> **Warning:** ${oneLine(b.text)}`;
    case 'list':
      return b.items.map((item, i) => `${b.ordered ? `${i + 1}.` : '-'} ${oneLine(item)}`).join('\n');
    case 'table':
      return markdownTable(b.table);
    case 'charts':
      return undefined;
  }
}

export function toMarkdown(report: LoadTestReport): string {
  const model = buildReportModel(report);
  const out: string[] = [`# ${model.title}`];
  for (const section of model.sections) {
    out.push(`## ${section.title}${section.code === undefined ? '' : ` ${mdCode(oneLine(section.code))}`}`);
    for (const block of section.blocks) {
      const text = markdownBlock(block);
      if (text !== undefined && text !== '') out.push(text);
    }
  }
  return `${out.join('\n\n')}\n`;
}
