import assert from 'node:assert/strict';
import { ServiceError, type ErrorCode } from '../../../src/errors.js';

/** Asserts that `fn` throws or rejects with a ServiceError of `code` whose message matches `message`. */
export async function rejectsWith(fn: () => unknown, code: ErrorCode, message: RegExp): Promise<void> {
  await assert.rejects(
    async () => {
      await fn();
    },
    (e: unknown) => {
      assert.ok(e instanceof ServiceError, `expected a ServiceError, got ${String(e)}`);
      assert.equal(e.code, code, `code of "${e.message}"`);
      assert.match(e.message, message);
      return true;
    },
  );
}
