import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { ServiceError } from '../../../src/errors.js';
import { CKR, toHsmError } from '../../../src/hsm/errors.js';
import { breakerState, countsAgainstHsm, createHsmBreaker, throughBreaker } from '../../../src/resilience/hsmBreaker.js';

const down = () => toHsmError({ code: CKR.DEVICE_ERROR, method: 'C_Sign' });
const options = { errorThresholdPercentage: 50, resetTimeoutMs: 100, volumeThreshold: 4, rollingWindowMs: 10_000 };

test('what counts against the HSM: down, busy or refusing us; never client errors, shed load or repaired failures', () => {
  assert.equal(countsAgainstHsm(down()), true);
  assert.equal(countsAgainstHsm(toHsmError({ code: CKR.FUNCTION_FAILED, method: 'C_Sign' })), true);
  assert.equal(countsAgainstHsm(toHsmError({ code: CKR.PIN_LOCKED, method: 'C_Login' })), true);
  assert.equal(countsAgainstHsm(toHsmError({ code: CKR.MECHANISM_INVALID, method: 'C_SignInit' })), false);
  assert.equal(countsAgainstHsm(toHsmError({ code: CKR.USER_NOT_LOGGED_IN, method: 'C_SignInit' })), false);
  assert.equal(countsAgainstHsm(toHsmError({ code: CKR.OBJECT_HANDLE_INVALID, method: 'C_SignInit' })), false);
  assert.equal(countsAgainstHsm(new ServiceError('OVERLOADED', 'busy', 1)), false);
  assert.equal(countsAgainstHsm(new ServiceError('NOT_FOUND', 'no key')), false);
});

test('client errors never open the circuit', async () => {
  const b = createHsmBreaker(options);
  for (let i = 0; i < 50; i++) {
    await assert.rejects(throughBreaker(b, () => Promise.reject(toHsmError({ code: CKR.DATA_LEN_RANGE, method: 'C_Sign' })), 100));
  }
  assert.equal(breakerState(b), 'closed');
  b.shutdown();
});

test('opens on HSM failures, then fails at once with 503 HSM_UNAVAILABLE and Retry-After, without calling the HSM', async () => {
  const b = createHsmBreaker(options);
  for (let i = 0; i < 4; i++) await assert.rejects(throughBreaker(b, () => Promise.reject(down()), options.resetTimeoutMs));
  assert.equal(breakerState(b), 'open');
  let called = false;
  const started = performance.now();
  await assert.rejects(
    throughBreaker(
      b,
      async () => {
        called = true;
      },
      2500,
    ),
    (e: unknown) => e instanceof ServiceError && e.code === 'HSM_UNAVAILABLE' && e.retryAfterSeconds === 3,
  );
  assert.ok(performance.now() - started < 50);
  assert.equal(called, false);
  b.shutdown();
});

test('half-open lets a probe through; a good probe closes the circuit, a bad one opens it again', async () => {
  const b = createHsmBreaker(options);
  for (let i = 0; i < 4; i++) await assert.rejects(throughBreaker(b, () => Promise.reject(down()), 100));
  await sleep(options.resetTimeoutMs + 30);
  assert.equal(breakerState(b), 'halfOpen');
  await assert.rejects(throughBreaker(b, () => Promise.reject(down()), 100));
  assert.equal(breakerState(b), 'open');
  await sleep(options.resetTimeoutMs + 30);
  assert.equal(await throughBreaker(b, async () => 'signed', 100), 'signed');
  assert.equal(breakerState(b), 'closed');
  b.shutdown();
});

test('no rolling latency percentiles: reading the error rate on a failure does not gather and sort every latency of the window', async () => {
  const b = createHsmBreaker(options);
  for (let i = 0; i < 2000; i++) await throughBreaker(b, async () => 'signed', 100);
  await assert.rejects(throughBreaker(b, () => Promise.reject(down()), 100));
  const stats = b.stats;
  assert.equal(stats.fires, 2001);
  assert.equal(stats.failures, 1);
  // With opossum's rolling percentiles on, the statistics gather all 2,001 latencies and sort them on every failure.
  assert.equal(stats.latencyTimes.length, 0);
  assert.equal(breakerState(b), 'closed');
  b.shutdown();
});
