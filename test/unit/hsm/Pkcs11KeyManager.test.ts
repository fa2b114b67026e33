import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { afterEach, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { ServiceError } from '../../../src/errors.js';
import { CKR, HsmError } from '../../../src/hsm/errors.js';
import { Pkcs11KeyManager } from '../../../src/hsm/pkcs11/Pkcs11KeyManager.js';
import { FakePkcs11, signedBy } from './fakePkcs11.js';

const digest = createHash('sha256').update('x').digest();
let km: Pkcs11KeyManager | undefined;

afterEach(async () => {
  await km?.close();
  km = undefined;
});

async function start(fake: FakePkcs11, sessions = 2, onRecovered?: () => void): Promise<Pkcs11KeyManager> {
  km = new Pkcs11KeyManager(fake, {
    ...(onRecovered ? { onRecovered } : {}),
    tokenLabel: 'tok',
    pin: '1234',
    sessions,
    maxWaiting: 8,
    acquireTimeoutMs: 1000,
    keyRefreshMs: 3_600_000,
    logger: pino({ level: 'silent' }),
    recovery: { baseMs: 5, capMs: 20 },
  });
  await km.start();
  return km;
}

const sign = (k: Pkcs11KeyManager, name: string) => k.sign({ name, algorithm: 'ECDSA_SHA_256', digest });

async function until(check: () => boolean, ms = 2000): Promise<void> {
  for (const end = Date.now() + ms; !check(); await sleep(5)) if (Date.now() > end) throw new Error('timed out');
}

test('signs with the key asked for', async () => {
  const k = await start(new FakePkcs11());
  assert.equal(signedBy((await sign(k, 'a')).signature), 'a');
  assert.equal(signedBy((await sign(k, 'b')).signature), 'b');
  assert.equal(k.health().ready, true);
});

test('CKR_USER_ALREADY_LOGGED_IN at login counts as logged in', async () => {
  const fake = new FakePkcs11();
  await fake.initialize();
  fake.loggedIn = true; // another part of the process logged in first
  const k = await start(fake);
  assert.equal(signedBy((await sign(k, 'a')).signature), 'a');
});

test('after a lost connection, no key handle or session from before the re-initialization is used', async () => {
  const fake = new FakePkcs11();
  const k = await start(fake, 1);
  // The only session is busy at the HSM; a second request has resolved its key and waits for it.
  let release!: () => void;
  fake.signGate = new Promise((r) => (release = r));
  const first = sign(k, 'a');
  const second = sign(k, 'a');
  await sleep(10);
  assert.equal(k.health().sessions.waiting, 1);
  // The connection drops under the first call.
  fake.down = true;
  fake.signGate = undefined;
  release();
  await assert.rejects(first, (e: unknown) => e instanceof HsmError && e.failure === 'connectionLost');
  await assert.rejects(
    second,
    (e: unknown) => e instanceof HsmError && e.failure === 'connectionLost',
    'the waiter fails fast instead of signing with an old handle',
  );
  assert.equal(k.health().ready, false);
  assert.equal(k.health().recovering, true);
  await assert.rejects(sign(k, 'a'), (e: unknown) => e instanceof HsmError && e.ckr === 'RECOVERING');

  fake.down = false;
  await until(() => k.health().ready);
  // Handles were swapped by the re-initialization: the old handle of 'a' now names 'b'.
  for (let i = 0; i < 4; i++) {
    assert.equal(signedBy((await sign(k, 'a')).signature), 'a');
    assert.equal(signedBy((await sign(k, 'b')).signature), 'b');
  }
  assert.equal(k.health().recoveries, 1);
  assert.equal(k.health().sessions.inUse, 0);
});

test('recovery runs one at a time and backs off while the HSM stays down', async () => {
  const fake = new FakePkcs11();
  let recovered = 0;
  const k = await start(fake, 2, () => recovered++);
  fake.down = true;
  await Promise.allSettled([sign(k, 'a'), sign(k, 'b'), sign(k, 'a')]);
  const before = fake.calls.get('C_Initialize') ?? 0;
  await sleep(300);
  const attempts = (fake.calls.get('C_Initialize') ?? 0) - before;
  // Backoff capped at 20 ms with full jitter: about 30 attempts in 300 ms, never a tight loop.
  assert.ok(attempts > 3 && attempts < 120, `${attempts} recovery attempts in 300 ms`);
  assert.equal(k.health().recovering, true);
  fake.down = false;
  await until(() => k.health().ready);
  assert.equal(k.health().recoveries, 1, 'one recovery, however many requests saw the failure');
  assert.equal(recovered, 1, 'and it was announced (the breaker closes on it)');
  assert.equal(signedBy((await sign(k, 'b')).signature), 'b');
});

test('a lost login is restored once for all the callers that saw it', async () => {
  const fake = new FakePkcs11();
  const k = await start(fake, 4);
  await fake.logout();
  const logins = fake.calls.get('C_Login') ?? 0;
  const results = await Promise.allSettled([sign(k, 'a'), sign(k, 'a'), sign(k, 'b'), sign(k, 'b')]);
  // The KeyManager repairs but does not retry: the callers' retry (one layer up) succeeds.
  for (const r of results) assert.ok(r.status === 'rejected' && r.reason instanceof HsmError && r.reason.failure === 'loginLost');
  assert.equal((fake.calls.get('C_Login') ?? 0) - logins, 1);
  assert.equal(signedBy((await sign(k, 'a')).signature), 'a');
});

test('a scan while logged out does not empty the key cache (keys would turn into 404s)', async () => {
  const fake = new FakePkcs11();
  const k = await start(fake);
  await fake.logout();
  await assert.rejects(k.keys.refresh());
  assert.equal(k.keys.size, 2, 'the cache kept its keys');
  assert.equal(fake.loggedIn, true, 'and the scan logged in again');
  await k.keys.refresh();
  assert.equal(k.keys.size, 2);
});

test('all sessions closed behind its back, the login session too: rebuilt without a restart', async () => {
  const fake = new FakePkcs11();
  const k = await start(fake);
  fake.closeAllSessions();
  await assert.rejects(sign(k, 'a'), (e: unknown) => e instanceof HsmError && e.failure === 'sessionFatal');
  await until(() => k.health().ready);
  assert.equal(signedBy((await sign(k, 'a')).signature), 'a');
  assert.equal(k.health().recoveries, 1);
});

test('throttling (CKR_FUNCTION_FAILED) is reported as retryable without touching sessions or the module', async () => {
  const fake = new FakePkcs11();
  const k = await start(fake);
  fake.signFailures.push(CKR.FUNCTION_FAILED);
  await assert.rejects(sign(k, 'a'), (e: unknown) => e instanceof HsmError && e.failure === 'throttled' && e.retryable);
  assert.equal(k.health().recoveries, 0);
  assert.equal(signedBy((await sign(k, 'a')).signature), 'a');
});

test('signMany: items signed before an HSM failure keep their signatures; the failing item and the untried rest carry it', async () => {
  const fake = new FakePkcs11();
  const k = await start(fake, 2);
  const reqs = ['a', 'b', 'a', 'b', 'a'].map((name) => ({ name, algorithm: 'ECDSA_SHA_256' as const, digest }));
  fake.signFailures.push(undefined, undefined, CKR.SESSION_HANDLE_INVALID);
  const out = await k.signMany(reqs);
  assert.deepEqual(
    out.slice(0, 2).map((o) => o && !(o instanceof Error) && signedBy(o.signature)),
    ['a', 'b'],
  );
  assert.ok(out[2] instanceof HsmError && out[2].retryable, String(out[2]));
  assert.deepEqual(out.slice(3), [out[2], out[2]], 'the items after it were not tried and carry the same failure');
});

test('signMany: an input the HSM refuses fails its item only; unknown keys and wrong algorithms are per item too', async () => {
  const fake = new FakePkcs11();
  const k = await start(fake, 2);
  fake.signFailures.push(undefined, CKR.DATA_LEN_RANGE);
  const out = await k.signMany([
    { name: 'a', algorithm: 'ECDSA_SHA_256', digest },
    { name: 'nope', algorithm: 'ECDSA_SHA_256', digest },
    { name: 'b', algorithm: 'RSASSA_PSS_SHA_256', digest },
    { name: 'b', algorithm: 'ECDSA_SHA_256', digest },
    { name: 'a', algorithm: 'ECDSA_SHA_256', digest },
    { name: 'b', algorithm: 'ECDSA_SHA_256', digest },
  ]);
  const codes = out.map((o) => (o instanceof ServiceError ? o.code : o ? signedBy(o.signature) : o));
  assert.deepEqual(codes, ['a', 'NOT_FOUND', 'INVALID_ARGUMENT', 'INVALID_ARGUMENT', 'a', 'b']);
  assert.equal(k.health().sessions.inUse, 0);
});

test('a key deleted on the HSM behind the cache: its stale handle removes it, and listing keys still works', async () => {
  const fake = new FakePkcs11();
  const k = await start(fake, 2);
  fake.keys.splice(1, 1); // key 'b' (its only version) destroyed by another process
  await assert.rejects(sign(k, 'b'), (e: unknown) => e instanceof HsmError && e.failure === 'handleStale');
  assert.deepEqual(
    (await k.listKeys()).map((x) => x.name),
    ['a'],
  );
  await assert.rejects(k.getKey('b'), (e: unknown) => e instanceof ServiceError && e.code === 'NOT_FOUND');
});

test('a key whose public key was not on the token at one scan is served after a later one; its reason is logged once', async () => {
  const fake = new FakePkcs11();
  fake.publicHidden.add('b'); // the pair is being created by another process: private key written, public not yet
  const lines: string[] = [];
  km = new Pkcs11KeyManager(fake, {
    tokenLabel: 'tok',
    pin: '1234',
    sessions: 2,
    maxWaiting: 8,
    acquireTimeoutMs: 1000,
    keyRefreshMs: 3_600_000,
    logger: pino({ level: 'warn' }, { write: (l: string) => void lines.push(l) }),
  });
  await km.start();
  await assert.rejects(sign(km, 'b'), (e: unknown) => e instanceof ServiceError && e.code === 'NOT_FOUND');
  await sleep(1100); // the next rescan a miss may trigger
  await assert.rejects(sign(km, 'b'), (e: unknown) => e instanceof ServiceError && e.code === 'NOT_FOUND');
  assert.equal(lines.filter((l) => l.includes('not served')).length, 1, 'the same reason is reported once');
  fake.publicHidden.delete('b');
  await sleep(1100);
  assert.equal(signedBy((await sign(km, 'b')).signature), 'b', 'served once its public key is there');
});

/**
 * Counts the calls that reach the binding, each of which costs an event-loop turn: a recovery
 * under load must not wait a turn per step or per key.
 */
function countCalls(fake: FakePkcs11): Map<string, number> {
  const calls = new Map<string, number>();
  // Calls the fake makes to itself (inside connect or findAndRead) are not the binding's.
  let depth = 0;
  for (const name of [
    'connect',
    'initialize',
    'finalize',
    'getSlotList',
    'getTokenLabel',
    'openSession',
    'login',
    'findObjects',
    'getAttributes',
    'findAndRead',
  ] as const) {
    const original = (fake[name] as (...a: unknown[]) => Promise<unknown>).bind(fake);
    (fake as unknown as Record<string, unknown>)[name] = async (...args: unknown[]) => {
      if (depth === 0) calls.set(name, (calls.get(name) ?? 0) + 1);
      depth++;
      try {
        return await original(...args);
      } finally {
        depth--;
      }
    };
  }
  return calls;
}

test('start-up and recovery reach the binding in three calls: connect, then two for the key scan, whatever the number of keys', async () => {
  const fake = new FakePkcs11();
  const calls = countCalls(fake);
  const k = await start(fake, 4);
  assert.deepEqual(Object.fromEntries(calls), { connect: 1, findAndRead: 2 });
  fake.down = true;
  await assert.rejects(sign(k, 'a'));
  calls.clear();
  fake.down = false;
  await until(() => k.health().ready && k.health().recoveries === 1);
  // Failed attempts while the HSM was down are each one connect; the successful one adds the two scan calls.
  assert.deepEqual(Object.fromEntries(calls), { connect: calls.get('connect')!, findAndRead: 2 });
  assert.ok(calls.get('connect')! >= 1);
  assert.equal(signedBy((await sign(k, 'b')).signature), 'b');
});
