import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RetryBudget } from '../../../src/resilience/retryBudget.js';

test('a burst of retries is allowed up to the bucket, then none until traffic pays for more', () => {
  let now = 0;
  const b = new RetryBudget(0.1, { maxTokens: 10, minPerSecond: 0, now: () => now });
  for (let i = 0; i < 10; i++) assert.equal(b.tryRetry(), true, `retry ${i}`);
  assert.equal(b.tryRetry(), false, 'exhausted');
  // Each request deposits 10% of a retry: 10 requests buy one.
  for (let i = 0; i < 9; i++) b.onRequest();
  assert.equal(b.tryRetry(), false, 'nine requests are not enough');
  b.onRequest();
  assert.equal(b.tryRetry(), true, 'the tenth is');
  assert.equal(b.tryRetry(), false);
  now += 60_000;
  assert.equal(b.tryRetry(), false, 'time alone buys nothing without a floor');
});

test('over time retries settle at the configured share of traffic: a dead HSM is not hammered', () => {
  let now = 0;
  const b = new RetryBudget(0.1, { maxTokens: 10, minPerSecond: 0, now: () => now });
  let requests = 0;
  let retries = 0;
  // Every attempt fails and every caller would retry twice, forever.
  for (let i = 0; i < 10_000; i++) {
    b.onRequest();
    requests++;
    for (let r = 0; r < 2 && b.tryRetry(); r++) retries++;
    now += 1;
  }
  assert.ok(retries <= requests * 0.1 + 10, `${retries} retries for ${requests} requests`);
  assert.ok(retries >= requests * 0.1 - 1);
});

test('a small floor of retries per second survives low traffic', () => {
  let now = 0;
  const b = new RetryBudget(0.1, { maxTokens: 10, minPerSecond: 5, now: () => now });
  for (let i = 0; i < 10; i++) b.tryRetry();
  assert.equal(b.tryRetry(), false);
  now += 200; // 5 per second: one more after 200 ms
  assert.equal(b.tryRetry(), true);
  assert.equal(b.tryRetry(), false);
  now += 60_000;
  assert.equal(b.available, 10, 'never more than the bucket');
});

test('a ratio of 0 and no floor means no retries at all once the burst is spent', () => {
  const b = new RetryBudget(0, { maxTokens: 0, minPerSecond: 0 });
  b.onRequest();
  assert.equal(b.tryRetry(), false);
});
