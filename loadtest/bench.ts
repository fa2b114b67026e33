/**
 * `npm run bench`: one short fixed run - RSA_2048 and ECC_NIST_P256 signing at 64 concurrent
 * callers through HTTP - printed beside the direct in-process PKCS#11 rate on the same token,
 * measured in the same run. Always the same settings (DEFAULTS.bench), so two outputs compare.
 * The full report goes to reports/bench/.
 */
import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import { mkdirSync, writeFileSync } from 'node:fs';
import { DEFAULTS } from './defaults.js';
import { LoadTest } from './engine.js';
import { attachConsole } from './progress.js';
import { benchTable } from './report/bench.js';
import { toHtml } from './report/html.js';
import { toJson } from './report/json.js';
import { toMarkdown } from './report/markdown.js';

const b = DEFAULTS.bench;

const test = new LoadTest({
  command: 'npm run bench',
  urls: [],
  scenarios: [...b.scenarios],
  connections: [b.connections],
  durationSec: b.durationSec,
  warmupSec: b.warmupSec,
  sampleRate: DEFAULTS.sampleRate,
  timeoutSec: DEFAULTS.requestTimeoutSec,
  workers: availableParallelism(),
  ceilings: true,
  ceilingDurationSec: 3,
  ceilingConnections: b.connections,
  directInFlight: [...DEFAULTS.directInFlight],
  directThreadpool: DEFAULTS.directThreadpool,
  tokenDir: DEFAULTS.tokenDir,
  tokenLabel: DEFAULTS.tokenLabel,
  probeIntervalMs: DEFAULTS.probeIntervalMs,
});
attachConsole(test);
try {
  const report = await test.run();
  const out = resolve(DEFAULTS.outDir, 'bench');
  mkdirSync(out, { recursive: true });
  writeFileSync(resolve(out, 'report.json'), toJson(report));
  writeFileSync(resolve(out, 'report.md'), toMarkdown(report));
  writeFileSync(resolve(out, 'report.html'), toHtml(report));
  process.stdout.write(`\n${benchTable(report)}\n\nfull report: ${out}/report.md\n`);
  if (test.badSignatures > 0) {
    process.stderr.write(`!! FAILED: ${test.badSignatures} sampled signature(s) did not verify\n`);
    process.exitCode = 1;
  }
} catch (e) {
  process.stderr.write(`bench: ${(e as Error).stack ?? String(e)}\n`);
  process.exitCode = 1;
}
