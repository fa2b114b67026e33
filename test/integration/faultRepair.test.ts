/**
 * Issue #3, test 3: what the HSM reports broken is repaired without the caller noticing. The
 * service runs in this process on the p11shim module (over a real SoftHSMv2 token), so that
 * one call can be made to fail with a chosen CK_RV; and, for real, the login and the pooled
 * sessions are taken away from outside the service through a second handle on the same module.
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import request from 'supertest';
import { composeService, type RunningService } from '../../src/composeService.js';
import { CKR, ckrName } from '../../src/hsm/errors.js';
import { loadConfig } from '../../src/config/config.js';
import type { Handle } from '../../src/hsm/pkcs11/AsyncPkcs11.js';
import { ThreadedPkcs11 } from '../../src/hsm/pkcs11/ThreadedPkcs11.js';
import { signatureVerifies } from '../support/faultService.js';
import { ensureShimBuilt, ShimControl } from '../../testkit/p11shim.js';
import { createTestToken, type TestToken } from '../support/testToken.js';

const KEY = 'repair-ec';
const ALGORITHM = 'ECDSA_SHA_256';
const SESSIONS = 16;

let token: TestToken;
let shim: ShimControl;
let shimPath: string;
let svc: RunningService;
let publicKey: KeyObject;
const logs: { msg?: string; ckr?: string; failure?: string }[] = [];
let n = 0;

before(async () => {
  token = await createTestToken([{ name: KEY, spec: 'ECC_NIST_P256' }]);
  shimPath = ensureShimBuilt();
  shim = new ShimControl(join(token.dir, 'shim.control'));
  // The shim reads its environment once, when the module is first loaded in this process.
  Object.assign(process.env, shim.env());
  const config = loadConfig(token.env({ HSM_MODULE: shimPath, HSM_SESSIONS: String(SESSIONS) }));
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n').filter(Boolean)) logs.push(JSON.parse(line) as (typeof logs)[number]);
      done();
    },
  });
  svc = await composeService(config, pino({ level: 'debug' }, sink));
  const info = await request(svc.app).get(`/v1/keys/${KEY}`).expect(200);
  publicKey = createPublicKey(info.body.versions[0].publicKeyPem);
});

after(async () => {
  shim?.reset();
  await svc?.close();
  token?.cleanup();
});

/** Signs once and checks the caller sees a 200 with a signature that verifies. */
async function signsTransparently(): Promise<void> {
  const message = Buffer.from(`repair ${n++}`);
  const res = await request(svc.app)
    .post(`/v1/keys/${KEY}/sign`)
    .send({ algorithm: ALGORITHM, message: message.toString('base64') });
  assert.equal(
    res.status,
    200,
    `${res.text}\n${logs
      .slice(-20)
      .map((l) => JSON.stringify(l))
      .join('\n')}`,
  );
  assert.ok(signatureVerifies(publicKey, ALGORITHM, message, res.body.signature), 'the signature verifies');
}

/** Signs a batch of 40 while the shim fails the next `count` calls of `fn` with `rv`; the shim is reset after. */
async function batchWhileFailing(
  fn: string,
  rv: number,
  count: number,
  tag: string,
): Promise<{ messages: Buffer[]; results: { signature?: string; error?: { code: string } }[] }> {
  shim.fail(fn, rv, count);
  await shim.settle();
  const messages = Array.from({ length: 40 }, (_, i) => Buffer.from(`batch ${tag} ${i}`));
  const res = await request(svc.app)
    .post('/v1/sign/batch')
    .send({ requests: messages.map((m) => ({ keyName: KEY, algorithm: ALGORITHM, message: m.toString('base64') })) });
  shim.reset();
  await shim.settle();
  assert.equal(res.status, 200, res.text);
  return { messages, results: res.body.results };
}

function logged(ckr: string): boolean {
  return logs.some((l) => l.msg === 'HSM call failed' && l.ckr === ckr);
}

async function poolIsWhole(): Promise<void> {
  const h = svc.keyManager.health();
  assert.equal(h.ready, true, h.reason);
  assert.equal(h.sessions.inUse, 0);
  assert.equal(h.sessions.waiting, 0);
}

describe('one call fails with a chosen code (p11shim), the caller still gets a valid signature', () => {
  const cases: [string, string, number, number][] = [
    ['login lost', 'C_Sign', CKR.USER_NOT_LOGGED_IN, 1],
    ['object handle stale', 'C_Sign', CKR.OBJECT_HANDLE_INVALID, 1],
    ['key handle stale at C_SignInit', 'C_SignInit', CKR.KEY_HANDLE_INVALID, 1],
    ['session handle invalid', 'C_Sign', CKR.SESSION_HANDLE_INVALID, 1],
    ['session closed', 'C_SignInit', CKR.SESSION_CLOSED, 1],
    ['operation left active', 'C_SignInit', CKR.OPERATION_ACTIVE, 1],
    ['throttled twice (CloudHSM: CKR_FUNCTION_FAILED)', 'C_Sign', CKR.FUNCTION_FAILED, 2],
  ];
  for (const [what, fn, rv, count] of cases) {
    test(what, async () => {
      shim.fail(fn, rv, count);
      await shim.settle();
      await signsTransparently();
      shim.reset();
      await shim.settle();
      assert.ok(logged(ckrName(rv)), `the service met ${ckrName(rv)}`);
      if (rv === CKR.USER_NOT_LOGGED_IN) assert.ok(logs.some((l) => l.msg === 'HSM login was lost; logged in again'));
      await poolIsWhole();
    });
  }

  // A batch's chunk signs its items in one HSM call: a failure mid-chunk must cost no item its signature.
  for (const [what, fn, rv, count] of cases) {
    test(`batch of 40: ${what}`, async () => {
      const { messages, results } = await batchWhileFailing(fn, rv, count, what);
      assert.equal(results.length, 40);
      for (const [i, r] of results.entries()) {
        assert.ok(r.signature && signatureVerifies(publicKey, ALGORITHM, messages[i]!, r.signature), `item ${i}: ${JSON.stringify(r)}`);
      }
      assert.ok(logged(ckrName(rv)), `the service met ${ckrName(rv)}`);
      await poolIsWhole();
    });
  }

  test('batch: a client error fails only the item it hit; the items after it in its chunk are signed', async () => {
    const { messages, results } = await batchWhileFailing('C_SignInit', CKR.DATA_LEN_RANGE, 1, 'client');
    const failed = results.flatMap((r, i) => (r.error ? [i] : []));
    assert.equal(failed.length, 1, JSON.stringify(results.filter((r) => r.error)));
    assert.equal(results[failed[0]!]!.error!.code, 'INVALID_ARGUMENT');
    for (const [i, r] of results.entries()) {
      assert.ok(i === failed[0] || (r.signature && signatureVerifies(publicKey, ALGORITHM, messages[i]!, r.signature)), `item ${i}`);
    }
    assert.equal(svc.service.health().breaker, 'closed');
    await poolIsWhole();
  });

  test("batch: a failure that is neither retried nor the input's (the HSM refusing the credentials) fails the rest of its chunk with 503, never a 500", async () => {
    const { messages, results } = await batchWhileFailing('C_Sign', CKR.PIN_INCORRECT, 1, 'credentials');
    const failed = results.flatMap((r, i) => (r.error ? [i] : []));
    assert.ok(failed.length >= 1 && failed.length <= 16, `one chunk at most: ${failed.length}`);
    for (const i of failed) assert.equal(results[i]!.error!.code, 'HSM_UNAVAILABLE');
    for (const [i, r] of results.entries()) {
      assert.ok(failed.includes(i) || (r.signature && signatureVerifies(publicKey, ALGORITHM, messages[i]!, r.signature)), `item ${i}`);
    }
    await poolIsWhole();
    await signsTransparently();
  });

  test('a client error is not retried: the caller gets 400 at once', async () => {
    shim.fail('C_SignInit', CKR.DATA_LEN_RANGE, 1); // a retry would have succeeded
    await shim.settle();
    const res = await request(svc.app)
      .post(`/v1/keys/${KEY}/sign`)
      .send({ algorithm: ALGORITHM, message: Buffer.from('x').toString('base64') });
    shim.reset();
    await shim.settle();
    assert.equal(res.status, 400, res.text);
    assert.equal(res.body.error.code, 'INVALID_ARGUMENT');
    assert.equal(svc.service.health().breaker, 'closed');
    await signsTransparently();
  });
});

describe('taken away for real, from outside the service', () => {
  let other: ThreadedPkcs11;
  let own: Handle;

  before(async () => {
    // A second handle on the same module in the same process: PKCS#11 state (login, sessions) is per process.
    other = await ThreadedPkcs11.start(shimPath, 1);
    const slots = await other.getSlotList(true);
    let slot: Handle | undefined;
    for (const s of slots) if ((await other.getTokenLabel(s)) === token.label) slot = s;
    own = await other.openSession(slot!, 0x6);
  });

  after(async () => {
    await other?.closeSession(own).catch(() => undefined);
    // Not finalized: that would end the service's sessions too.
    await other?.close();
  });

  /**
   * The service's live sessions, by probing handle numbers. SoftHSMv2 hands out the lowest free
   * number, so the login session (opened first) comes first.
   */
  async function serviceSessions(): Promise<Handle[]> {
    const ownAlive = await other.getSessionState(own).then(
      () => true,
      () => false,
    );
    const live: Handle[] = [];
    for (let i = 1; i <= 4 * SESSIONS; i++) {
      const h = Buffer.alloc(own.length);
      h.writeUIntLE(i, 0, Math.min(6, own.length));
      if (ownAlive && h.equals(own)) continue;
      if (
        await other.getSessionState(h).then(
          () => true,
          () => false,
        )
      )
        live.push(h);
    }
    return live;
  }

  test('C_Logout from outside: the service logs in again', async () => {
    await signsTransparently();
    await other.logout(own);
    await signsTransparently();
    assert.ok(logs.some((l) => l.msg === 'HSM login was lost; logged in again'));
    await poolIsWhole();
  });

  test('every pooled session closed behind its back: dead sessions are swept, the login kept', async () => {
    await signsTransparently();
    const sessions = await serviceSessions();
    assert.ok(sessions.length >= 2, 'the pool and the login session');
    // The login session has the lowest handle; close all the others.
    for (const h of sessions.slice(1)) await other.closeSession(h);
    const recoveriesBefore = svc.keyManager.health().recoveries;
    await signsTransparently();
    assert.ok(logs.some((l) => l.msg === 'HSM sessions were closed behind our back; dropped them'));
    assert.equal(svc.keyManager.health().recoveries, recoveriesBefore, 'no re-initialization was needed');
    for (let i = 0; i < 5; i++) await signsTransparently();
    await poolIsWhole();
  });

  test('all sessions closed, the login session too (C_CloseAllSessions): the service rebuilds', async () => {
    await signsTransparently();
    const sessions = await serviceSessions();
    assert.ok(sessions.length >= 2);
    for (const h of sessions) await other.closeSession(h);
    const recoveriesBefore = svc.keyManager.health().recoveries;
    await signsTransparently();
    assert.ok(svc.keyManager.health().recoveries > recoveriesBefore, 'the module was re-initialized');
    for (let i = 0; i < 5; i++) await signsTransparently();
    await poolIsWhole();
    assert.equal((await serviceSessions()).length, SESSIONS + 1, 'no session leaked');
  });
});
