import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isCeilingScenario, mixSchedule, parseScenario, ScenarioError } from '../../../loadtest/scenarios.js';

test('names are normalised: the usual algorithm is filled in, batch means batch64', () => {
  assert.equal(parseScenario('sign:RSA_2048').name, 'sign:RSA_2048:RSASSA_PKCS1_V1_5_SHA_256');
  assert.equal(parseScenario('sign:ECC_NIST_P384').name, 'sign:ECC_NIST_P384:ECDSA_SHA_384');
  assert.equal(parseScenario(' verify:ECC_NIST_P256:ECDSA_SHA_256 ').name, 'verify:ECC_NIST_P256:ECDSA_SHA_256');
  const batch = parseScenario('batch:ECC_NIST_P256');
  assert.equal(batch.name, 'batch64:ECC_NIST_P256:ECDSA_SHA_256');
  assert.equal(batch.ops[0]!.op.items, 64);
  assert.equal(parseScenario('batch8:RSA_2048:RSASSA_PSS_SHA_256').ops[0]!.op.items, 8);
  // PKI scenarios take the key's own algorithm, so it is not part of their name.
  assert.equal(parseScenario('csr:ECC_NIST_P256').name, 'csr:ECC_NIST_P256');
  assert.equal(parseScenario('issue:RSA_2048').name, 'issue:RSA_2048');
});

test('a mix keeps its weights and kinds on one key', () => {
  const mix = parseScenario('mix:80sign/20verify:ECC_NIST_P256');
  assert.equal(mix.name, 'mix:80sign/20verify:ECC_NIST_P256:ECDSA_SHA_256');
  assert.deepEqual(
    mix.ops.map((o) => [o.op.kind, o.weight, o.op.items]),
    [
      ['sign', 80, 1],
      ['verify', 20, 1],
    ],
  );
  assert.deepEqual(
    parseScenario('mix:3batch16/1sign:RSA_2048').ops.map((o) => [o.op.kind, o.op.items]),
    [
      ['batch', 16],
      ['sign', 1],
    ],
  );
});

test('bad scenarios fail with the reason', () => {
  const bad: Array<[string, RegExp]> = [
    ['nope:RSA_2048', /unknown scenario kind/],
    ['sign', /expected a key spec/],
    ['sign:RSA_1024', /expected a key spec/],
    ['sign:RSA_2048:ECDSA_SHA_256', /cannot be used with a RSA_2048 key/],
    ['sign:ECC_NIST_P256:ECDSA_SHA_999', /unknown algorithm/],
    ['batch0:ECC_NIST_P256', /1 to 256 items/],
    ['batch300:ECC_NIST_P256', /1 to 256 items/],
    ['mix::ECC_NIST_P256', /needs weights/],
    ['mix:80sign/20fly:ECC_NIST_P256', /is not <weight><kind>/],
    ['sign:RSA_2048:RSASSA_PKCS1_V1_5_SHA_256:extra', /too many/],
  ];
  for (const [text, why] of bad)
    assert.throws(
      () => parseScenario(text),
      (e: unknown) => e instanceof ScenarioError && why.test(e.message),
      text,
    );
});

test('mixSchedule spreads weights evenly over the cycle', () => {
  const s = mixSchedule([80, 20], 10);
  assert.equal(s.length, 10);
  assert.equal(s.filter((i) => i === 0).length, 8);
  assert.equal(s.filter((i) => i === 1).length, 2);
  // Interleaved, not 8 then 2: each half of the cycle holds one of the minority.
  assert.equal(s.slice(0, 5).filter((i) => i === 1).length, 1);
  assert.deepEqual(mixSchedule([1], 3), [0, 0, 0]);
  assert.deepEqual(mixSchedule([1, 1, 2], 4).sort(), [0, 1, 2, 2]);
  assert.deepEqual(mixSchedule([], 4), []);
});

test('ceilings exist for single sign and batch scenarios only', () => {
  assert.ok(isCeilingScenario(parseScenario('sign:RSA_2048')));
  assert.ok(isCeilingScenario(parseScenario('batch64:ECC_NIST_P256')));
  assert.ok(!isCeilingScenario(parseScenario('verify:ECC_NIST_P256')));
  assert.ok(!isCeilingScenario(parseScenario('mix:80sign/20verify:ECC_NIST_P256')));
});
