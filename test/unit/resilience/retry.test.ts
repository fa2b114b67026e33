import assert from 'node:assert/strict';
import { test } from 'node:test';
import { retry, type RetryOptions } from '../../../src/resilience/retry.js';
import { RetryBudget } from '../../../src/resilience/retryBudget.js';

class Retryable extends Error {}
class ClientError extends Error {}

/** A fake clock: sleeping advances it; nothing waits for real. */
function harness(over: Partial<RetryOptions> = {}) {
  let now = 1_000;
  const sleeps: number[] = [];
  const options: RetryOptions = {
    maxAttempts: 3,
    backoff: { baseMs: 10, capMs: 500 },
    deadline: now + 2000,
    budget: new RetryBudget(0.1, { minPerSecond: 0, now: () => now }),
    isRetryable: (e) => e instanceof Retryable,
    random: () => 0.5,
    now: () => now,
    sleep: async (ms) => {
      sleeps.push(ms);
      now += ms;
    },
    ...over,
  };
  return { options, sleeps, advance: (ms: number) => (now += ms) };
}

/** An operation that always throws `make(calls)`, counting its calls. */
function alwaysFails(make: (calls: number) => Error): { calls: number; run: () => Promise<never> } {
  const op = {
    calls: 0,
    run: async (): Promise<never> => {
      op.calls++;
      throw make(op.calls);
    },
  };
  return op;
}

test('retries a retryable error with full-jitter backoff and returns the first success', async () => {
  const h = harness();
  let calls = 0;
  const result = await retry(async (attempt) => {
    calls++;
    if (attempt < 2) throw new Retryable();
    return 'signed';
  }, h.options);
  assert.equal(result, 'signed');
  assert.equal(calls, 3);
  assert.deepEqual(h.sleeps, [5, 10], 'random 0.5 of ceilings 10 and 20');
});

test('never retries a client error', async () => {
  const h = harness();
  const op = alwaysFails(() => new ClientError('bad input'));
  await assert.rejects(retry(op.run, h.options), ClientError);
  assert.equal(op.calls, 1);
  assert.deepEqual(h.sleeps, []);
});

test('stops after maxAttempts and throws the last error', async () => {
  const h = harness({ maxAttempts: 4 });
  const op = alwaysFails((calls) => new Retryable(`attempt ${calls}`));
  await assert.rejects(retry(op.run, h.options), /attempt 4/);
  assert.equal(op.calls, 4);
  assert.equal(h.sleeps.length, 3);
});

test('maxAttempts 1 means no retry at all (for when the HSM client retries itself)', async () => {
  const h = harness({ maxAttempts: 1 });
  const op = alwaysFails(() => new Retryable());
  await assert.rejects(retry(op.run, h.options));
  assert.equal(op.calls, 1);
});

test('does not start a sleep that would end past the deadline', async () => {
  const h = harness({ random: () => 0.999, maxAttempts: 10, backoff: { baseMs: 100, capMs: 1000 } });
  h.options = { ...h.options, deadline: 1_000 + 250 };
  const op = alwaysFails(() => new Retryable());
  await assert.rejects(retry(op.run, h.options));
  // Sleeps 99 then 199: the second would end at 1298 > 1250, so it is not taken.
  assert.deepEqual(h.sleeps, [99]);
  assert.equal(op.calls, 2);
});

test('an exhausted retry budget stops retries: the error goes straight to the caller', async () => {
  const budget = new RetryBudget(0, { maxTokens: 2, minPerSecond: 0 });
  const h = harness({ budget, maxAttempts: 5 });
  const op = alwaysFails(() => new Retryable());
  await assert.rejects(retry(op.run, h.options));
  assert.equal(op.calls, 3, 'two retries from the bucket');
  op.calls = 0;
  await assert.rejects(retry(op.run, h.options));
  assert.equal(op.calls, 1, 'then none');
});

test('reports each retry (for metrics and logs)', async () => {
  const seen: [number, number][] = [];
  const h = harness({ onRetry: (attempt, delay) => seen.push([attempt, delay]) });
  await retry(async (attempt) => {
    if (attempt === 0) throw new Retryable();
    return 1;
  }, h.options);
  assert.deepEqual(seen, [[1, 5]]);
});
