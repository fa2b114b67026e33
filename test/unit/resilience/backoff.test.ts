import assert from 'node:assert/strict';
import { test } from 'node:test';
import { backoffCeiling, fullJitterBackoff } from '../../../src/resilience/backoff.js';

const o = { baseMs: 10, capMs: 500 };

test('the ceiling doubles per attempt from the base and stops at the cap', () => {
  assert.deepEqual(
    [0, 1, 2, 3, 4, 5, 6, 7].map((a) => backoffCeiling(a, o)),
    [10, 20, 40, 80, 160, 320, 500, 500],
  );
  // No overflow to Infinity or NaN however far the attempts go.
  assert.equal(backoffCeiling(10_000, o), 500);
});

test('full jitter: sleep = random(0, min(cap, base * 2^attempt)), bounds included', () => {
  for (let attempt = 0; attempt < 12; attempt++) {
    const ceiling = backoffCeiling(attempt, o);
    assert.equal(
      fullJitterBackoff(attempt, o, () => 0),
      0,
      'random 0 sleeps not at all',
    );
    assert.equal(
      fullJitterBackoff(attempt, o, () => 0.5),
      Math.floor(ceiling / 2),
    );
    // Math.random() < 1, so the ceiling itself is never reached.
    assert.equal(
      fullJitterBackoff(attempt, o, () => 0.999999),
      ceiling - 1,
    );
  }
});

test('full jitter spreads sleeps over the whole range (no two callers in lock-step)', () => {
  let seed = 42;
  const random = (): number => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31;
  };
  const sleeps = Array.from({ length: 2000 }, () => fullJitterBackoff(3, o, random));
  assert.ok(Math.min(...sleeps) >= 0 && Math.max(...sleeps) < 80);
  const mean = sleeps.reduce((a, b) => a + b, 0) / sleeps.length;
  assert.ok(Math.abs(mean - 40) < 4, `mean ${mean} is about half the ceiling`);
  assert.ok(new Set(sleeps).size > 60, 'many distinct values');
});
