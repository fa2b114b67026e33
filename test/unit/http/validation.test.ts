import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ServiceError } from '../../../src/errors.js';
import { parseBatch, parseSign, parseVerify } from '../../../src/http/validation.js';

const invalidNaming = (field: string) => (e: unknown) => e instanceof ServiceError && e.code === 'INVALID_ARGUMENT' && e.message.startsWith(`${field}:`);

test('sign body: base64 decoded, exactly one of message and digest', () => {
  const s = parseSign('k', { algorithm: 'ECDSA_SHA_256', message: 'aGk=' });
  assert.deepEqual(s, { keyName: 'k', algorithm: 'ECDSA_SHA_256', message: Buffer.from('hi') });
  assert.throws(() => parseSign('k', { algorithm: 'ECDSA_SHA_256' }), invalidNaming('message'));
  assert.throws(() => parseSign('k', { algorithm: 'ECDSA_SHA_256', message: 'aGk' }), invalidNaming('message'));
  assert.throws(() => parseSign('k', { algorithm: 'ECDSA_SHA_256', message: 'aGk=', extra: 1 }), invalidNaming('body'));
  assert.throws(() => parseSign('k', null), invalidNaming('body'));
  assert.throws(() => parseVerify('k', { algorithm: 'ECDSA_SHA_256', message: 'aGk=' }), invalidNaming('signature'));
});

test('batch: malformed items become their own errors, in order', () => {
  const items = parseBatch({
    requests: [{ keyName: 'a', algorithm: 'ECDSA_SHA_256', digest: 'AA==' }, { keyName: '../x', algorithm: 'ECDSA_SHA_256', message: 'AA==' }, 5],
  });
  assert.equal((items[0] as { keyName: string }).keyName, 'a');
  assert.ok(items[1] instanceof ServiceError && items[1].message.startsWith('requests[1].keyName'));
  assert.ok(items[2] instanceof ServiceError && items[2].message.startsWith('requests[2]'));
  assert.throws(() => parseBatch({ requests: [] }), invalidNaming('requests'));
});
