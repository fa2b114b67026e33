import assert from 'node:assert/strict';
import { test } from 'node:test';
import { jsonDepthExceeds } from '../../../src/http/jsonDepth.js';

const deep = (n: number): string => '['.repeat(n) + ']'.repeat(n);
const exceeds = (text: string, max: number): boolean => jsonDepthExceeds(Buffer.from(text, 'utf8'), max);

test('depth: arrays and objects count, at the limit is fine, one more is not', () => {
  assert.equal(exceeds(deep(3), 3), false);
  assert.equal(exceeds(deep(4), 3), true);
  assert.equal(exceeds('{"a":{"b":[{"c":1}]}}', 4), false);
  assert.equal(exceeds('{"a":{"b":[{"c":[1]}]}}', 4), true);
  assert.equal(exceeds('[[1],[2],[3],{"a":4}]', 2), false, 'siblings do not add up');
  assert.equal(exceeds('"plain" 1 true null', 0), false);
});

test('depth: brackets inside strings, escaped quotes and backslashes, and non-ASCII text do not count', () => {
  assert.equal(exceeds(`{"a":"${'['.repeat(100)}"}`, 1), false);
  assert.equal(exceeds(`{"a":"\\"${'{'.repeat(100)}\\""}`, 1), false, 'an escaped quote does not end the string');
  assert.equal(exceeds(`{"a":"\\\\","b":${deep(5)}}`, 3), true, 'an escaped backslash does not escape the closing quote');
  assert.equal(exceeds(`{"ü€𝄞":"[[[[","x":[1]}`, 2), false);
});

test('depth: 100,000 levels are found in one cheap pass, terminated or not', () => {
  const text = Buffer.from(deep(100_000));
  const t = performance.now();
  assert.equal(jsonDepthExceeds(text, 32), true);
  assert.equal(jsonDepthExceeds(Buffer.from('['.repeat(100_000)), 32), true);
  assert.ok(performance.now() - t < 100, 'well under 100 ms');
});
