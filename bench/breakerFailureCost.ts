/**
 * What one counted HSM failure costs the event loop in the circuit breaker, after `calls`
 * successful calls in its window: the service's breaker (counts only) against opossum's default
 * (every call's latency kept and sorted on each failure). Pure JS, no HSM.
 *
 *   node --import tsx bench/breakerFailureCost.ts [calls in the window, default 6000]
 */
import CircuitBreaker from 'opossum';
import { CKR, toHsmError } from '../src/hsm/errors.js';
import { createHsmBreaker, type HsmBreaker } from '../src/resilience/hsmBreaker.js';

const calls = Number(process.argv[2] ?? '6000');
// 100 failures among fewer than ~1,000 calls open the circuit (50%), and the loop would time its fast rejections instead.
if (!(calls >= 1000)) throw new Error('calls in the window: give 1,000 or more');
const options = { errorThresholdPercentage: 50, resetTimeoutMs: 2000, volumeThreshold: 10, rollingWindowMs: 2000 };
const failure = () => Promise.reject(toHsmError({ code: CKR.DEVICE_ERROR, method: 'C_Sign' }));

async function failureCostUs(b: HsmBreaker): Promise<number> {
  for (let i = 0; i < calls; i++) await b.fire(() => Promise.resolve());
  const failures = 100;
  const start = process.hrtime.bigint();
  for (let i = 0; i < failures; i++) await b.fire(failure).catch(() => undefined);
  const us = Number(process.hrtime.bigint() - start) / failures / 1000;
  b.shutdown();
  return us;
}

const service = await failureCostUs(createHsmBreaker(options));
const opossumDefaults = await failureCostUs(
  new CircuitBreaker((op: () => Promise<unknown>) => op(), {
    timeout: false,
    errorThresholdPercentage: options.errorThresholdPercentage,
    resetTimeout: options.resetTimeoutMs,
    volumeThreshold: options.volumeThreshold,
    rollingCountTimeout: options.rollingWindowMs,
    rollingCountBuckets: 10,
  }),
);
console.log(
  `${calls} calls in the window: ${service.toFixed(0)} µs per counted failure (service breaker), ${opossumDefaults.toFixed(0)} µs with opossum's rolling percentiles`,
);
