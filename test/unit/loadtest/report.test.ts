import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ceilingFor, combinedCeiling, efficiency, type LoadTestReport, type StepResult } from '../../../loadtest/results.js';
import { formatInt, formatMs, formatRatio, formatSignedPercent, formatTargetPercent, spreadOf } from '../../../loadtest/format.js';
import { planCapacity } from '../../../loadtest/plan.js';
import { parseReport, toJson } from '../../../loadtest/report/json.js';
import { toMarkdown } from '../../../loadtest/report/markdown.js';
import { escapeHtml, lineChart, niceStep, toHtml } from '../../../loadtest/report/html.js';
import { compareReports, relativeChange } from '../../../loadtest/report/compare.js';

const RSA = 'sign:RSA_2048:RSASSA_PKCS1_V1_5_SHA_256';
const EC = 'sign:ECC_NIST_P256:ECDSA_SHA_256';
const BATCH = 'batch64:ECC_NIST_P256:ECDSA_SHA_256';
const EVIL = '<script>alert("x")</script>';

function step(scenario: string, connections: number, sigPerSec: number, p99: number, extra: Partial<StepResult> = {}): StepResult {
  return {
    scenario,
    connections,
    durationSec: 10,
    requests: Math.round(sigPerSec * 10),
    okRequests: Math.round(sigPerSec * 10),
    signatures: Math.round(sigPerSec * 10),
    requestsPerSec: sigPerSec,
    signaturesPerSec: sigPerSec,
    latency: { p50: p99 / 3, p90: p99 / 1.5, p99, max: p99 * 2, mean: p99 / 2.5 },
    errors: {},
    verified: { sampled: 20, bad: 0 },
    ...extra,
  };
}

function fixture(): LoadTestReport {
  return {
    version: 1,
    startedAt: '2025-01-02T03:04:05.000Z',
    finishedAt: '2025-01-02T03:06:10.000Z',
    command: 'npm run loadtest -- --connections 1,50 --scenario sign:RSA_2048:RSASSA_PKCS1_V1_5_SHA_256',
    machine: {
      cpus: 8,
      cpuModel: 'Test CPU @ 3.0GHz',
      totalMemBytes: 16 * 1024 ** 3,
      node: 'v20.20.2',
      platform: 'linux x64',
      hsmModule: 'softhsm2',
      workers: 4,
      sessionsPerWorker: 8,
      hsmLatencyUs: 0,
      probe: { start: { computeMs: [34, 33, 35], memoryMs: [50, 75, 60] }, end: { computeMs: [33, 33, 33], memoryMs: [52, 52, 52] } },
    },
    target: { urls: ['http://127.0.0.1:8080'], local: true },
    ceilings: [
      { scenario: RSA, directOpsPerSec: 2000, directProcesses: 4, directInFlight: 8, httpReqPerSec: 8000, combinedOpsPerSec: combinedCeiling(2000, 8000) },
      { scenario: EC, directOpsPerSec: 6000, directProcesses: 4, directInFlight: 8, httpReqPerSec: 12000, combinedOpsPerSec: combinedCeiling(6000, 12000) },
    ],
    steps: [
      // Deliberately out of connection order: reports must sort.
      step(RSA, 50, 1234.4, 56.789, {
        errors: { '503 OVERLOADED': 10, timeout: 2 },
        requests: 12_000,
        service: { poolInUse: 32, poolWaiting: 5, breakerState: 'closed', rssBytes: [100 * 1024 * 1024, 120 * 1024 * 1024] },
      }),
      step(RSA, 1, 150.5, 7.25),
      step(EC, 1, 400, 2.5),
      step(EC, 50, 3600, 20),
      step(BATCH, 8, 4000, 30),
      step(EVIL, 8, 10, 1),
    ],
    practices: [
      { practice: 'many in flight vs one at a time', goodLabel: '32 in flight', badLabel: '1 in flight', goodOpsPerSec: 1580, badOpsPerSec: 200, ratio: 7.9 },
      {
        practice: 'one login vs login per op',
        goodLabel: 'one login',
        badLabel: 'login per op',
        goodOpsPerSec: 1500,
        badOpsPerSec: 121.5,
        ratio: 1500 / 121.5,
      },
    ],
    plan: planCapacity({ targetOpsPerSec: 5000, perHsmOpsPerSec: 1000, perInstanceOpsPerSec: 2500, bestConnectionsPerInstance: 50, scenario: RSA }),
    notes: ['softhsm2 is not a real HSM: use the ratios, not the absolute numbers.', 'a note with <b>markup</b> & ampersand'],
  };
}

test('helpers: combined ceiling, efficiency, ceiling lookup for batches', () => {
  assert.equal(combinedCeiling(1000, 1000), 500);
  assert.equal(combinedCeiling(2000, 8000), 1600);
  assert.equal(combinedCeiling(0, 8000), 0);
  assert.equal(combinedCeiling(1000, Infinity), 1000);
  const r = fixture();
  const rsa = r.steps[0] as StepResult;
  assert.equal(efficiency(rsa, ceilingFor(r.ceilings, RSA)), 1234.4 / 1600);
  assert.equal(efficiency(rsa, undefined), undefined);
  assert.equal(ceilingFor(r.ceilings, BATCH)?.scenario, EC);
  assert.equal(ceilingFor(r.ceilings, 'verify:ECC_NIST_P256:ECDSA_SHA_256'), undefined);
  assert.equal(ceilingFor(r.ceilings, 'mix:80sign/20verify'), undefined);
});

test('spreadOf: (slowest − fastest) ÷ median, in any order', () => {
  assert.equal(spreadOf([60, 50, 75]), 25 / 60);
  assert.equal(spreadOf([10, 10]), 0);
  assert.equal(spreadOf([40, 10, 20, 30]), 30 / 20, 'nearest-rank median of an even count is the lower middle');
  assert.ok(Number.isNaN(spreadOf([])));
});

test('formatting is locale-free', () => {
  assert.equal(formatInt(1234567.4), '1,234,567');
  assert.equal(formatInt(-1234), '-1,234');
  assert.equal(formatMs(1234.567), '1,234.57');
  assert.equal(formatRatio(7.9), '7.9x');
  assert.equal(formatRatio(12.345), '12.35x');
  assert.equal(formatRatio(8), '8.0x');
  assert.equal(formatSignedPercent(0.1), '+10.0%');
  assert.equal(formatSignedPercent(-0.25), '-25.0%');
  assert.equal(formatSignedPercent(0), '0.0%');
  assert.equal(formatSignedPercent(undefined), '–');
});

test('a target just short of its threshold does not print as the threshold', () => {
  assert.equal(formatTargetPercent(0.8496561597820921, 0.85), '84.97%', 'a miss never reads "85.0%"');
  assert.equal(formatTargetPercent(0.84996, 0.85), '84.996%', 'nor "85.00%"');
  assert.equal(formatTargetPercent(0.8500004, 0.85), '85.00004%');
  assert.equal(formatTargetPercent(0.85004, 0.85), '85.004%');
  assert.equal(formatTargetPercent(0.85, 0.85), '85.0%');
  assert.equal(formatTargetPercent(0.871, 0.85), '87.1%');
  assert.equal(formatTargetPercent(0.7995, 0.8), '79.95%');
  assert.equal(formatTargetPercent(undefined, 0.85), '–');
});

test('markdown: header, step rows with the right numbers in connection order, tables, plan, notes', () => {
  const md = toMarkdown(fixture());
  assert.match(md, /^# hsm-signer load test\n/);
  assert.ok(md.includes('- **Command:** `npm run loadtest -- --connections 1,50'), md);
  assert.ok(md.includes('- **CPU:** 8 × Test CPU @ 3.0GHz'));
  assert.ok(md.includes('- **Finished:** 2025-01-02T03:06:10.000Z (2 min 5 s)'));
  // Spread = (slowest − fastest) ÷ median: (75 − 50) ÷ 60 = 42%, (35 − 33) ÷ 34 = 6%.
  assert.ok(
    md.includes(
      '- **Machine steadiness:** start: memory-bound loop 50 to 75 ms (median 60, spread 42%), compute loop 33 to 35 ms (median 34, spread 6%); end: memory-bound loop 52 to 52 ms (median 52, spread 0%), compute loop 33 to 33 ms (median 33, spread 0%)',
    ),
    md,
  );
  assert.ok(md.includes('## Scenario `sign:RSA_2048:RSASSA_PKCS1_V1_5_SHA_256`'));
  // 1,234.4 sig/s vs a 1,600 ceiling = 77.2%; errors 12 of 12,000 requests.
  const row50 = '| 50 | 1,234 | 1,234 | 18.93 | 37.86 | 56.79 | 113.58 | 12 (0.10%): 503 OVERLOADED 10, timeout 2 | 0/20 | 77.2% | 32/5 | closed | 120.0 MiB |';
  const row1 = '| 1 | 151 | 151 | 2.42 | 4.83 | 7.25 | 14.50 | 0 | 0/20 | 9.4% | – | – | – |';
  assert.ok(md.includes(row50), md);
  assert.ok(md.includes(row1), md);
  assert.ok(md.indexOf(row1) < md.indexOf(row50), 'steps sorted by connections');
  // Batch is judged against the EC sign ceiling: 4,000 / 4,000 = 100%.
  assert.ok(md.includes('| 8 | 4,000 | 4,000 | 10.00 | 20.00 | 30.00 | 60.00 | 0 | 0/20 | 100.0% |'), md);
  // Ceilings, practices.
  const expected = [
    '| sign:RSA_2048:RSASSA_PKCS1_V1_5_SHA_256 | 2,000 | 4 × 8 | 8,000 | 1,600 |',
    '| many in flight vs one at a time | 32 in flight | 1,580 | 1 in flight | 200 | 7.9x |',
    '| one login vs login per op | one login | 1,500 | login per op | 122 | 12.35x |',
    // Plan: sentences, numbers, the AWS table.
    '## Capacity plan `sign:RSA_2048:RSASSA_PKCS1_V1_5_SHA_256`',
    'T = 11 (11 − 4 = 7)',
    '| total | 11 | 5 |',
    '| per zone | 4 + 4 + 3 | 2 + 2 + 1 |',
    '| headroom after a zone loss | +40.0% |',
    'AWS CloudHSM documentation, performance section',
    '| hsm2m.medium | ECC_NIST_P256 | 2 | 3,000 | 1,500 |',
    '## Notes',
    '- softhsm2 is not a real HSM',
  ];
  for (const text of expected) assert.ok(md.includes(text));
});

test('markdown escapes pipes in cells', () => {
  const r = fixture();
  r.steps = [step('mix:a|b', 1, 10, 1, { errors: { 'non2xx 500|x': 1 } })];
  const md = toMarkdown(r);
  assert.ok(md.includes('non2xx 500\\|x 1'), md);
});

test('html: self-contained, one svg per chart, everything escaped', () => {
  const r = fixture();
  const html = toHtml(r);
  assert.match(html, /^<!DOCTYPE html>/);
  const scenarios = new Set(r.steps.map((s) => s.scenario)).size;
  assert.equal(html.match(/<svg/g)?.length, scenarios * 2, 'a throughput and a latency chart per scenario');
  assert.equal((html.match(/<polyline/g) ?? []).length >= 4, true);
  assert.ok(html.includes('p99') && html.includes('sig/s') && html.includes('combined ceiling'));
  assert.ok(!/<script/i.test(html), 'no script element, not even from a scenario name');
  assert.ok(html.includes('&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;'));
  assert.ok(html.includes('a note with &lt;b&gt;markup&lt;/b&gt; &amp; ampersand'));
  assert.ok(!/src\s*=\s*["']?https?:/i.test(html), 'no external src');
  assert.ok(!/href\s*=\s*["']?https?:/i.test(html), 'no external href');
  assert.ok(!/url\(\s*["']?https?:/i.test(html), 'no external CSS url()');
  assert.ok(!/@import/i.test(html));
  // The same table rows as the Markdown.
  assert.ok(html.includes('<td class="num">77.2%</td>'));
  assert.ok(html.includes('<td>12 (0.10%): 503 OVERLOADED 10, timeout 2</td>'));
  assert.ok(html.includes('<td class="num">7.9x</td>'));
  assert.ok(html.includes('<td class="num">4 + 4 + 3</td>'));
});

test('html chart: degenerate data still draws axes without NaN', () => {
  const svg = lineChart({ title: 't', xLabel: 'x', yLabel: 'y', series: [{ name: 's', color: '#000', points: [[0, 0]] }] });
  assert.ok(svg.startsWith('<svg') && svg.endsWith('</svg>'));
  assert.ok(!svg.includes('NaN') && !svg.includes('Infinity'));
  const html = toHtml({ ...fixture(), steps: [step(RSA, 1, Number.NaN, Number.NaN)] });
  assert.ok(!html.includes('NaN'));
  assert.equal(niceStep(1000), 200);
  assert.equal(niceStep(37), 5);
  assert.equal(escapeHtml(`<a href='x'>&"`), '&lt;a href=&#39;x&#39;&gt;&amp;&quot;');
});

test('json: pretty, stable, round-trips; parseReport rejects other files', () => {
  const r = fixture();
  const text = toJson(r);
  assert.ok(text.startsWith('{\n  "version": 1,\n  "startedAt"'));
  assert.ok(text.endsWith('}\n'));
  assert.equal(toJson(r), text);
  assert.deepEqual(parseReport(text), JSON.parse(text));
  assert.throws(() => parseReport('{"version":2}', 'old.json'), /old\.json: unsupported report version 2/);
  assert.throws(() => parseReport('nope'), /not JSON/);
  assert.throws(() => parseReport(JSON.stringify({ ...r, steps: [{}] })), /steps\[0\]/);
});

test('compare: change in % per common step, steps only in one, machine differences', () => {
  const oldR = fixture();
  const newR = fixture();
  newR.machine = { ...newR.machine, workers: 8 };
  newR.steps = [
    step(RSA, 1, 165.55, 7.25), // +10.0% sig/s, p99 unchanged
    step(RSA, 50, 1234.4 * 0.5, 56.789 * 2), // -50.0%, +100.0%
    step(EC, 100, 5000, 40), // only in new
  ];
  const text = compareReports(oldR, newR);
  const line = (scenario: string, conns: number): string => text.split('\n').find((l) => l.startsWith(scenario) && l.split(/\s+/)[1] === String(conns)) ?? '';
  const l1 = line(RSA, 1);
  assert.match(l1, /151\s+166\s+\+10\.0%\s+7\.25\s+7\.25\s+0\.0%$/, text);
  const l50 = line(RSA, 50);
  assert.match(l50, /1,234\s+617\s+-50\.0%\s+56\.79\s+113\.58\s+\+100\.0%$/, text);
  assert.ok(text.includes('Only in old:\n  sign:ECC_NIST_P256:ECDSA_SHA_256 @ 1 connections'), text);
  // Start and end together: 50 52 52 52 60 75, median 52 (nearest rank), spread (75 − 50) ÷ 52 = 48%.
  assert.ok(
    text.includes('Machine steadiness (memory-bound probe, start and end together): old median 52 ms, spread 48%; new median 52 ms, spread 48%.'),
    text,
  );
  assert.ok(text.includes('Only in new:\n  sign:ECC_NIST_P256:ECDSA_SHA_256 @ 100 connections: 5,000 sig/s, p99 40.00 ms'), text);
  assert.ok(text.includes('workers: 4 -> 8'));
  const header = text.split('\n').find((l) => l.startsWith('scenario')) ?? '';
  assert.ok(header.includes('old sig/s') && header.includes('p99 Δ'));
  assert.ok(!text.includes('\x1b'), 'plain text, no ANSI escapes');
  assert.equal(relativeChange(0, 0), 0);
  assert.equal(relativeChange(0, 5), undefined);
  assert.ok(Math.abs((relativeChange(100, 110) ?? Number.NaN) - 0.1) < 1e-12);
});
