import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ServiceError } from '../../../src/errors.js';
import { Cancellation, withDeadline } from '../../../src/service/deadline.js';

const isDeadline = (e: unknown): boolean => e instanceof ServiceError && e.code === 'DEADLINE_EXCEEDED' && e.status === 504;

test('the work wins when it is in time', async () => {
  assert.equal(await withDeadline(Promise.resolve(1), Date.now() + 1000), 1);
});

test('a stalled call ends at the deadline with 504, and the signal tells the work to start nothing more', async () => {
  const controller = new AbortController();
  let settle!: (v: string) => void;
  const stalled = new Promise<string>((r) => (settle = r));
  const started = Date.now();
  await assert.rejects(withDeadline(stalled, Date.now() + 30, { cancel: controller }), isDeadline);
  assert.ok(Date.now() - started < 500);
  assert.ok(controller.signal.aborted);
  assert.ok(isDeadline(controller.signal.reason));
  settle('late'); // the HSM answers later: nothing breaks (the session goes back then)
});

test('a deadline already past rejects without waiting', async () => {
  const controller = new AbortController();
  await assert.rejects(withDeadline(new Promise(() => undefined), 5, { cancel: controller, now: () => 10 }), isDeadline);
  assert.ok(controller.signal.aborted);
});

test('Cancellation: the deadline aborts it once, with the reason; each listener runs once, a removed one never', async () => {
  const cancel = new Cancellation();
  const calls: string[] = [];
  const a = (): void => void calls.push('a');
  const b = (): void => void calls.push('b');
  cancel.addEventListener('abort', a);
  cancel.addEventListener('abort', b);
  cancel.removeEventListener('abort', a);
  await assert.rejects(withDeadline(new Promise(() => undefined), Date.now() + 20, { cancel }), isDeadline);
  assert.ok(cancel.aborted);
  assert.ok(isDeadline(cancel.reason));
  cancel.abort(new Error('again'));
  assert.ok(isDeadline(cancel.reason), 'a second abort changes nothing');
  cancel.addEventListener('abort', a);
  assert.deepEqual(calls, ['b'], 'b once; a removed before, and added after the abort, never');
});

test('Cancellation: as on an AbortSignal, a listener added twice runs once, and one removed by another during the abort does not run', () => {
  const cancel = new Cancellation();
  const calls: string[] = [];
  const b = (): void => void calls.push('b');
  const a = (): void => {
    calls.push('a');
    cancel.removeEventListener('abort', b);
  };
  const c = (): void => void calls.push('c');
  cancel.addEventListener('abort', c);
  cancel.addEventListener('abort', c);
  cancel.addEventListener('abort', a);
  cancel.addEventListener('abort', b);
  cancel.abort('stop');
  assert.deepEqual(calls, ['c', 'a']);
});

test('Cancellation: a listener that throws does not stop the others; the error is rethrown outside abort()', (t) => {
  const cancel = new Cancellation();
  const ran: number[] = [];
  cancel.addEventListener('abort', () => {
    throw new Error('listener bug');
  });
  cancel.addEventListener('abort', () => void ran.push(2));
  const deferred: (() => void)[] = [];
  t.mock.method(globalThis, 'queueMicrotask', (fn: () => void) => void deferred.push(fn));
  cancel.abort('stop');
  assert.deepEqual(ran, [2]);
  assert.equal(deferred.length, 1);
  assert.throws(deferred[0]!, /listener bug/);
});
