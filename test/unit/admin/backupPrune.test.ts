import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type BackupRecord, parseCutoff, planPrune } from '../../../src/admin/backupPrune.js';

const T0 = Date.parse('2026-03-01T00:00:00Z');
const at = (hours: number) => new Date(T0 + hours * 3_600_000);

function backup(n: number, o: Partial<BackupRecord> = {}): BackupRecord {
  return { backupId: `backup-${n}`, state: 'READY', clusterId: 'cluster-a', sourceCluster: undefined, createdAt: at(n), ...o };
}

const ids = (bs: readonly BackupRecord[]) => bs.map((b) => b.backupId);

test('deletes strictly before the cut-off, oldest first, whatever the input order', () => {
  const backups = [backup(4), backup(1), backup(3), backup(0), backup(2)];
  const plan = planPrune(backups, { selector: { clusterId: 'cluster-a' }, cutoff: at(3), includingNewest: false });
  assert.deepEqual(ids(plan.toDelete), ['backup-0', 'backup-1', 'backup-2']);
  assert.equal(plan.keptNewer, 2, 'backup 3 (at the cut-off exactly) and backup 4');
  assert.equal(plan.keptNewest, undefined);
  assert.equal(plan.matched, 5);
});

test('skips backups being deleted, and they do not count as the newest', () => {
  const backups = [backup(0), backup(1, { state: 'PENDING_DELETION' }), backup(2), backup(3, { state: 'DELETED' })];
  const plan = planPrune(backups, { selector: { clusterId: 'cluster-a' }, cutoff: at(10), includingNewest: false });
  assert.deepEqual(ids(plan.skipped), ['backup-1', 'backup-3']);
  assert.deepEqual(ids(plan.toDelete), ['backup-0']);
  assert.equal(plan.keptNewest?.backupId, 'backup-2');
});

test('the newest backup is kept with a late cut-off and with --all, deleted only with --all --including-newest', () => {
  const backups = [backup(0), backup(1), backup(2)];
  const sel = { clusterId: 'cluster-a' };
  assert.deepEqual(ids(planPrune(backups, { selector: sel, cutoff: at(100), includingNewest: false }).toDelete), ['backup-0', 'backup-1']);
  const all = planPrune(backups, { selector: sel, cutoff: 'all', includingNewest: false });
  assert.deepEqual(ids(all.toDelete), ['backup-0', 'backup-1']);
  assert.equal(all.keptNewest?.backupId, 'backup-2');
  assert.deepEqual(ids(planPrune(backups, { selector: sel, cutoff: 'all', includingNewest: true }).toDelete), ['backup-0', 'backup-1', 'backup-2']);
  assert.throws(() => planPrune(backups, { selector: sel, cutoff: at(1), includingNewest: true }));
});

test('selects by cluster, or copies by their source cluster', () => {
  const backups = [
    backup(0),
    backup(1, { clusterId: 'cluster-b' }),
    backup(2, { clusterId: 'cluster-gone', sourceCluster: 'cluster-a' }),
    backup(3, { clusterId: undefined, sourceCluster: 'cluster-a' }),
    backup(4, { clusterId: undefined, sourceCluster: 'cluster-a' }),
  ];
  assert.deepEqual(ids(planPrune(backups, { selector: { clusterId: 'cluster-a' }, cutoff: 'all', includingNewest: true }).toDelete), ['backup-0']);
  const copies = planPrune(backups, { selector: { sourceClusterId: 'cluster-a' }, cutoff: 'all', includingNewest: false });
  assert.deepEqual(ids(copies.toDelete), ['backup-2', 'backup-3']);
  assert.equal(copies.keptNewest?.backupId, 'backup-4');
});

test('equal timestamps are ordered by backup ID', () => {
  const plan = planPrune([backup(0, { backupId: 'backup-b' }), backup(0, { backupId: 'backup-a' }), backup(1)], {
    selector: { clusterId: 'cluster-a' },
    cutoff: 'all',
    includingNewest: false,
  });
  assert.deepEqual(ids(plan.toDelete), ['backup-a', 'backup-b']);
});

test('parseCutoff reads ISO 8601 with Z or an offset', () => {
  assert.equal(parseCutoff('2026-01-02T11:30:00+05:30').toISOString(), '2026-01-02T06:00:00.000Z');
  assert.equal(parseCutoff('2026-01-02T06:00:00Z').toISOString(), '2026-01-02T06:00:00.000Z');
  assert.equal(parseCutoff('2026-01-01T22:00-08:00').toISOString(), '2026-01-02T06:00:00.000Z');
  assert.equal(parseCutoff('2026-01-02T06:00:00.25Z').toISOString(), '2026-01-02T06:00:00.250Z');
  assert.equal(parseCutoff('2024-02-29T00:00:00Z').toISOString(), '2024-02-29T00:00:00.000Z');
});

test('parseCutoff refuses ambiguous or invalid date-times', () => {
  for (const bad of [
    '2026-01-02T06:00:00', // no offset: which zone?
    '2026-01-02',
    '2026-01-02 06:00:00Z',
    '2026-01-02T06:00:00+0530',
    '20260102T060000Z',
    '1767333600',
    '2026-02-30T00:00:00Z',
    '2026-01-02T24:00:00Z',
    '2026-01-02T06:00:00+24:00',
    '2026-13-01T00:00:00Z',
    '',
  ]) {
    assert.throws(() => parseCutoff(bad), Error, bad);
  }
});
