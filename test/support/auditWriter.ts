/**
 * A process appending to an audit log through AuditLog, as one service worker would:
 * `auditWriter.ts FILE TAG BATCHES PER_BATCH GO_FILE`. Each batch's records are made in one turn of
 * the event loop (so they go out in one write) and are long (a 1,000-character subject), so a batch
 * is a write of about 130 KB: without O_APPEND two such processes would overwrite each other's
 * lines. It prints `ready`, starts writing once GO_FILE exists (so two writers start together
 * whatever their start-up took), and prints `done N` when every record is written.
 */
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { AuditLog } from '../../src/audit/AuditLog.js';

const [file, tag, batches, perBatch, go] = process.argv.slice(2);
const log = AuditLog.open(file!);
process.stdout.write('ready\n');
while (!existsSync(go!)) await sleep(2);
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
