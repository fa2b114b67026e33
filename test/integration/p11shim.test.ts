/**
 * Checks the p11shim test module against a throwaway SoftHSMv2 token: that it forwards
 * faithfully, and that each control directive has the effect the README promises.
 */
import { after, before, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, createPublicKey, verify as verifySignature } from 'node:crypto';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pkcs11js from 'pkcs11js';
import { CKR } from '../../src/hsm/errors.js';
import { ecParamsFor } from '../../src/hsm/pkcs11/publicKey.js';
import { REPO_ROOT } from '../../testkit/repoRoot.js';
import { ShimControl, ensureShimBuilt } from '../../testkit/p11shim.js';
import { createTestToken, type TestToken } from '../support/testToken.js';

const KEY_LABEL = 'shim-p256';
// DER of OID 1.2.840.10045.3.1.7 (prime256v1), the CKA_EC_PARAMS for P-256.
const P256_PARAMS = ecParamsFor('ECC_NIST_P256');
const SESSION_FLAGS = pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION;
const ECDSA = { mechanism: pkcs11js.CKM_ECDSA };
const MESSAGE = Buffer.from('p11shim integration test');
const DIGEST = createHash('sha256').update(MESSAGE).digest();

let token: TestToken;
/** Set from the test token in before(). */
let USER_PIN: string;
let TOKEN_LABEL: string;
let ctl: ShimControl;
let shimPath: string;
let lib: pkcs11js.PKCS11;

function tokenSlot(): Buffer {
  const slot = lib.C_GetSlotList(true).find((s) => lib.C_GetTokenInfo(s).label.trim() === TOKEN_LABEL);
  assert.ok(slot, `no slot holds token ${TOKEN_LABEL}`);
  return slot;
}

function openUserSession(): Buffer {
  const session = lib.C_OpenSession(tokenSlot(), SESSION_FLAGS);
  try {
    lib.C_Login(session, pkcs11js.CKU_USER, USER_PIN);
  } catch (e) {
    // Login is per application, not per session.
    if ((e as { code?: number }).code !== pkcs11js.CKR_USER_ALREADY_LOGGED_IN) throw e;
  }
  return session;
}

function generateKeyPair(session: Buffer): pkcs11js.KeyPair {
  return lib.C_GenerateKeyPair(
    session,
    { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN },
    [
      { type: pkcs11js.CKA_TOKEN, value: true },
      { type: pkcs11js.CKA_LABEL, value: KEY_LABEL },
      { type: pkcs11js.CKA_EC_PARAMS, value: P256_PARAMS },
      { type: pkcs11js.CKA_VERIFY, value: true },
    ],
    [
      { type: pkcs11js.CKA_TOKEN, value: true },
      { type: pkcs11js.CKA_LABEL, value: KEY_LABEL },
      { type: pkcs11js.CKA_PRIVATE, value: true },
      { type: pkcs11js.CKA_SENSITIVE, value: true },
      { type: pkcs11js.CKA_SIGN, value: true },
    ],
  );
}

function findKeys(session: Buffer, objectClass: number): Buffer[] {
  lib.C_FindObjectsInit(session, [
    { type: pkcs11js.CKA_CLASS, value: objectClass },
    { type: pkcs11js.CKA_LABEL, value: KEY_LABEL },
  ]);
  try {
    return lib.C_FindObjects(session, 10);
  } finally {
    lib.C_FindObjectsFinal(session);
  }
}

/** The test key pair, made here if the forwarding test did not run first. */
function keyPair(session: Buffer): pkcs11js.KeyPair {
  const [privateKey] = findKeys(session, pkcs11js.CKO_PRIVATE_KEY);
  const [publicKey] = findKeys(session, pkcs11js.CKO_PUBLIC_KEY);
  if (privateKey && publicKey) return { privateKey, publicKey };
  return generateKeyPair(session);
}

function sign(session: Buffer, key: Buffer): Buffer {
  lib.C_SignInit(session, ECDSA, key);
  return lib.C_Sign(session, DIGEST, Buffer.alloc(64));
}

function hsmVerify(session: Buffer, key: Buffer, signature: Buffer): boolean {
  lib.C_VerifyInit(session, ECDSA, key);
  return lib.C_Verify(session, DIGEST, signature);
}

function isP11Error(code: number): (e: unknown) => boolean {
  return (e) => {
    assert.ok(e instanceof pkcs11js.Pkcs11Error, `expected a Pkcs11Error, got ${String(e)}`);
    assert.equal(e.code, code, `expected CK_RV 0x${code.toString(16)}, got 0x${e.code.toString(16)} (${e.message})`);
    return true;
  };
}

function reinitialize(): void {
  lib.C_Finalize();
  lib.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
}

before(async () => {
  token = await createTestToken();
  USER_PIN = token.pin;
  TOKEN_LABEL = token.label;

  shimPath = ensureShimBuilt();
  ctl = new ShimControl(join(token.dir, 'control'));
  // The shim reads its environment once, when it is loaded.
  delete process.env.P11SHIM_LATENCY_US;
  Object.assign(process.env, ctl.env());
  lib = new pkcs11js.PKCS11();
  lib.load(shimPath);
  lib.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
});

after(() => {
  ctl?.reset();
  try {
    lib?.C_Finalize();
  } catch {
    // A failed test may have left it finalised.
  }
  lib?.close();
  token?.cleanup();
});

beforeEach(async () => {
  ctl.reset();
  await ctl.settle();
});

test('forwards calls to the real module unchanged', () => {
  const session = openUserSession();
  try {
    const keys = generateKeyPair(session);
    const signature = sign(session, keys.privateKey);
    assert.equal(signature.length, 64);
    assert.equal(hsmVerify(session, keys.publicKey, signature), true);

    // CKA_EC_POINT is a DER OCTET STRING around the uncompressed point 04||X||Y.
    const [attr] = lib.C_GetAttributeValue(session, keys.publicKey, [{ type: pkcs11js.CKA_EC_POINT }]);
    const der = attr?.value as Buffer;
    assert.equal(der[0], 0x04);
    const point = der.subarray(2);
    assert.equal(point.length, 65);
    assert.equal(point[0], 0x04);
    const publicKey = createPublicKey({
      format: 'jwk',
      key: {
        kty: 'EC',
        crv: 'P-256',
        x: point.subarray(1, 33).toString('base64url'),
        y: point.subarray(33).toString('base64url'),
      },
    });
    assert.equal(verifySignature('sha256', MESSAGE, { key: publicKey, dsaEncoding: 'ieee-p1363' }, signature), true);
  } finally {
    lib.C_CloseSession(session);
  }
});

test('latency_us delays every networked call', async (t) => {
  const session = openUserSession();
  try {
    const { privateKey } = keyPair(session);
    const rounds = 20;
    const timeRounds = (): number => {
      const start = performance.now();
      for (let i = 0; i < rounds; i++) sign(session, privateKey);
      return performance.now() - start;
    };
    const baseline = timeRounds();

    ctl.latency(2000);
    await ctl.settle();
    sign(session, privateKey); // the first call after settling is the one that notices
    const delayed = timeRounds();
    t.diagnostic(`C_SignInit+C_Sign: ${(baseline / rounds).toFixed(2)} ms plain, ${(delayed / rounds).toFixed(2)} ms with 2 ms latency`);
    // Two delayed calls per round; nanosleep never returns early, so this is a hard lower bound.
    assert.ok(delayed >= rounds * 2 * 2, `${rounds} rounds took ${delayed.toFixed(1)} ms`);
  } finally {
    lib.C_CloseSession(session);
  }
});

test('fail=C_Sign:0x30:2 fails exactly the next two C_Sign calls', async () => {
  const session = openUserSession();
  try {
    const { privateKey, publicKey } = keyPair(session);
    ctl.fail('C_Sign', CKR.DEVICE_ERROR, 2);
    await ctl.settle();
    for (let i = 0; i < 2; i++) {
      // A fresh C_SignInit after each failure also proves the shim ended the real module's
      // operation, as a real HSM does when C_Sign fails.
      lib.C_SignInit(session, ECDSA, privateKey);
      assert.throws(() => lib.C_Sign(session, DIGEST, Buffer.alloc(64)), isP11Error(CKR.DEVICE_ERROR));
    }
    for (let i = 0; i < 2; i++) {
      assert.equal(hsmVerify(session, publicKey, sign(session, privateKey)), true);
    }
  } finally {
    lib.C_CloseSession(session);
  }
});

test('fail=C_SignInit@LABEL:RV fails C_SignInit on that key only, and C_VerifyInit is keyed too', async () => {
  const session = openUserSession();
  const otherLabel = 'shim-other';
  try {
    const { privateKey, publicKey } = keyPair(session);
    const other = lib.C_GenerateKeyPair(
      session,
      { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN },
      [
        { type: pkcs11js.CKA_TOKEN, value: false },
        { type: pkcs11js.CKA_LABEL, value: otherLabel },
        { type: pkcs11js.CKA_EC_PARAMS, value: P256_PARAMS },
        { type: pkcs11js.CKA_VERIFY, value: true },
      ],
      [
        { type: pkcs11js.CKA_TOKEN, value: false },
        { type: pkcs11js.CKA_LABEL, value: otherLabel },
        { type: pkcs11js.CKA_SIGN, value: true },
      ],
    );
    ctl.failKey('C_SignInit', CKR.KEY_FUNCTION_NOT_PERMITTED, KEY_LABEL).failKey('C_VerifyInit', CKR.KEY_HANDLE_INVALID, otherLabel, 1);
    await ctl.settle();
    assert.throws(() => lib.C_SignInit(session, ECDSA, privateKey), isP11Error(CKR.KEY_FUNCTION_NOT_PERMITTED));
    assert.throws(() => lib.C_SignInit(session, ECDSA, privateKey), isP11Error(CKR.KEY_FUNCTION_NOT_PERMITTED), 'no count: every call');
    const otherSignature = sign(session, other.privateKey);
    assert.throws(() => lib.C_VerifyInit(session, ECDSA, other.publicKey), isP11Error(CKR.KEY_HANDLE_INVALID));
    assert.equal(hsmVerify(session, other.publicKey, otherSignature), true, 'a count of 1: the next call goes through');
    ctl.reset();
    await ctl.settle();
    assert.equal(hsmVerify(session, publicKey, sign(session, privateKey)), true);
  } finally {
    lib.C_CloseSession(session);
  }
});

test('a label on a function that names no key is a bad line: ignored', async () => {
  const session = openUserSession();
  try {
    const { privateKey, publicKey } = keyPair(session);
    ctl.failKey('C_Sign', CKR.DEVICE_ERROR, KEY_LABEL);
    await ctl.settle();
    assert.equal(hsmVerify(session, publicKey, sign(session, privateKey)), true);
  } finally {
    lib.C_CloseSession(session);
  }
});

test('down=1 loses the connection until the application re-initialises', async () => {
  let session = openUserSession();
  const { privateKey } = keyPair(session);

  ctl.down(true);
  await ctl.settle();
  assert.throws(() => lib.C_SignInit(session, ECDSA, privateKey), isP11Error(CKR.DEVICE_ERROR));
  assert.throws(() => lib.C_OpenSession(tokenSlot(), SESSION_FLAGS), isP11Error(CKR.DEVICE_ERROR));

  // Re-initialising while the HSM is still down does not reconnect.
  reinitialize();
  assert.throws(() => lib.C_GetSlotList(true), isP11Error(CKR.DEVICE_ERROR));

  ctl.down(false);
  await ctl.settle();
  assert.throws(() => lib.C_GetSlotList(true), isP11Error(CKR.DEVICE_ERROR));
  assert.throws(() => lib.C_GetSessionInfo(session), isP11Error(CKR.DEVICE_ERROR));

  reinitialize();
  session = lib.C_OpenSession(tokenSlot(), SESSION_FLAGS);
  try {
    // Throws CKR_USER_ALREADY_LOGGED_IN if the old login had survived.
    lib.C_Login(session, pkcs11js.CKU_USER, USER_PIN);
    const keys = keyPair(session);
    assert.equal(hsmVerify(session, keys.publicKey, sign(session, keys.privateKey)), true);
  } finally {
    lib.C_CloseSession(session);
  }
});

test('stall=1 blocks calls until it is cleared', async () => {
  const session = openUserSession();
  try {
    const { privateKey, publicKey } = keyPair(session);
    lib.C_SignInit(session, ECDSA, privateKey);
    ctl.stall(true);
    await ctl.settle();
    let settled = false;
    const pending = lib.C_SignAsync(session, DIGEST, Buffer.alloc(64)).finally(() => {
      settled = true;
    });
    try {
      await sleep(200);
      assert.equal(settled, false, 'C_SignAsync settled while stalled');
    } finally {
      ctl.stall(false);
    }
    const signature = await Promise.race([pending, sleep(2000).then(() => assert.fail('C_SignAsync still blocked 2 s after the stall was cleared'))]);
    assert.equal(hsmVerify(session, publicKey, signature), true);
  } finally {
    lib.C_CloseSession(session);
  }
});

// Runs in its own process because libuv sizes its thread pool once, at first use, which the
// module loader has already done by the time this file runs.
const CONCURRENCY_CHILD = `
import pkcs11js from 'pkcs11js';
import { createHash } from 'node:crypto';
const { SHIM_LIBRARY, USER_PIN, TOKEN_LABEL } = process.env;
const SESSIONS = 16, SIGNATURES = 200;
const lib = new pkcs11js.PKCS11();
lib.load(SHIM_LIBRARY);
lib.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
try {
  const slot = lib.C_GetSlotList(true).find((s) => lib.C_GetTokenInfo(s).label.trim() === TOKEN_LABEL);
  const flags = pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION;
  const sessions = Array.from({ length: SESSIONS }, () => lib.C_OpenSession(slot, flags));
  lib.C_Login(sessions[0], pkcs11js.CKU_USER, USER_PIN);
  const keys = lib.C_GenerateKeyPair(sessions[0], { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN },
    [{ type: pkcs11js.CKA_EC_PARAMS, value: Buffer.from('${P256_PARAMS.toString('hex')}', 'hex') },
     { type: pkcs11js.CKA_VERIFY, value: true }],
    [{ type: pkcs11js.CKA_SIGN, value: true }, { type: pkcs11js.CKA_SENSITIVE, value: true }]);
  const digest = createHash('sha256').update('concurrency').digest();
  const signatures = [];
  const failures = [];
  let started = 0, inFlight = 0, maxInFlight = 0;
  await Promise.all(sessions.map(async (session) => {
    while (started < SIGNATURES) {
      started++;
      try {
        lib.C_SignInit(session, { mechanism: pkcs11js.CKM_ECDSA }, keys.privateKey);
        maxInFlight = Math.max(maxInFlight, ++inFlight);
        try {
          signatures.push(await lib.C_SignAsync(session, digest, Buffer.alloc(64)));
        } finally {
          inFlight--;
        }
      } catch (e) {
        failures.push(String(e && e.message));
      }
    }
  }));
  let verified = 0;
  for (const signature of signatures) {
    lib.C_VerifyInit(sessions[0], { mechanism: pkcs11js.CKM_ECDSA }, keys.publicKey);
    if (lib.C_Verify(sessions[0], digest, signature)) verified++;
  }
  console.log(JSON.stringify({ signed: signatures.length, verified, failures, maxInFlight,
    threadPool: process.env.UV_THREADPOOL_SIZE }));
} finally {
  lib.C_Finalize();
  lib.close();
}
`;

test('200 concurrent C_SignAsync over 16 sessions all succeed', { timeout: 20_000 }, async (t) => {
  const childCtl = new ShimControl(join(token.dir, 'control-concurrency')).latency(500);
  const child = new Promise<string>((resolve, reject) => {
    execFile(
      process.execPath,
      ['--input-type=module', '-e', CONCURRENCY_CHILD],
      {
        cwd: REPO_ROOT,
        env: {
          ...process.env,
          ...childCtl.env(),
          UV_THREADPOOL_SIZE: '8',
          SHIM_LIBRARY: shimPath,
          USER_PIN,
          TOKEN_LABEL,
        },
        timeout: 15_000,
      },
      (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout)),
    );
  });
  // Rewrite the control file while the child's threads are busy, so reloads race with calls.
  let done = false;
  void child
    .finally(() => {
      done = true;
    })
    // Only so that this chain's rejection is not unhandled: `await child` below reports the child's failure.
    .catch(() => undefined);
  for (let i = 0; !done && i < 200; i++) {
    childCtl.latency(i % 2 === 0 ? 400 : 500);
    await sleep(5);
  }
  const result = JSON.parse((await child).trim()) as {
    signed: number;
    verified: number;
    failures: string[];
    maxInFlight: number;
    threadPool: string;
  };
  t.diagnostic(`max in flight: ${result.maxInFlight}, thread pool: ${result.threadPool}`);
  assert.deepEqual(result.failures, []);
  assert.equal(result.signed, 200);
  assert.equal(result.verified, 200);
  assert.equal(result.threadPool, '8');
  assert.equal(result.maxInFlight, 16);
});
