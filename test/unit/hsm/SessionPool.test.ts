import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ServiceError } from '../../../src/errors.js';
import { CKR } from '../../../src/hsm/errors.js';
import { SessionPool } from '../../../src/hsm/pkcs11/SessionPool.js';

function fakes(o: { size?: number; maxWaiting?: number; failOpen?: () => boolean } = {}) {
  let next = 1;
  const opened: number[] = [];
  const closed: number[] = [];
  const pool = new SessionPool({
    size: o.size ?? 2,
    maxWaiting: o.maxWaiting ?? 2,
    generation: 7,
    open: async () => {
      if (o.failOpen?.()) throw Object.assign(new Error('C_OpenSession failed'), { code: CKR.DEVICE_ERROR, method: 'C_OpenSession' });
      opened.push(next);
      return Buffer.from([next++]);
    },
    close: async (h) => {
      closed.push(h[0]!);
    },
  });
  return { pool, opened, closed };
}

const never = (): AbortSignal => new AbortController().signal;
const isOverloaded = (e: unknown): boolean => e instanceof ServiceError && e.code === 'OVERLOADED' && e.retryAfterSeconds === 1;

test('hands out sessions up to its size, then queues, then sheds with OVERLOADED at once', async () => {
  const { pool } = fakes({ size: 2, maxWaiting: 2 });
  await pool.fill();
  const a = await pool.acquire(never());
  const b = await pool.acquire(never());
  assert.equal(a.generation, 7);
  const w1 = pool.acquire(never());
  const w2 = pool.acquire(never());
  assert.deepEqual(pool.stats, { inUse: 2, idle: 0, waiting: 2, opening: 0 });
  await assert.rejects(pool.acquire(never()), isOverloaded);
  pool.release(a);
  assert.equal(await w1, a, 'the longest waiter gets it');
  pool.release(b);
  assert.equal(await w2, b);
});

test('a waiter whose deadline passes leaves the queue at once, making room', async () => {
  const { pool } = fakes({ size: 1, maxWaiting: 1 });
  await pool.fill();
  const held = await pool.acquire(never());
  const ac = new AbortController();
  const waiting = pool.acquire(ac.signal);
  await assert.rejects(pool.acquire(never()), isOverloaded);
  ac.abort(new ServiceError('DEADLINE_EXCEEDED', 'late'));
  await assert.rejects(waiting, /late/);
  assert.equal(pool.stats.waiting, 0);
  const next = pool.acquire(never());
  pool.release(held);
  assert.equal(await next, held, 'the session went to a caller still waiting');
});

test('a session the HSM says is gone is dropped, never closed (its handle may name a new session)', async () => {
  const { pool, closed } = fakes();
  await pool.fill();
  const s = await pool.acquire(never());
  s.gone = true;
  pool.release(s);
  const t = await pool.acquire(never());
  pool.destroy(t);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(closed, [t.handle[0]], 'only the destroyed live session was closed');
  assert.equal(pool.stats.inUse + pool.stats.idle, 0);
});

test('a destroyed session is replaced for a waiter with one C_OpenSession; a failure is not retried in a loop', async () => {
  let failing = false;
  let attempts = 0;
  const { pool } = fakes({
    size: 1,
    maxWaiting: 3,
    failOpen: () => {
      attempts++;
      return failing;
    },
  });
  await pool.fill();
  const s = await pool.acquire(never());
  const waiters = [pool.acquire(never()), pool.acquire(never()), pool.acquire(never())];
  failing = true;
  const before = attempts;
  pool.destroy(s);
  await assert.rejects(waiters[0]!, /C_OpenSession failed/);
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(attempts - before, 1, 'one open attempt, not a loop');
  assert.equal(pool.stats.waiting, 2, 'the other waiters still wait (their deadlines bound them)');
  pool.abandon(new Error('recovering'));
  await assert.rejects(waiters[1]!, /recovering/);
  await assert.rejects(waiters[2]!, /recovering/);
});

test('abandon (lost connection): waiters fail now, and no session is closed later', async () => {
  const { pool, closed } = fakes({ size: 2, maxWaiting: 1 });
  await pool.fill();
  const a = await pool.acquire(never());
  await pool.acquire(never());
  const w = pool.acquire(never());
  pool.abandon(new ServiceError('HSM_UNAVAILABLE', 'recovering', 1));
  await assert.rejects(w, /recovering/);
  await assert.rejects(pool.acquire(never()), /recovering/);
  pool.release(a);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(closed, [], 'C_Finalize ends them; closing an old handle could close a new session');
});

test('shutdown waits for borrowed sessions, then closes them all', async () => {
  const { pool, closed } = fakes({ size: 2 });
  await pool.fill();
  const a = await pool.acquire(never());
  setTimeout(() => pool.release(a), 30);
  await pool.shutdown(new Error('closing'), 1000);
  assert.deepEqual(closed.sort(), [1, 2]);
});

test('sweep drops the idle sessions the HSM no longer knows and keeps the others', async () => {
  const { pool } = fakes({ size: 3 });
  await pool.fill();
  const dropped = await pool.sweep(async (h) => h[0] !== 2);
  assert.equal(dropped, 1);
  assert.deepEqual(pool.stats, { inUse: 0, idle: 2, waiting: 0, opening: 0 });
  const s = [await pool.acquire(never()), await pool.acquire(never()), await pool.acquire(never())];
  assert.deepEqual(s.map((x) => x.handle[0]).sort(), [1, 3, 4], 'a fresh session replaces the dead one on demand');
});
