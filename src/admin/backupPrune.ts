/**
 * Which CloudHSM backups `backups prune` deletes: pure, so the rules are tested without AWS.
 *
 * A backup holds every key and user as they were when it was made, so after a key is retired or a
 * password rotated the older backups must go. The cut-off is exclusive: a backup created exactly at
 * it is kept (it may already hold the new state).
 */

/** The fields of a CloudHSM V2 `Backup` that pruning reads. */
export interface BackupRecord {
  readonly backupId: string;
  readonly state: string | undefined;
  readonly clusterId: string | undefined;
  readonly sourceCluster: string | undefined;
  readonly createdAt: Date;
}

export type PruneSelector = { readonly clusterId: string } | { readonly sourceClusterId: string };

export interface PruneOptions {
  readonly selector: PruneSelector;
  /** Delete backups created strictly before this instant; `all`: every backup. */
  readonly cutoff: Date | 'all';
  /** With `all` only: the newest backup too. */
  readonly includingNewest: boolean;
}

export interface PrunePlan {
  /** Oldest first. */
  readonly toDelete: readonly BackupRecord[];
  /** Already being deleted or deleted. */
  readonly skipped: readonly BackupRecord[];
  /** The newest backup, kept although it is before the cut-off (or `all` without the confirmation). */
  readonly keptNewest: BackupRecord | undefined;
  /** Backups created at or after the cut-off. */
  readonly keptNewer: number;
  /** Backups of the selected cluster, in any state. */
  readonly matched: number;
}

const GONE_STATES: ReadonlySet<string> = new Set(['PENDING_DELETION', 'DELETED']);

function matches(b: BackupRecord, s: PruneSelector): boolean {
  return 'clusterId' in s ? b.clusterId === s.clusterId : b.sourceCluster === s.sourceClusterId;
}

/** Oldest first; equal timestamps in backup-ID order, so the plan does not depend on the API's page order. */
export function byCreation(a: BackupRecord, b: BackupRecord): number {
  return a.createdAt.getTime() - b.createdAt.getTime() || (a.backupId < b.backupId ? -1 : a.backupId > b.backupId ? 1 : 0);
}

export function planPrune(backups: readonly BackupRecord[], o: PruneOptions): PrunePlan {
  if (o.includingNewest && o.cutoff !== 'all') throw new Error('includingNewest needs cutoff all');
  const mine = backups.filter((b) => matches(b, o.selector)).sort(byCreation);
  const live = mine.filter((b) => !GONE_STATES.has(b.state ?? ''));
  const newest = live.at(-1);
  const toDelete: BackupRecord[] = [];
  let keptNewest: BackupRecord | undefined;
  let keptNewer = 0;
  for (const [i, b] of live.entries()) {
    if (o.cutoff !== 'all' && b.createdAt.getTime() >= o.cutoff.getTime()) {
      // Sorted: every later backup is at or after the cut-off too.
      keptNewer = live.length - i;
      break;
    }
    if (b === newest && !o.includingNewest) keptNewest = b;
    else toDelete.push(b);
  }
  return { toDelete, skipped: mine.filter((b) => GONE_STATES.has(b.state ?? '')), keptNewest, keptNewer, matched: mine.length };
}

const ISO_8601 = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}:\d{2})$/;

/**
 * An ISO 8601 date-time with seconds optional and an explicit offset (`Z` or `±HH:MM`). Anything
 * else (no offset, a date alone, a space for `T`, an out-of-range field) is refused rather than
 * read in some time zone: a wrong guess would delete the wrong backups.
 */
export function parseCutoff(text: string): Date {
  const m = ISO_8601.exec(text);
  if (!m) throw new Error('must be an ISO 8601 date-time with an offset, such as 2026-01-31T18:00:00Z or 2026-01-31T23:30:00+05:30');
  const [, y, mo, d, h, mi, s = '0', frac = '', offset = 'Z'] = m;
  const fields = [y, mo, d, h, mi, s].map(Number) as [number, number, number, number, number, number];
  const [year, month, day, hour, minute, second] = fields;
  const ms = Number(frac.padEnd(3, '0').slice(0, 3));
  const local = new Date(Date.UTC(year, month - 1, day, hour, minute, second, ms));
  local.setUTCFullYear(year); // Date.UTC maps years 0-99 to 1900-1999
  const valid =
    local.getUTCFullYear() === year &&
    local.getUTCMonth() === month - 1 &&
    local.getUTCDate() === day &&
    local.getUTCHours() === hour &&
    local.getUTCMinutes() === minute &&
    local.getUTCSeconds() === second;
  let offsetMinutes = 0;
  if (offset !== 'Z') {
    const oh = Number(offset.slice(1, 3));
    const om = Number(offset.slice(4, 6));
    if (oh > 23 || om > 59) throw new Error(`the offset ${offset} is out of range`);
    offsetMinutes = (offset.startsWith('-') ? -1 : 1) * (oh * 60 + om);
  }
  if (!valid) throw new Error(`${text} is not a valid date-time (a field is out of range)`);
  return new Date(local.getTime() - offsetMinutes * 60_000);
}
