/**
 * SigningService against a KeyManager in memory: input rules, batch chunks, what a retry re-sends,
 * and the errors a caller gets. The same paths against SoftHSMv2 are in test/integration/signing.test.ts.
 */
import { createHash, sign as cryptoSign, constants } from 'node:crypto';
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import type { SigningAlgorithm } from '../../../src/crypto/algorithms.js';
import { ecdsaRawToDer } from '../../../src/crypto/ecdsaSignature.js';
import { ServiceError } from '../../../src/errors.js';
import type { SignManyOutcome } from '../../../src/hsm/KeyManager.js';
import { createHsmBreaker, type HsmBreaker } from '../../../src/resilience/hsmBreaker.js';
import { RetryBudget } from '../../../src/resilience/retryBudget.js';
import { SigningService, type SignInput, type SignOutput } from '../../../src/service/SigningService.js';
import { deviceError, FakeKeyManager, fakeKey, fakeSignature, hsmRefuses, sessionLost } from './fakeKeyManager.js';

const rsa = fakeKey('rsa', 'RSA_2048', 2);
const ec = fakeKey('ec', 'ECC_NIST_P256');
const MAX_ATTEMPTS = 3;

const breakers: HsmBreaker[] = [];
after(() => {
  for (const b of breakers) b.shutdown();
});

function setup(): { keys: FakeKeyManager; service: SigningService; breaker: HsmBreaker } {
  const keys = new FakeKeyManager([rsa, ec]);
  // The breaker never opens on its own here (volume threshold out of reach); tests open it by hand.
  const breaker = createHsmBreaker({ errorThresholdPercentage: 50, resetTimeoutMs: 60_000, volumeThreshold: 1_000_000, rollingWindowMs: 10_000 });
  breakers.push(breaker);
  const service = new SigningService(keys, {
    breaker,
    breakerResetMs: 60_000,
    budget: new RetryBudget(1, { maxTokens: 1000 }),
    maxAttempts: MAX_ATTEMPTS,
    backoff: { baseMs: 1, capMs: 2 },
  });
  return { keys, service, breaker };
}

const soon = (): number => Date.now() + 5_000;
const sha256 = (b: Buffer): Buffer => createHash('sha256').update(b).digest();
/** A distinct 32-byte digest per item, so that each signature names its item. */
const digestN = (i: number): Buffer => sha256(Buffer.from(`item ${i}`));
const ecItem = (i: number): SignInput => ({ keyName: 'ec', algorithm: 'ECDSA_SHA_256', digest: digestN(i), signatureFormat: 'raw' });
const rsaItem = (i: number): SignInput => ({ keyName: 'rsa', algorithm: 'RSASSA_PKCS1_V1_5_SHA_256', digest: digestN(i) });

function assertSigned(r: SignOutput | ServiceError, i: number, what = `item ${i}`): void {
  assert.ok(!(r instanceof ServiceError), `${what}: ${r instanceof ServiceError ? r.code : ''}`);
  assert.deepEqual(r.digest, digestN(i), `${what}: its own digest`);
  assert.deepEqual(r.signature, fakeSignature(ec.info.keySpec, digestN(i)), `${what}: its own signature`);
}

const signedDigests = (calls: readonly { digest: Buffer }[][]): string[][] => calls.map((c) => c.map((r) => r.digest.toString('hex')));

// --- sign -----------------------------------------------------------------------------------

test("sign: a message is hashed with the algorithm's hash, and that digest goes to the HSM and into the output", async () => {
  const { keys, service } = setup();
  const message = Buffer.from('hello');
  const out = await service.sign({ keyName: 'rsa', algorithm: 'RSASSA_PKCS1_V1_5_SHA_256', message }, soon());
  assert.equal(keys.signCalls.length, 1);
  assert.deepEqual(keys.signCalls[0]!.digest, sha256(message));
  assert.deepEqual(out.digest, sha256(message));
  assert.equal(out.keyName, 'rsa');
  assert.equal(out.keyVersion, 2, 'the current version when none is asked for');
  assert.deepEqual(out.signature, fakeSignature('RSA_2048', sha256(message)));
});

test('sign: a version asked for is the version sent', async () => {
  const { keys, service } = setup();
  const out = await service.sign({ ...rsaItem(0), keyVersion: 1 }, soon());
  assert.equal(keys.signCalls[0]!.version, 1);
  assert.equal(out.keyVersion, 1);
});

test('sign: ECDSA signatures are DER unless raw is asked for', async () => {
  const { service } = setup();
  const raw = fakeSignature('ECC_NIST_P256', digestN(1));
  const der = await service.sign({ keyName: 'ec', algorithm: 'ECDSA_SHA_256', digest: digestN(1) }, soon());
  assert.deepEqual(der.signature, ecdsaRawToDer(raw));
  const asRaw = await service.sign(ecItem(1), soon());
  assert.deepEqual(asRaw.signature, raw);
});

test('sign: bad input is a 400 naming the field, and reaches no HSM', async () => {
  const { keys, service } = setup();
  await assert.rejects(service.sign({ keyName: 'ec', algorithm: 'ECDSA_SHA_256', digest: Buffer.alloc(31) }, soon()), (e: ServiceError) => {
    assert.equal(e.code, 'INVALID_ARGUMENT');
    assert.match(e.message, /^digest: must be 32 bytes for ECDSA_SHA_256, got 31$/);
    return true;
  });
  await assert.rejects(service.sign({ ...rsaItem(0), signatureFormat: 'raw' }, soon()), (e: ServiceError) => {
    assert.equal(e.code, 'INVALID_ARGUMENT');
    assert.match(e.message, /^signatureFormat: /);
    return true;
  });
  assert.equal(keys.signCalls.length, 0);
});

test('sign: an algorithm that does not fit the key is a 400 naming the algorithm, not retried', async () => {
  const { keys, service } = setup();
  for (const [keyName, algorithm] of [
    ['ec', 'RSASSA_PSS_SHA_256'],
    ['rsa', 'ECDSA_SHA_256'],
  ] as [string, SigningAlgorithm][]) {
    await assert.rejects(service.sign({ keyName, algorithm, digest: digestN(0) }, soon()), (e: ServiceError) => {
      assert.equal(e.code, 'INVALID_ARGUMENT');
      assert.match(e.message, new RegExp(`^algorithm: ${algorithm} cannot be used with key '${keyName}'`));
      return true;
    });
  }
  assert.ok(keys.signCalls.length <= 2, `at most one HSM call per request, got ${keys.signCalls.length}`);
});

test('sign: an unknown key or version is a 404', async () => {
  const { service } = setup();
  await assert.rejects(service.sign({ ...rsaItem(0), keyName: 'nope' }, soon()), { code: 'NOT_FOUND' });
  await assert.rejects(service.sign({ ...rsaItem(0), keyVersion: 9 }, soon()), { code: 'NOT_FOUND' });
});

test('sign: a retryable HSM failure is retried, and the caller gets the signature', async () => {
  const { keys, service } = setup();
  keys.onSign = (req, call) => {
    if (call === 0) throw sessionLost();
    return keys.signOne(req);
  };
  const out = await service.sign(rsaItem(3), soon());
  assert.equal(keys.signCalls.length, 2);
  assert.deepEqual(out.digest, digestN(3));
});

test('sign: a failure that persists is a 503 HSM_UNAVAILABLE after the configured attempts', async () => {
  const { keys, service } = setup();
  keys.onSign = () => {
    throw deviceError();
  };
  await assert.rejects(service.sign(rsaItem(0), soon()), (e: ServiceError) => {
    assert.equal(e.code, 'HSM_UNAVAILABLE');
    assert.equal(e.status, 503);
    assert.ok(e.retryAfterSeconds !== undefined && e.retryAfterSeconds > 0, 'with Retry-After');
    return true;
  });
  assert.equal(keys.signCalls.length, MAX_ATTEMPTS);
});

test('sign: an input the HSM refuses is a 400 and is not retried', async () => {
  const { keys, service } = setup();
  keys.onSign = () => {
    throw hsmRefuses();
  };
  await assert.rejects(service.sign(rsaItem(0), soon()), { code: 'INVALID_ARGUMENT' });
  assert.equal(keys.signCalls.length, 1);
});

test('sign: an open breaker answers 503 without calling the HSM', async () => {
  const { keys, service, breaker } = setup();
  breaker.open();
  await assert.rejects(service.sign(rsaItem(0), soon()), { code: 'HSM_UNAVAILABLE' });
  assert.equal(keys.signCalls.length, 0);
  assert.equal(service.health().breaker, 'open');
});

test('sign: at the deadline the caller gets 504 and the HSM call sees its signal aborted', async () => {
  const { keys, service } = setup();
  keys.onSign = () => new Promise(() => undefined);
  await assert.rejects(service.sign(rsaItem(0), Date.now() + 50), { code: 'DEADLINE_EXCEEDED' });
  assert.equal(keys.signCalls[0]!.signal?.aborted, true);
});

// --- signBatch ------------------------------------------------------------------------------

test("signBatch: items go to the HSM in chunks of 16, in order, and each answer is its own item's", async () => {
  const { keys, service } = setup();
  const items = Array.from({ length: 40 }, (_, i) => ecItem(i));
  const results = await service.signBatch(items, soon());
  assert.deepEqual(
    keys.signManyCalls.map((c) => c.length),
    [16, 16, 8],
  );
  assert.deepEqual(
    signedDigests(keys.signManyCalls).flat(),
    items.map((x) => x.digest!.toString('hex')),
    'each item sent once, in order',
  );
  assert.equal(results.length, 40);
  for (const [i, r] of results.entries()) assertSigned(r, i);
  assert.equal(keys.signCalls.length, 0, 'no single signs');
});

test('signBatch: items already refused (parse, permission) and bad input are answered without the HSM; the rest are chunked', async () => {
  const { keys, service } = setup();
  const denied = new ServiceError('PERMISSION_DENIED', 'no');
  const items: (SignInput | ServiceError)[] = Array.from({ length: 18 }, (_, i) => ecItem(i));
  items[2] = denied;
  items[5] = { ...ecItem(5), digest: Buffer.alloc(3) };
  items[7] = { ...rsaItem(7), signatureFormat: 'raw' };
  const results = await service.signBatch(items, soon());
  assert.deepEqual(
    keys.signManyCalls.map((c) => c.length),
    [15],
    'the 15 good items in one chunk',
  );
  assert.equal(results[2], denied);
  assert.equal((results[5] as ServiceError).code, 'INVALID_ARGUMENT');
  assert.match((results[5] as ServiceError).message, /^digest: /);
  assert.match((results[7] as ServiceError).message, /^signatureFormat: /);
  for (const i of [0, 1, 3, 4, 6, ...Array.from({ length: 10 }, (_, k) => k + 8)]) assertSigned(results[i]!, i);
});

test("signBatch: an item's own error (no key, wrong algorithm, refused by the HSM) is its answer; the others are signed, nothing is retried", async () => {
  const { keys, service } = setup();
  const items: SignInput[] = Array.from({ length: 6 }, (_, i) => ecItem(i));
  items[1] = { ...ecItem(1), keyName: 'missing' };
  items[3] = { keyName: 'ec', algorithm: 'RSASSA_PKCS1_V1_5_SHA_256', digest: digestN(3) };
  keys.onSignMany = (reqs) => reqs.map((r, j) => (j === 4 ? hsmRefuses() : keys.outcome(r)));
  const results = await service.signBatch(items, soon());
  assert.equal(keys.signManyCalls.length, 1, 'client errors are not retried');
  assert.equal((results[1] as ServiceError).code, 'NOT_FOUND');
  assert.equal((results[3] as ServiceError).code, 'INVALID_ARGUMENT');
  assert.match((results[3] as ServiceError).message, /^algorithm: RSASSA_PKCS1_V1_5_SHA_256 cannot be used with key 'ec'/);
  assert.equal((results[4] as ServiceError).code, 'INVALID_ARGUMENT');
  for (const i of [0, 2, 5]) assertSigned(results[i]!, i);
});

test('signBatch: a retry re-sends only the items still unsigned', async () => {
  const { keys, service } = setup();
  const items = Array.from({ length: 16 }, (_, i) => ecItem(i));
  // The first call signs 5 items, then loses its session: the other 11 carry the retryable failure.
  keys.onSignMany = (reqs, call): SignManyOutcome[] => {
    if (call > 0) return reqs.map((r) => keys.outcome(r));
    const lost = sessionLost();
    return reqs.map((r, j) => (j < 5 ? keys.outcome(r) : lost));
  };
  const results = await service.signBatch(items, soon());
  const sent = signedDigests(keys.signManyCalls);
  assert.equal(sent.length, 2);
  assert.deepEqual(
    sent[1],
    items.slice(5).map((x) => x.digest!.toString('hex')),
    'the retry holds the 11 unsigned items and no signed one',
  );
  for (const [i, r] of results.entries()) assertSigned(r, i);
});

test('signBatch: a retry re-sends neither the signed items nor the ones with an answer of their own', async () => {
  const { keys, service } = setup();
  const items = Array.from({ length: 8 }, (_, i) => ecItem(i));
  items[1] = { ...ecItem(1), keyName: 'missing' };
  keys.onSignMany = (reqs, call): SignManyOutcome[] => {
    if (call > 0) return reqs.map((r) => keys.outcome(r));
    // Item 0 signed, item 1 its own NOT_FOUND, item 2 signed, then the device fails.
    const down = deviceError();
    return reqs.map((r, j) => (j <= 2 ? keys.outcome(r) : down));
  };
  const results = await service.signBatch(items, soon());
  const sent = signedDigests(keys.signManyCalls);
  assert.deepEqual(
    sent[1],
    items.slice(3).map((x) => x.digest!.toString('hex')),
  );
  assert.equal((results[1] as ServiceError).code, 'NOT_FOUND');
  for (const i of [0, 2, 3, 4, 5, 6, 7]) assertSigned(results[i]!, i);
});

test('signBatch: a failure that persists becomes the answer of the unsigned items only, after the configured attempts', async () => {
  const { keys, service } = setup();
  const items = Array.from({ length: 10 }, (_, i) => ecItem(i));
  keys.onSignMany = (reqs): SignManyOutcome[] => {
    const down = deviceError();
    // Each attempt signs its first item, then the device fails.
    return reqs.map((r, j) => (j === 0 ? keys.outcome(r) : down));
  };
  const results = await service.signBatch(items, soon());
  assert.deepEqual(
    keys.signManyCalls.map((c) => c.length),
    [10, 9, 8],
    'one attempt per configured attempt, each with only the unsigned items',
  );
  for (const i of [0, 1, 2]) assertSigned(results[i]!, i);
  for (const i of [3, 4, 5, 6, 7, 8, 9]) {
    const e = results[i] as ServiceError;
    assert.ok(e instanceof ServiceError, `item ${i} is an error`);
    assert.equal(e.code, 'HSM_UNAVAILABLE');
  }
});

test('signBatch: the chunks of one batch are sent without waiting for each other', async () => {
  const { keys, service } = setup();
  let inFlight = 0;
  let most = 0;
  keys.onSignMany = async (reqs) => {
    most = Math.max(most, ++inFlight);
    await new Promise((r) => setTimeout(r, 10));
    inFlight--;
    return reqs.map((r) => keys.outcome(r));
  };
  await service.signBatch(
    Array.from({ length: 48 }, (_, i) => ecItem(i)),
    soon(),
  );
  assert.equal(most, 3);
});

test('signBatch: an open breaker answers every item 503 without calling the HSM; a bug fails the whole request', async () => {
  const { keys, service, breaker } = setup();
  breaker.open();
  const results = await service.signBatch([ecItem(0), ecItem(1)], soon());
  assert.equal(keys.signManyCalls.length, 0);
  for (const r of results) assert.equal((r as ServiceError).code, 'HSM_UNAVAILABLE');
  breaker.close();
  keys.onSignMany = () => {
    throw new TypeError('a bug');
  };
  await assert.rejects(service.signBatch([ecItem(0)], soon()), TypeError);
});

test('signBatch: at the deadline the unsigned items answer 504', async () => {
  const { keys, service } = setup();
  keys.onSignMany = () => new Promise(() => undefined);
  const results = await service.signBatch([ecItem(0), ecItem(1)], Date.now() + 50);
  for (const r of results) assert.equal((r as ServiceError).code, 'DEADLINE_EXCEEDED');
});

// --- verify ---------------------------------------------------------------------------------

test('verify: an algorithm that does not fit the key is a 400 naming the algorithm', async () => {
  const { service } = setup();
  await assert.rejects(
    service.verify({ keyName: 'ec', algorithm: 'RSASSA_PSS_SHA_256', message: Buffer.from('m'), signature: Buffer.alloc(64) }, soon()),
    (e: ServiceError) => {
      assert.equal(e.code, 'INVALID_ARGUMENT');
      assert.match(e.message, /^algorithm: RSASSA_PSS_SHA_256 cannot be used with key 'ec' \(ECC_NIST_P256\)$/);
      return true;
    },
  );
});

test('verify: with the cached public key, even with the breaker open; a wrong signature is valid:false', async () => {
  const { keys, service, breaker } = setup();
  breaker.open();
  const message = Buffer.from('hello');
  const good = cryptoSign('sha256', message, ec.privateKeys.get(1)!);
  assert.deepEqual(await service.verify({ keyName: 'ec', algorithm: 'ECDSA_SHA_256', message, signature: good }, soon()), { valid: true, keyVersion: 1 });
  const other = cryptoSign('sha256', Buffer.from('other'), ec.privateKeys.get(1)!);
  assert.deepEqual(await service.verify({ keyName: 'ec', algorithm: 'ECDSA_SHA_256', message, signature: other }, soon()), { valid: false, keyVersion: 1 });
  assert.deepEqual(await service.verify({ keyName: 'ec', algorithm: 'ECDSA_SHA_256', message, signature: Buffer.from('not DER') }, soon()), {
    valid: false,
    keyVersion: 1,
  });
  assert.deepEqual(
    await service.verify({ keyName: 'ec', algorithm: 'ECDSA_SHA_256', message, signature: Buffer.concat([good, Buffer.alloc(1)]) }, soon()),
    { valid: false, keyVersion: 1 },
    'one DER form only',
  );
  // An RSA PKCS#1 v1.5 digest verifies in the service too.
  const rsaSig = cryptoSign('sha256', message, rsa.privateKeys.get(1)!);
  assert.deepEqual(
    await service.verify({ keyName: 'rsa', keyVersion: 1, algorithm: 'RSASSA_PKCS1_V1_5_SHA_256', digest: sha256(message), signature: rsaSig }, soon()),
    { valid: true, keyVersion: 1 },
  );
  assert.deepEqual(
    await service.verify({ keyName: 'rsa', algorithm: 'RSASSA_PKCS1_V1_5_SHA_256', digest: sha256(message), signature: rsaSig }, soon()),
    { valid: false, keyVersion: 2 },
    "another version's key",
  );
  assert.equal(keys.verifyDigestCalls.length, 0);
});

test('verify: a prehashed PSS or ECDSA digest goes to the HSM with the raw signature; a PSS signature of the wrong length does not', async () => {
  const { keys, service } = setup();
  const message = Buffer.from('hello');
  const der = cryptoSign('sha256', message, ec.privateKeys.get(1)!);
  const out = await service.verify({ keyName: 'ec', algorithm: 'ECDSA_SHA_256', digest: sha256(message), signature: der }, soon());
  assert.deepEqual(out, { valid: true, keyVersion: 1 });
  assert.equal(keys.verifyDigestCalls.length, 1);
  assert.equal(keys.verifyDigestCalls[0]!.signature.length, 64, 'raw r||s');
  assert.deepEqual(ecdsaRawToDer(keys.verifyDigestCalls[0]!.signature), der);
  const pss = cryptoSign('sha256', message, { key: rsa.privateKeys.get(2)!, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 });
  assert.deepEqual(await service.verify({ keyName: 'rsa', algorithm: 'RSASSA_PSS_SHA_256', digest: sha256(message), signature: pss.subarray(1) }, soon()), {
    valid: false,
    keyVersion: 2,
  });
  assert.equal(keys.verifyDigestCalls.length, 1);
  keys.onVerifyDigest = () => {
    throw sessionLost();
  };
  await assert.rejects(service.verify({ keyName: 'rsa', algorithm: 'RSASSA_PSS_SHA_256', digest: sha256(message), signature: pss }, soon()), {
    code: 'HSM_UNAVAILABLE',
  });
  assert.equal(keys.verifyDigestCalls.length, 1 + MAX_ATTEMPTS, 'retried like a sign');
});
