import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { test } from 'node:test';
import { CKR, ckrName, classify, HsmError, NOT_A_CKR, RETRYABLE, toHsmError, type FailureClass } from '../../../src/hsm/errors.js';

const failure = (code: number) => ({ code, method: 'C_Sign' });

test("the issue's classes: each code lands where issue #3 says", () => {
  const expected: [number, FailureClass][] = [
    [CKR.DEVICE_ERROR, 'connectionLost'],
    [CKR.DEVICE_REMOVED, 'connectionLost'],
    [CKR.TOKEN_NOT_PRESENT, 'connectionLost'],
    [CKR.CRYPTOKI_NOT_INITIALIZED, 'connectionLost'],
    [CKR.SESSION_HANDLE_INVALID, 'sessionFatal'],
    [CKR.SESSION_CLOSED, 'sessionFatal'],
    [CKR.OPERATION_ACTIVE, 'sessionFatal'],
    [CKR.USER_NOT_LOGGED_IN, 'loginLost'],
    [CKR.KEY_HANDLE_INVALID, 'handleStale'],
    [CKR.OBJECT_HANDLE_INVALID, 'handleStale'],
    [CKR.FUNCTION_FAILED, 'throttled'],
    [CKR.MECHANISM_INVALID, 'client'],
    [CKR.KEY_FUNCTION_NOT_PERMITTED, 'keyUnusable'],
    [CKR.DATA_LEN_RANGE, 'client'],
    [CKR.PIN_INCORRECT, 'credentials'],
    [CKR.PIN_LOCKED, 'credentials'],
  ];
  for (const [code, cls] of expected) assert.equal(classify(code), cls, ckrName(code));
});

test('unknown and vendor-defined codes, and failures outside the module, are treated as a lost connection', () => {
  assert.equal(classify(0x80000001), 'connectionLost');
  assert.equal(classify(NOT_A_CKR.THREAD_EXITED), 'connectionLost');
  assert.equal(ckrName(0x80000001), 'CKR_0x80000001');
  assert.equal(ckrName(NOT_A_CKR.THREAD_EXITED), 'THREAD_EXITED');
});

test('client errors are 400 and never retried; HSM failures are 503 with Retry-After and retried, except credentials', () => {
  const client = toHsmError(failure(CKR.MECHANISM_INVALID));
  assert.equal(client.code, 'INVALID_ARGUMENT');
  assert.equal(client.retryable, false);
  assert.equal(client.retryAfterSeconds, undefined);
  for (const code of [CKR.DEVICE_ERROR, CKR.FUNCTION_FAILED, CKR.USER_NOT_LOGGED_IN, CKR.SESSION_HANDLE_INVALID, CKR.OBJECT_HANDLE_INVALID]) {
    const e = toHsmError(failure(code));
    assert.ok(e instanceof HsmError);
    assert.equal(e.code, 'HSM_UNAVAILABLE');
    assert.equal(e.retryAfterSeconds, 1);
    assert.equal(e.retryable, true, ckrName(code));
    assert.match(e.message, new RegExp(ckrName(code)));
  }
  const pin = toHsmError(failure(CKR.PIN_INCORRECT));
  assert.equal(pin.retryable, false, 'retrying a wrong PIN locks the token');
  assert.ok(!RETRYABLE.has('client') && !RETRYABLE.has('credentials'));
});

test('every code the table knows is documented in docs/RESILIENCE.md', () => {
  const doc = readFileSync(new URL('../../../docs/RESILIENCE.md', import.meta.url), 'utf8');
  const missing = Object.keys(CKR)
    .filter((k) => k !== 'OK')
    .map((k) => `CKR_${k}`)
    .filter((name) => !doc.includes(name));
  assert.deepEqual(missing, []);
});

test('every CK_RV in the table has the number PKCS#11 gives it (checked against pkcs11js, not against itself)', () => {
  const pkcs11js = createRequire(import.meta.url)('pkcs11js') as Record<string, unknown>;
  for (const [name, value] of Object.entries(CKR)) {
    // Vendor-defined codes have no pkcs11js constant; every standard one must match.
    if (pkcs11js[`CKR_${name}`] === undefined) continue;
    assert.equal(value, pkcs11js[`CKR_${name}`], `CKR_${name}`);
  }
  assert.ok(Object.keys(CKR).filter((n) => pkcs11js[`CKR_${n}`] !== undefined).length >= Object.keys(CKR).length - 2, 'nearly every code is checked');
});
