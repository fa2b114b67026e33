/**
 * `npm run loadtest -- ...`: parse, run the engine with a console attached, write the reports.
 * Exit codes: 0 done; 1 a sampled signature was wrong (the run is void) or the run failed;
 * 2 bad usage.
 */
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { parseCommandLine, UsageError, USAGE, type Command } from './cliArgs.js';
import { LoadTest } from './engine.js';
import { MergeError, mergeGeneratorResults } from './merge.js';
import type { ExternalHsm } from './options.js';
import { attachConsole } from './progress.js';
import { compareReports } from './report/compare.js';
import { parseReport, toJson } from './report/json.js';
import { toHtml } from './report/html.js';
import { toMarkdown } from './report/markdown.js';
import type { LoadTestReport } from './results.js';
import { formatTargetPercent } from './format.js';
import { evaluateTargets } from './targets.js';
import type { KeySpec } from '../src/crypto/algorithms.js';

function writeReports(report: LoadTestReport, outDir: string): string[] {
  mkdirSync(outDir, { recursive: true });
  const files: Array<[string, string]> = [
    ['report.json', toJson(report)],
    ['report.md', toMarkdown(report)],
    ['report.html', toHtml(report)],
  ];
  for (const [name, text] of files) writeFileSync(join(outDir, name), text);
  return files.map(([name]) => join(outDir, name));
}

function readReport(path: string): LoadTestReport {
  return parseReport(readFileSync(path, 'utf8'), path);
}

function externalHsm(env: NodeJS.ProcessEnv, keyLabels: Partial<Record<KeySpec, string>>): ExternalHsm | undefined {
  if (!env.HSM_MODULE) return undefined;
  const pin = env.HSM_PIN ?? (env.HSM_PIN_FILE ? readFileSync(env.HSM_PIN_FILE, 'utf8').replace(/\r?\n$/, '') : undefined);
  if (!pin) throw new UsageError('HSM_MODULE is set: also set HSM_PIN or HSM_PIN_FILE (and HSM_TOKEN_LABEL)');
  const slot = env.HSM_SLOT !== undefined ? Number(env.HSM_SLOT) : undefined;
  if (slot !== undefined && !(Number.isSafeInteger(slot) && slot >= 0))
    throw new UsageError('HSM_SLOT: must be an integer >= 0 (an index in the list of slots with a token)');
  return { modulePath: env.HSM_MODULE, tokenLabel: env.HSM_TOKEN_LABEL ?? 'hsm-signer', ...(slot !== undefined ? { slotIndex: slot } : {}), pin, keyLabels };
}

function summary(report: LoadTestReport): string[] {
  const lines: string[] = [];
  for (const t of report.targets ?? []) {
    if (t.met === undefined) continue;
    lines.push(`  target ${t.met ? 'met   ' : 'MISSED'} ${t.description}: ${formatTargetPercent(t.measured, t.threshold)} (${t.detail})`);
  }
  return lines;
}

/**
 * `merge DIR...`: the generators' report.json files added up into one report in --out. A wrong or
 * mismatched input fails with the file and the field; exit code 2 like any bad usage.
 */
function runMerge(command: Extract<Command, { kind: 'merge' }>): number {
  const inputs = command.paths.map((p) => {
    const file = statSync(p, { throwIfNoEntry: false })?.isDirectory() ? join(p, 'report.json') : p;
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      throw new UsageError(`merge: cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    try {
      return { source: file, report: parseReport(text, file) };
    } catch (e) {
      throw new UsageError(`merge: ${(e as Error).message}`);
    }
  });
  let report: LoadTestReport;
  try {
    report = mergeGeneratorResults(inputs, { command: command.command, ...(command.plan ? { plan: command.plan } : {}) });
  } catch (e) {
    if (e instanceof MergeError) throw new UsageError(e.message);
    throw e;
  }
  const files = writeReports(report, resolve(command.outDir));
  for (const s of report.steps) {
    const l = s.latency;
    process.stderr.write(
      `  ${s.scenario} @ ${s.connections}: ${s.signaturesPerSec.toFixed(1)} sig/s, p50 ${l.p50} ms, p90 ${l.p90} ms, p99 ${l.p99} ms, max ${l.max} ms\n`,
    );
  }
  process.stderr.write(`${summary(report).join('\n')}${summary(report).length ? '\n' : ''}reports: ${files.join(', ')}\n`);
  return 0;
}

async function main(command: Command): Promise<number> {
  if (command.kind === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  if (command.kind === 'render') {
    // The reporters are pure functions of report.json: a report can be re-rendered (and its
    // targets re-judged with the current definitions) without measuring again.
    const report = readReport(command.path);
    report.targets = evaluateTargets(report);
    const files = writeReports(report, dirname(resolve(command.path)));
    process.stderr.write(`${summary(report).join('\n')}\nreports: ${files.join(', ')}\n`);
    return 0;
  }
  if (command.kind === 'merge') return runMerge(command);
  if (command.kind === 'compare') {
    process.stdout.write(compareReports(readReport(command.oldPath), readReport(command.newPath)));
    return 0;
  }
  // Read the old report first: a typo should fail before a long run, not after.
  const old = command.kind === 'run' && command.comparePath ? readReport(command.comparePath) : undefined;
  const options =
    command.kind === 'hsm'
      ? (() => {
          const ext = externalHsm(process.env, command.keyLabels);
          return ext ? { ...command.options, externalHsm: ext } : command.options;
        })()
      : command.options;
  const test = new LoadTest(options);
  attachConsole(test);
  const report = command.kind === 'hsm' ? await test.runHsm(command) : await test.run();
  const files = writeReports(report, resolve(command.outDir));
  process.stderr.write(`${summary(report).join('\n')}${summary(report).length ? '\n' : ''}`);
  process.stderr.write(`reports: ${files.join(', ')}\n`);
  if (old) {
    const text = compareReports(old, report);
    writeFileSync(join(resolve(command.outDir), 'compare.txt'), text);
    process.stdout.write(text);
  }
  if (test.badSignatures > 0) {
    process.stderr.write(
      `\n!! FAILED: ${test.badSignatures} sampled signature(s) did not verify against the key's public key.\n` +
        '!! The service returned wrong signatures under load; its throughput numbers are void.\n',
    );
    return 1;
  }
  return 0;
}

try {
  process.exitCode = await main(parseCommandLine(process.argv.slice(2)));
} catch (e) {
  if (e instanceof UsageError) {
    process.stderr.write(`loadtest: ${e.message}\n\n${USAGE}`);
    process.exitCode = 2;
  } else {
    process.stderr.write(`loadtest: ${(e as Error).stack ?? String(e)}\n`);
    process.exitCode = 1;
  }
}
