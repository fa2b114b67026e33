/**
 * What the audit trail costs per record, without HTTP and without the HSM: AuditLog.record of a
 * sign record (the line, the SHA-256 of the digest, the batched O_APPEND write and its wait), N
 * records made in each turn of the event loop as N requests finishing together would. CPU time
 * of the whole process (the write runs on a libuv thread) per record, and the write(2) calls.
 *
 *   node --import tsx bench/auditCost.ts [rounds, default 5]
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuditLog } from '../src/audit/AuditLog.js';

const rounds = Number(process.argv[2] ?? '5');
if (!Number.isInteger(rounds) || rounds < 1) throw new Error('rounds: give a whole number of 1 or more');

const dir = mkdtempSync(join(tmpdir(), 'audit-cost-'));
const writes = (): number => Number(/^syscw: (\d+)$/m.exec(readFileSync('/proc/self/io', 'utf8'))![1]);
const digest = Buffer.alloc(32, 3);
const record = () => ({
  time: new Date().toISOString(),
  requestId: '6ca63113-67bc-44cd-a173-617f159a56d2',
  client: 'payments-api',
  source: '10.0.4.17',
  operation: 'sign',
  keyName: 'payments-ec',
  keyVersion: 1,
  algorithm: 'ECDSA_SHA_256',
  digest,
  outcome: 'ok',
});

try {
  for (const perTurn of [1, 8, 32]) {
    const cpu: number[] = [];
    let syscalls = 0;
    const n = 50_000;
    for (let r = 0; r < rounds; r++) {
      const log = AuditLog.open(join(dir, `audit-${perTurn}-${r}.log`));
      const w0 = writes();
      const c0 = process.cpuUsage();
      for (let i = 0; i < n; i += perTurn) {
        const batch: Promise<void>[] = [];
        for (let k = 0; k < perTurn; k++) batch.push(log.record(record()));
        await Promise.all(batch);
      }
      const c = process.cpuUsage(c0);
      syscalls = writes() - w0;
      cpu.push((c.user + c.system) / n);
      await log.close();
    }
    console.log(
      `${perTurn} record(s) per turn of the event loop: CPU µs per record (all threads), ${rounds} rounds of ${n.toLocaleString('en-US')}: ` +
        `${cpu.map((x) => x.toFixed(2)).join(' ')}; write-type system calls per record: ${(syscalls / n).toFixed(2)}`,
    );
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
