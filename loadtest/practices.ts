/**
 * The four PKCS#11 practices the service follows, as A/B pairs from one set of measurements:
 * the evidence for "keep many operations in flight, log in once, cache handles, pool sessions".
 */
import type { PracticeMeasurements } from './directRateWorker.js';
import type { PracticeResult } from './results.js';

const ratio = (good: number, bad: number): number => (bad > 0 ? good / bad : Number.POSITIVE_INFINITY);

export function practiceResults(m: PracticeMeasurements, label: string, inFlight: number): PracticeResult[] {
  const p = (practice: string, goodLabel: string, good: number, badLabel: string, bad: number): PracticeResult => ({
    practice: `${practice} (${label})`,
    goodLabel,
    badLabel,
    goodOpsPerSec: good,
    badOpsPerSec: bad,
    ratio: ratio(good, bad),
  });
  return [
    p('operations in flight', `${inFlight} in flight (C_SignAsync)`, m.inFlight, 'one at a time', m.sequential),
    // A private key's handle dies with the logout, so the per-operation login also pays a find.
    p('login', 'one login per application', m.sequential, 'C_Login + find key + C_Logout per operation', m.loginPerOp),
    p('key handle', 'cached handle', m.sequential, 'C_FindObjects per operation', m.findPerOp),
    p('sessions', 'pooled session', m.sequential, 'C_OpenSession + C_CloseSession per operation', m.sessionPerOp),
  ];
}
