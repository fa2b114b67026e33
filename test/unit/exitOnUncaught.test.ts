/**
 * exitOnUncaught in a real process: an uncaught exception or an unhandled rejection ends it with
 * exit code 1 and exactly one fatal line (the error's type and message), without the stack or the
 * fields of a thrown value, which could hold anything.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { REPO_ROOT } from '../../testkit/repoRoot.js';

const dir = mkdtempSync(join(tmpdir(), 'exit-on-uncaught-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** Runs `body` after exitOnUncaught(createLogger('info')) in a process of its own. */
function run(name: string, body: string): { code: number | null; lines: string[] } {
  const file = join(dir, `${name}.ts`);
  writeFileSync(
    file,
    `import { exitOnUncaught } from ${JSON.stringify(join(REPO_ROOT, 'src/exitOnUncaught.ts'))};
import { createLogger } from ${JSON.stringify(join(REPO_ROOT, 'src/logger.ts'))};
exitOnUncaught(createLogger('info'));
${body}
setTimeout(() => console.log('still running'), 2000);
`,
  );
  const r = spawnSync(process.execPath, ['--import', 'tsx', file], { cwd: REPO_ROOT, encoding: 'utf8', timeout: 20_000 });
  return { code: r.status, lines: `${r.stdout}${r.stderr}`.split('\n').filter(Boolean) };
}

function oneFatalLine(r: { code: number | null; lines: string[] }): { msg: string; error: { type: string; message: string } } {
  assert.equal(r.code, 1, r.lines.join('\n'));
  assert.equal(r.lines.length, 1, r.lines.join('\n'));
  const record = JSON.parse(r.lines[0]!) as { level: number; msg: string; error: { type: string; message: string } };
  assert.equal(record.level, 60, 'fatal');
  assert.ok(!r.lines[0]!.includes('frame-4711'), 'no stack');
  return record;
}

test('an uncaught exception: one fatal line with its type and message, no stack, exit 1', () => {
  const r = oneFatalLine(
    run('throw', `const e = new RangeError('boom'); e.stack = 'RangeError: boom\\n    at frame-4711'; setTimeout(() => { throw e; }, 10);`),
  );
  assert.equal(r.msg, 'uncaught exception: exiting');
  assert.deepEqual(r.error, { type: 'RangeError', message: 'boom' });
});

test('an unhandled rejection: one fatal line, exit 1', () => {
  const r = oneFatalLine(run('reject', `const e = new TypeError('nope'); e.stack = 'TypeError: nope\\n    at frame-4711'; void Promise.reject(e);`));
  assert.equal(r.msg, 'unhandled rejection: exiting');
  assert.deepEqual(r.error, { type: 'TypeError', message: 'nope' });
});

test('a rejection with a value that is not an Error: its fields are not logged', () => {
  const r = run('object', `void Promise.reject({ pin: 'pin-9876', detail: 'frame-4711' });`);
  const record = oneFatalLine(r);
  assert.deepEqual(record.error, { type: 'object', message: '(not an Error)' });
  assert.ok(!r.lines[0]!.includes('pin-9876'));
});
