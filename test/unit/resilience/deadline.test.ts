import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ServiceError } from '../../../src/errors.js';
import { withDeadline } from '../../../src/service/deadline.js';

const isDeadline = (e: unknown): boolean => e instanceof ServiceError && e.code === 'DEADLINE_EXCEEDED' && e.status === 504;

test('the work wins when it is in time', async () => {
  assert.equal(await withDeadline(Promise.resolve(1), Date.now() + 1000), 1);
});

test('a stalled call ends at the deadline with 504, and the signal tells the work to start nothing more', async () => {
  const controller = new AbortController();
  let settle!: (v: string) => void;
  const stalled = new Promise<string>((r) => (settle = r));
  const started = Date.now();
  await assert.rejects(withDeadline(stalled, Date.now() + 30, { controller }), isDeadline);
  assert.ok(Date.now() - started < 500);
  assert.ok(controller.signal.aborted);
  assert.ok(isDeadline(controller.signal.reason));
  settle('late'); // the HSM answers later: nothing breaks (the session goes back then)
});

test('a deadline already past rejects without waiting', async () => {
  const controller = new AbortController();
  await assert.rejects(withDeadline(new Promise(() => undefined), 5, { controller, now: () => 10 }), isDeadline);
  assert.ok(controller.signal.aborted);
});
