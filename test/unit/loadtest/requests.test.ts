import { test } from 'node:test';
import assert from 'node:assert/strict';
import { constants, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { buildTemplates, errorKey, messageFor, type KeyUnderTest, type RequestTemplate, type VerifyOutcome } from '../../../loadtest/requests.js';
import { signatureValid } from '../../../testkit/signatureValid.js';
import { parseScenario } from '../../../loadtest/scenarios.js';

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const ec = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const RSA_KEY: KeyUnderTest = { name: 'k-rsa', keySpec: 'RSA_2048', publicKeys: new Map([[1, rsa.publicKey]]) };
const EC_KEY: KeyUnderTest = { name: 'k-ec', keySpec: 'ECC_NIST_P256', publicKeys: new Map([[1, ec.publicKey]]) };
const SALT = 'fixed';

const signEc = (m: Buffer): Buffer => sign('sha256', m, { key: ec.privateKey, dsaEncoding: 'der' });
const signRsa = (m: Buffer, key: KeyObject = rsa.privateKey): Buffer => sign('sha256', m, key);

function ok(t: RequestTemplate, body: unknown): { signatures: number; checked: number; bad: number; reason?: string } {
  const j = t.judge(200, JSON.stringify(body));
  assert.ok(j.ok, `expected a good answer, got ${JSON.stringify(j)}`);
  return { signatures: j.signatures, ...checkedNow(j.verify()) };
}

/**
 * The templates under test check in-process: verify() answers at once, never with a Promise. A
 * function with a declared return type, so that Biome (which does not narrow on an assertion or
 * on instanceof Promise as tsc does) sees that what is spread is the outcome, not a Promise.
 */
function checkedNow(v: VerifyOutcome | Promise<VerifyOutcome>): VerifyOutcome {
  if (v instanceof Promise) throw new assert.AssertionError({ message: 'verify() returned a Promise; these templates check synchronously' });
  return v;
}

test('signatureValid checks PKCS#1 v1.5, PSS and DER ECDSA over the message', () => {
  const m = Buffer.from('hello');
  assert.ok(signatureValid('RSASSA_PKCS1_V1_5_SHA_256', m, rsa.publicKey, signRsa(m)));
  const pss = sign('sha256', m, { key: rsa.privateKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 });
  assert.ok(signatureValid('RSASSA_PSS_SHA_256', m, rsa.publicKey, pss));
  assert.ok(!signatureValid('RSASSA_PKCS1_V1_5_SHA_256', m, rsa.publicKey, pss));
  assert.ok(signatureValid('ECDSA_SHA_256', m, ec.publicKey, signEc(m)));
  assert.ok(!signatureValid('ECDSA_SHA_256', Buffer.from('other'), ec.publicKey, signEc(m)));
  assert.ok(!signatureValid('ECDSA_SHA_256', m, ec.publicKey, Buffer.from('garbage')), 'garbage is invalid, not an exception');
});

test('errorKey: status and the contract error code, or the status alone', () => {
  assert.equal(errorKey(503, JSON.stringify({ error: { code: 'OVERLOADED', message: 'x', requestId: 'r' } })), '503 OVERLOADED');
  assert.equal(errorKey(502, '<html>bad gateway</html>'), 'non2xx 502');
  assert.equal(errorKey(500, JSON.stringify({ error: { code: 'not a code!' } })), 'non2xx 500');
});

test('sign: body carries the digest of its own message; a good answer verifies, a wrong one is bad', async () => {
  const spec = parseScenario('sign:ECC_NIST_P256');
  const [t0, t1] = await buildTemplates(spec, EC_KEY, 2, {}, SALT);
  assert.equal(t0!.path, '/v1/keys/k-ec/sign');
  const body = JSON.parse(t0!.body) as { algorithm: string; digest: string };
  assert.equal(body.algorithm, 'ECDSA_SHA_256');
  assert.equal(Buffer.from(body.digest, 'base64').length, 32);
  assert.notEqual(t0!.body, t1!.body, 'each template signs something else');

  const m0 = messageFor(spec.name, 0, 0, SALT);
  const answer = (sig: Buffer, extra: object = {}) => ({
    keyName: 'k-ec',
    keyVersion: 1,
    algorithm: 'ECDSA_SHA_256',
    signature: sig.toString('base64'),
    ...extra,
  });
  assert.deepEqual(ok(t0!, answer(signEc(m0))), { signatures: 1, checked: 1, bad: 0 });
  const wrong = ok(t0!, answer(signEc(Buffer.from('another message'))));
  assert.equal(wrong.bad, 1);
  assert.match(wrong.reason!, /does not verify/);
  // A version the harness never saw cannot be checked: not bad, not counted as checked.
  assert.deepEqual(ok(t0!, answer(signEc(m0), { keyVersion: 7 })), { signatures: 1, checked: 0, bad: 0 });

  assert.deepEqual(t0!.judge(503, JSON.stringify({ error: { code: 'OVERLOADED' } })), { ok: false, error: '503 OVERLOADED' });
  const shapes: unknown[] = [
    {},
    answer(signEc(m0), { keyName: 'other' }),
    answer(signEc(m0), { algorithm: 'ECDSA_SHA_384' }),
    answer(Buffer.alloc(3)),
    { ...answer(signEc(m0)), signature: 'not base64!' },
  ];
  for (const s of shapes) {
    const j = t0!.judge(200, JSON.stringify(s));
    assert.ok(!j.ok && j.error.startsWith('invalid body'), JSON.stringify(s));
  }
  const notJson = t0!.judge(200, 'nope');
  assert.ok(!notJson.ok);
});

test('batch: every item is counted and checked; item errors are reported, not fatal', async () => {
  const spec = parseScenario('batch3:RSA_2048');
  const [t] = await buildTemplates(spec, RSA_KEY, 1, {}, SALT);
  assert.equal(t!.path, '/v1/sign/batch');
  const items = (JSON.parse(t!.body) as { requests: { keyName: string; digest: string }[] }).requests;
  assert.equal(items.length, 3);
  assert.ok(items.every((i) => i.keyName === 'k-rsa'));
  const good = (i: number) => ({
    keyName: 'k-rsa',
    keyVersion: 1,
    algorithm: 'RSASSA_PKCS1_V1_5_SHA_256',
    signature: signRsa(messageFor(spec.name, 0, i, SALT)).toString('base64'),
  });
  assert.deepEqual(ok(t!, { results: [good(0), good(1), good(2)] }), { signatures: 3, checked: 3, bad: 0 });
  // Item 2 signed with item 1's message: caught.
  assert.equal(ok(t!, { results: [good(0), good(1), good(1)] }).bad, 1);
  const partial = t!.judge(200, JSON.stringify({ results: [good(0), { error: { code: 'HSM_UNAVAILABLE', message: 'x' } }, good(2)] }));
  assert.ok(partial.ok);
  assert.equal(partial.signatures, 2);
  assert.deepEqual(partial.itemErrors, ['item HSM_UNAVAILABLE']);
  const short = t!.judge(200, JSON.stringify({ results: [good(0)] }));
  assert.ok(!short.ok);
});

test('verify: needs signatures made first; valid:false for a good signature is a wrong answer', async () => {
  const spec = parseScenario('verify:ECC_NIST_P256');
  await assert.rejects(buildTemplates(spec, EC_KEY, 1, {}, SALT), /needs signatures/);
  const signed: Buffer[] = [];
  const [t] = await buildTemplates(
    spec,
    EC_KEY,
    1,
    {
      sign: async (_k, _a, m) => {
        signed.push(m);
        return signEc(m);
      },
    },
    SALT,
  );
  assert.equal(signed.length, 1);
  assert.equal(t!.path, '/v1/keys/k-ec/verify');
  assert.ok((JSON.parse(t!.body) as { signature?: string }).signature);
  assert.deepEqual(ok(t!, { valid: true, keyVersion: 1 }), { signatures: 1, checked: 1, bad: 0 });
  assert.equal((t!.judge(200, '{"valid":true,"keyVersion":1}') as { checkAlways?: boolean }).checkAlways, true, 'every verify answer is checked');
  assert.equal(ok(t!, { valid: false, keyVersion: 1 }).bad, 1);
});

test('a mix builds its templates in proportion', async () => {
  const spec = parseScenario('mix:3sign/1verify:ECC_NIST_P256');
  const ts = await buildTemplates(spec, EC_KEY, 8, { sign: async (_k, _a, m) => signEc(m) }, SALT);
  assert.equal(ts.filter((t) => t.op.kind === 'sign').length, 6);
  assert.equal(ts.filter((t) => t.op.kind === 'verify').length, 2);
});

test('csr and issue: routes and bodies; issue needs its fixtures', async () => {
  const [csr] = await buildTemplates(parseScenario('csr:ECC_NIST_P256'), EC_KEY, 1, {}, SALT);
  assert.equal(csr!.path, '/v1/keys/k-ec/csr');
  assert.match((JSON.parse(csr!.body) as { subject: string }).subject, /^CN=/);
  await assert.rejects(buildTemplates(parseScenario('issue:ECC_NIST_P256'), EC_KEY, 1, {}, SALT), /issuer certificate/);
  const [issue] = await buildTemplates(
    parseScenario('issue:ECC_NIST_P256'),
    EC_KEY,
    1,
    {
      issue: { csrPems: ['-----BEGIN CERTIFICATE REQUEST-----'], profile: 'tls-client', validityDays: 30, verifyCertificate: async () => 'nope' },
    },
    SALT,
  );
  assert.equal(issue!.path, '/v1/keys/k-ec/certificates');
  const j = issue!.judge(201, JSON.stringify({ certificatePem: '-----BEGIN CERTIFICATE-----' }));
  assert.ok(j.ok);
  assert.deepEqual(await j.verify(), { checked: 1, bad: 1, reason: 'k-ec certificate: nope' });
});
