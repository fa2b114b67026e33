/**
 * Issue #14: a key version the service's HSM user cannot sign with (on CloudHSM: a key its owner
 * has not shared with the signing user) is `usable: false` with the CK_RV, named by /readyz
 * (still 200), answered with a 503 that does not trip the breaker, and usable again once the HSM
 * signs with it. The service runs in this process on the p11shim module over a real SoftHSMv2
 * token; the shim fails C_SignInit for one key label only.
 */
import assert from 'node:assert/strict';
import { createPublicKey } from 'node:crypto';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, test } from 'node:test';
import { pino } from 'pino';
import request from 'supertest';
import { composeService, type RunningService } from '../../src/composeService.js';
import { loadConfig } from '../../src/config/config.js';
import type { SigningAlgorithm } from '../../src/crypto/algorithms.js';
import { CKR } from '../../src/hsm/errors.js';
import { keyLabel } from '../../src/hsm/keyLabel.js';
import { ensureShimBuilt, ShimControl } from '../../testkit/p11shim.js';
import { runAdmin } from '../support/adminCli.js';
import { signatureVerifies } from '../support/faultService.js';
import { createTestToken, type TestToken } from '../support/testToken.js';

const PAY = 'pay';
const OTHER = 'other';

let token: TestToken;
let shim: ShimControl;
let svc: RunningService;
const logs: { msg?: string; key?: string; version?: number; reason?: string }[] = [];

before(async () => {
  token = await createTestToken([
    { name: PAY, spec: 'ECC_NIST_P256' },
    { name: OTHER, spec: 'RSA_2048' },
  ]);
  const admin = await token.admin();
  try {
    await admin.rotateKey(PAY); // pay/v2, the current version
  } finally {
    await admin.close();
  }
  const shimPath = ensureShimBuilt();
  shim = new ShimControl(join(token.dir, 'shim.control'));
  Object.assign(process.env, shim.env());
  // Set before the service starts: the probe at start must find it, before any caller signs.
  shim.failKey('C_SignInit', CKR.KEY_FUNCTION_NOT_PERMITTED, keyLabel(PAY, 2));
  const config = loadConfig(token.env({ HSM_MODULE: shimPath, HSM_SESSIONS: '4', KEY_REFRESH_MS: '200' }));
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n').filter(Boolean)) logs.push(JSON.parse(line) as (typeof logs)[number]);
      done();
    },
  });
  svc = await composeService(config, pino({ level: 'info' }, sink));
});

after(async () => {
  shim?.reset();
  await svc?.close();
  token?.cleanup();
});

interface VersionJson {
  version: number;
  usable: boolean;
  unusableReason?: string;
  publicKeyPem: string;
}

async function versions(name: string): Promise<VersionJson[]> {
  const res = await request(svc.app).get(`/v1/keys/${name}`).expect(200);
  return res.body.versions as VersionJson[];
}

async function sign(name: string, keyVersion?: number, text = `usability ${name} ${keyVersion ?? 'current'}`) {
  const algorithm: SigningAlgorithm = name === PAY ? 'ECDSA_SHA_256' : 'RSASSA_PKCS1_V1_5_SHA_256';
  const message = Buffer.from(text);
  const res = await request(svc.app)
    .post(`/v1/keys/${name}/sign`)
    .send({ algorithm, message: message.toString('base64'), ...(keyVersion !== undefined ? { keyVersion } : {}) });
  return { res, algorithm, message };
}

/** Signs and checks the signature with node:crypto against the version's public key. */
async function signsAndVerifies(name: string, keyVersion?: number): Promise<void> {
  const { res, algorithm, message } = await sign(name, keyVersion);
  assert.equal(res.status, 200, res.text);
  const v = (await versions(name)).find((x) => x.version === res.body.keyVersion);
  assert.ok(v, `version ${res.body.keyVersion} listed`);
  assert.ok(signatureVerifies(createPublicKey(v.publicKeyPem), algorithm, message, res.body.signature), `${name} v${res.body.keyVersion} signature verifies`);
}

async function eventually(what: string, check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) assert.fail(`not within ${ms} ms: ${what}`);
    await sleep(50);
  }
}

test('the probe at start marks the version the HSM will not sign with: GET /v1/keys/{name} and /readyz (200) name it', async () => {
  const [v1, v2] = await versions(PAY);
  assert.deepEqual([v1?.version, v1?.usable, v1?.unusableReason], [1, true, undefined]);
  assert.deepEqual([v2?.version, v2?.usable, v2?.unusableReason], [2, false, 'CKR_KEY_FUNCTION_NOT_PERMITTED']);
  assert.ok((await versions(OTHER)).every((v) => v.usable));
  const ready = await request(svc.app).get('/readyz');
  assert.equal(ready.status, 200, 'one unusable key version does not take the worker out of the balancer');
  assert.equal(ready.body.status, 'ready');
  assert.deepEqual(ready.body.unusableKeyVersions, [{ name: PAY, version: 2, reason: 'CKR_KEY_FUNCTION_NOT_PERMITTED' }]);
  assert.equal(logs.filter((l) => l.msg === 'a key version cannot be used for signing' && l.key === PAY && l.version === 2).length, 1, 'logged once');
});

test('signing with it is a 503 naming the version, with Retry-After, that does not trip the breaker; other keys and versions sign', async () => {
  for (let i = 0; i < 30; i++) {
    const { res } = await sign(PAY, undefined, `try ${i}`);
    assert.equal(res.status, 503, res.text);
    assert.equal(res.body.error.code, 'HSM_UNAVAILABLE');
    assert.match(res.body.error.message, /key 'pay' version 2 cannot be used by the service \(CKR_KEY_FUNCTION_NOT_PERMITTED\)/);
    assert.equal(res.headers['retry-after'], '30');
  }
  assert.equal(svc.service.health().breaker, 'closed');
  await signsAndVerifies(PAY, 1);
  await signsAndVerifies(OTHER);
  const batch = await request(svc.app)
    .post('/v1/sign/batch')
    .send({
      requests: [
        { keyName: PAY, algorithm: 'ECDSA_SHA_256', message: Buffer.from('b0').toString('base64') },
        { keyName: PAY, keyVersion: 1, algorithm: 'ECDSA_SHA_256', message: Buffer.from('b1').toString('base64') },
        { keyName: OTHER, algorithm: 'RSASSA_PKCS1_V1_5_SHA_256', message: Buffer.from('b2').toString('base64') },
      ],
    })
    .expect(200);
  const [r0, r1, r2] = batch.body.results;
  assert.equal(r0.error?.code, 'HSM_UNAVAILABLE', JSON.stringify(r0));
  const [v1] = await versions(PAY);
  assert.ok(signatureVerifies(createPublicKey(v1!.publicKeyPem), 'ECDSA_SHA_256', Buffer.from('b1'), r1.signature), 'batch: pay v1 signed');
  assert.ok(r2.signature, JSON.stringify(r2));
});

test('once the HSM signs with it again, the version is usable again', async () => {
  shim.reset();
  await shim.settle();
  await signsAndVerifies(PAY);
  assert.ok((await versions(PAY)).every((v) => v.usable && v.unusableReason === undefined));
  const ready = await request(svc.app).get('/readyz').expect(200);
  assert.equal(ready.body.unusableKeyVersions, undefined);
});

test('a handle the HSM still calls invalid after the re-lookup marks the version unusable (CKR_KEY_HANDLE_INVALID); fixed, it signs again', async () => {
  shim.failKey('C_SignInit', CKR.KEY_HANDLE_INVALID, keyLabel(OTHER, 1));
  await shim.settle();
  const { res } = await sign(OTHER);
  assert.equal(res.status, 503, res.text);
  assert.equal(res.body.error.code, 'HSM_UNAVAILABLE');
  assert.match(res.body.error.message, /key 'other' version 1 cannot be used by the service \(CKR_KEY_HANDLE_INVALID\)/);
  assert.deepEqual(
    (await versions(OTHER)).map((v) => [v.usable, v.unusableReason]),
    [[false, 'CKR_KEY_HANDLE_INVALID']],
  );
  // The rescans every 200 ms find the same key unchanged: the mark stays.
  await sleep(600);
  assert.equal((await versions(OTHER))[0]?.usable, false);
  assert.equal(svc.service.health().breaker, 'closed');
  await signsAndVerifies(PAY);
  shim.reset();
  await shim.settle();
  await signsAndVerifies(OTHER);
  assert.equal((await versions(OTHER))[0]?.usable, true);
});

test('a new version is probed after the rescan that finds it: usable is known before anyone signs with it', async () => {
  shim.failKey('C_SignInit', CKR.KEY_FUNCTION_NOT_PERMITTED, keyLabel(PAY, 3));
  await shim.settle();
  // In its own process, as in production: closing an admin in this process would finalize the module under the service.
  const rotated = await runAdmin(token, ['keys', 'rotate', '--name', PAY]);
  assert.equal(rotated.code, 0, rotated.stderr);
  await eventually('pay v3 listed as not usable', async () => (await versions(PAY)).find((v) => v.version === 3)?.usable === false);
  shim.reset();
  await shim.settle();
  await signsAndVerifies(PAY, 3);
  assert.equal((await versions(PAY)).find((v) => v.version === 3)?.usable, true);
});
