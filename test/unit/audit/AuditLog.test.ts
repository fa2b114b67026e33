/**
 * The audit log's writer against real files, pipes and devices: the line format, one write per
 * turn of the event loop (counted by the kernel in /proc/self/io), and a stalled reader.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, readFileSync, readSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { AuditLog } from '../../../src/audit/AuditLog.js';
import { auditLine, MAX_SUBJECT_CHARS } from '../../../src/audit/auditRecord.js';

let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'audit-unit-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

const writeSyscalls = (): number => Number(/^syscw: (\d+)$/m.exec(readFileSync('/proc/self/io', 'utf8'))![1]);
const record = (i: number) => ({ time: new Date().toISOString(), client: 'c', operation: 'sign', keyName: 'k', keyVersion: i, outcome: 'ok' });

test('auditLine: one JSON line, documented field order, absent fields left out, SHA-256 of the digest, a long subject cut', () => {
  const digest = Buffer.alloc(32, 7);
  const line = auditLine({
    outcome: 'ok',
    operation: 'sign',
    client: 'a',
    time: 't',
    requestId: 'r',
    source: 's',
    keyName: 'k',
    keyVersion: 2,
    algorithm: 'ECDSA_SHA_256',
    digest,
  });
  assert.ok(line.endsWith('\n') && !line.slice(0, -1).includes('\n'));
  const parsed = JSON.parse(line);
  assert.deepEqual(Object.keys(parsed), [
    'time',
    'requestId',
    'client',
    'source',
    'operation',
    'keyName',
    'keyVersion',
    'algorithm',
    'digestSha256',
    'outcome',
  ]);
  assert.equal(parsed.digestSha256, execFileSync('sha256sum', { input: digest }).toString().split(' ')[0]);
  let called = 0;
  const lazy = JSON.parse(
    auditLine({
      time: 't',
      client: 'a',
      operation: 'verify',
      outcome: 'ok',
      digest: () => {
        called++;
        return digest;
      },
    }),
  );
  assert.equal(lazy.digestSha256, parsed.digestSha256);
  assert.equal(called, 1);
  const long = JSON.parse(auditLine({ time: 't', client: 'a', operation: 'issue', outcome: 'ok', subject: `CN=${'y'.repeat(5000)}` }));
  assert.equal(long.subject.length, MAX_SUBJECT_CHARS + '...(truncated)'.length);
  assert.equal(
    JSON.parse(auditLine({ time: 't', client: 'a\n"}', operation: 'x', outcome: 'ok' })).client,
    'a\n"}',
    'escaped: a value cannot start a line of its own',
  );
});

test('the records of one turn of the event loop go out in one write(2), and each promise waits for it', async () => {
  const file = join(dir, 'batched.log');
  const log = AuditLog.open(file);
  await log.record(record(-1)); // the first write, outside the count
  const before = writeSyscalls();
  const writes = Array.from({ length: 500 }, (_, i) => log.record(record(i)));
  assert.equal(readFileSync(file, 'utf8').split('\n').filter(Boolean).length, 1, 'nothing written before the turn ends');
  await Promise.all(writes);
  const syscalls = writeSyscalls() - before;
  const lines = readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { keyVersion: number });
  assert.equal(lines.length, 501, 'every record is in the file once its promise resolves');
  assert.deepEqual(
    lines.slice(1).map((l) => l.keyVersion),
    Array.from({ length: 500 }, (_, i) => i),
  );
  // One write for the 500 records. The count is the whole process's (/proc/self/io), so it also
  // takes in the test runner's own reports meanwhile (10 seen on a clean CI run, 71 on a loaded
  // one): 150 leaves room for those while one write per record (500) still fails.
  assert.ok(syscalls <= 150, `500 records took ${syscalls} write system calls`);
  await log.close();
});

test('a reader that stops reading: the writes stall, the records are refused within the stall time, and a reader back resumes the log', async () => {
  const fifo = join(dir, 'stalled.fifo');
  execFileSync('mkfifo', [fifo]);
  const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  const events: string[] = [];
  const log = AuditLog.open(fifo, { stallMs: 300, retryMs: 100, onEvent: (e) => events.push(e.type) });
  try {
    // 64 KiB of pipe buffer, then EAGAIN: the batch waits for a reader that never reads.
    const big = Array.from({ length: 1000 }, (_, i) => ({ ...record(i), subject: `CN=${'z'.repeat(200)}` }));
    const started = Date.now();
    await assert.rejects(log.recordAll(big), { code: 'AUDIT_UNAVAILABLE' });
    const took = Date.now() - started;
    assert.ok(took >= 300 && took < 2000, `refused after ${took} ms (stall time 300 ms)`);
    assert.match(log.status().reason ?? '', /has not completed in 300 ms/);
    assert.throws(() => log.assertAvailable(), { code: 'AUDIT_UNAVAILABLE' });
    // The reader drains the pipe: the stuck write finishes, and the next attempt writes the record of the gap.
    const buf = Buffer.alloc(1 << 20);
    let text = '';
    const end = Date.now() + 5000;
    while (!log.status().available || !text.includes('audit.resumed')) {
      if (Date.now() > end) assert.fail(`not resumed: ${JSON.stringify(log.status())}`);
      try {
        const n = readSync(reader, buf);
        text += buf.subarray(0, n).toString();
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    const resumed = text
      .split('\n')
      .filter((l) => l.includes('audit.resumed'))
      .map((l) => JSON.parse(l) as { refused: number; reason: string });
    assert.equal(resumed.length, 1);
    assert.equal(resumed[0]!.refused, 1001, 'the stalled batch and the refusal after it');
    // Whole lines only (each write of a pipe is at most PIPE_BUF bytes of whole lines).
    for (const l of text.split('\n').filter(Boolean)) JSON.parse(l);
    await log.record(record(7));
    assert.deepEqual(events.slice(0, 2), ['unavailable', 'available']);
  } finally {
    await log.close();
    closeSync(reader);
  }
});
