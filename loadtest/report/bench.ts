/** The small table `npm run bench` prints: HTTP sign/s beside the direct PKCS#11 rate of the same run. */
import { textTable } from './compare.js';
import { ceilingFor, efficiency, type LoadTestReport } from '../results.js';
import { formatMs, formatPercent, formatRate, NOT_AVAILABLE } from '../format.js';

export function benchTable(report: LoadTestReport): string {
  const rows = report.steps.map((s) => {
    const c = ceilingFor(report.ceilings, s.scenario);
    return [
      s.scenario,
      String(s.connections),
      formatRate(s.signaturesPerSec),
      formatMs(s.latency.p99),
      c ? formatRate(c.directOpsPerSec) : NOT_AVAILABLE,
      c ? formatPercent(s.signaturesPerSec / c.directOpsPerSec) : NOT_AVAILABLE,
      c ? formatRate(c.combinedOpsPerSec) : NOT_AVAILABLE,
      formatPercent(efficiency(s, c)),
      `${s.verified.bad}/${s.verified.sampled}`,
    ];
  });
  return textTable(
    ['scenario', 'conns', 'HTTP sig/s', 'p99 ms', 'direct PKCS#11 ops/s', 'HTTP/direct', 'combined ceiling', 'efficiency', 'bad/verified'],
    [false, true, true, true, true, true, true, true, true],
    rows,
  );
}
