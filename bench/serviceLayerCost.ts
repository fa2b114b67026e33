/**
 * What the service layer costs per sign, without HTTP and without the HSM: SigningService.sign
 * (deadline, cancellation, retry, circuit breaker, the output's encoding) around a KeyManager that
 * answers at once, 64 signs in flight. The real classes, one process, no token.
 *
 *   node --import tsx bench/serviceLayerCost.ts [rounds, default 6]
 */
import type { KeyManager, SignRequest } from '../src/hsm/KeyManager.js';
import { createHsmBreaker } from '../src/resilience/hsmBreaker.js';
import { RetryBudget } from '../src/resilience/retryBudget.js';
import { SigningService } from '../src/service/SigningService.js';

const rounds = Number(process.argv[2] ?? '6');
if (!Number.isInteger(rounds) || rounds < 1) throw new Error('rounds: give a whole number of 1 or more');

const signature = Buffer.alloc(64, 1);
const keys = {
  sign: (r: SignRequest) => Promise.resolve({ name: r.name, version: 1, keySpec: 'ECC_NIST_P256' as const, signature }),
} as unknown as KeyManager;
const breaker = createHsmBreaker({ errorThresholdPercentage: 50, resetTimeoutMs: 1000, volumeThreshold: 20, rollingWindowMs: 2000 });
const service = new SigningService(keys, { breaker, breakerResetMs: 1000, budget: new RetryBudget(0.1), maxAttempts: 3, backoff: { baseMs: 10, capMs: 100 } });
const input = { keyName: 'k', algorithm: 'ECDSA_SHA_256' as const, digest: Buffer.alloc(32, 2) };

const perSign: number[] = [];
for (let r = 0; r < rounds; r++) {
  const n = 100_000;
  const start = performance.now();
  let inFlight: Promise<unknown>[] = [];
  for (let i = 0; i < n; i++) {
    inFlight.push(service.sign(input, Date.now() + 5000));
    if (inFlight.length === 64) {
      await Promise.all(inFlight);
      inFlight = [];
    }
  }
  await Promise.all(inFlight);
  perSign.push(((performance.now() - start) * 1000) / n);
}
breaker.shutdown();
console.log(`µs per sign in the service layer (HSM answering at once), ${rounds} rounds of 100,000: ${perSign.map((x) => x.toFixed(2)).join(' ')}`);
