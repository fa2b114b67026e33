/**
 * A process appending to an audit log through AuditLog, as one service worker would:
 * `auditWriter.ts FILE TAG BATCHES PER_BATCH`. Each batch's records are made in one turn of the
 * event loop (so they go out in one write) and are long (a 1,000-character subject), so a batch is
 * a write of about 130 KB: without O_APPEND two such processes would overwrite each other's lines.
 * Prints `done N` when every record is written.
 */
import { AuditLog } from '../../src/audit/AuditLog.js';

const [file, tag, batches, perBatch] = process.argv.slice(2);
const log = AuditLog.open(file!);
const subject = `CN=${'x'.repeat(1000)}`;
let n = 0;
for (let b = 0; b < Number(batches); b++) {
  const writes: Promise<void>[] = [];
  for (let i = 0; i < Number(perBatch); i++) {
    writes.push(log.record({ time: new Date().toISOString(), client: tag!, operation: 'issue', keyName: 'k', keyVersion: n++, subject, outcome: 'ok' }));
  }
  await Promise.all(writes);
}
await log.close();
process.stdout.write(`done ${n}\n`);
