/**
 * `npm run loadtest -- ...`: parse, run the engine with a console attached, write the reports.
 * Exit codes: 0 done; 1 a sampled signature was wrong (the run is void) or the run failed;
 * 2 bad usage.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { parseCommandLine, UsageError, USAGE, type Command } from './cliArgs.js';
import { LoadTest } from './engine.js';
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
  return { modulePath: env.HSM_MODULE, tokenLabel: env.HSM_TOKEN_LABEL ?? 'hsm-signer', pin, keyLabels };
}

function summary(report: LoadTestReport): string[] {
  const lines: string[] = [];
  for (const t of report.targets ?? []) {
    if (t.met === undefined) continue;
    lines.push(`  target ${t.met ? 'met   ' : 'MISSED'} ${t.description}: ${formatTargetPercent(t.measured, t.threshold)} (${t.detail})`);
  }
  return lines;
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
