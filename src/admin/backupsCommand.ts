/**
 * `hsm-signer-admin backups prune`: deletes CloudHSM backups older than a cut-off, through the
 * CloudHSM V2 API (no HSM login). Dry run unless --execute. Which backups: ./backupPrune.ts.
 */
import type { Backup } from '@aws-sdk/client-cloudhsm-v2';
import { parseArgs } from 'node:util';
import { AuditOpenError } from '../audit/auditTarget.js';
import { AdminAudit } from './adminAudit.js';
import { type BackupRecord, type PruneSelector, parseCutoff, planPrune } from './backupPrune.js';

export const BACKUPS_USAGE = `  backups prune --region R (--cluster-id C | --source-cluster-id C) (--before TIMESTAMP | --all)
                [--including-newest] [--execute] [--endpoint-url URL]
    deletes CloudHSM backups created before TIMESTAMP (ISO 8601 with Z or an offset; a backup at
    exactly TIMESTAMP is kept), or all with --all; the newest backup is kept unless --all
    --including-newest. Prints the plan only, unless --execute. Backups being deleted are skipped.
    AWS credentials from the SDK's usual sources (AWS_PROFILE, AWS_ACCESS_KEY_ID, instance role...).
    With AUDIT_LOG, --execute writes one audit record (backups.prune: the backups deleted and failed).`;

class BackupsUsageError extends Error {}

interface PruneArgs {
  readonly region: string;
  readonly selector: PruneSelector;
  readonly cutoff: Date | 'all';
  readonly includingNewest: boolean;
  readonly execute: boolean;
  readonly endpointUrl: string | undefined;
}

const PRUNE_OPTIONS = {
  region: { type: 'string' },
  'cluster-id': { type: 'string' },
  'source-cluster-id': { type: 'string' },
  before: { type: 'string' },
  all: { type: 'boolean', default: false },
  'including-newest': { type: 'boolean', default: false },
  execute: { type: 'boolean', default: false },
  'endpoint-url': { type: 'string' },
  help: { type: 'boolean', short: 'h', default: false },
} as const;

function parsePruneArgs(argv: string[]): PruneArgs | 'help' {
  let parsed: ReturnType<typeof parseArgs<{ args: string[]; allowPositionals: true; options: typeof PRUNE_OPTIONS }>>;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, options: PRUNE_OPTIONS });
  } catch (e) {
    throw new BackupsUsageError((e as Error).message);
  }
  const { values: v, positionals } = parsed;
  if (v.help) return 'help';
  if (positionals.length !== 2 || positionals[1] !== 'prune') throw new BackupsUsageError(`unknown command '${positionals.join(' ')}'`);
  if (!v.region || !/^[a-z]{2}(-[a-z0-9]+)+-\d+$/.test(v.region)) throw new BackupsUsageError('--region: must be an AWS region such as eu-west-1');
  const clusterId = v['cluster-id'];
  const sourceClusterId = v['source-cluster-id'];
  if ((clusterId === undefined) === (sourceClusterId === undefined))
    throw new BackupsUsageError('give one of --cluster-id (backups of a cluster in --region) or --source-cluster-id (copies of its backups in --region)');
  const id = (clusterId ?? sourceClusterId) as string;
  if (!/^cluster-[a-z0-9]+$/.test(id))
    throw new BackupsUsageError(`--${clusterId !== undefined ? '' : 'source-'}cluster-id: must be a cluster ID such as cluster-igklspoyj5v`);
  if ((v.before === undefined) === !v.all) throw new BackupsUsageError('give one of --before TIMESTAMP or --all');
  if (v['including-newest'] && !v.all) throw new BackupsUsageError('--including-newest: only with --all');
  let cutoff: Date | 'all' = 'all';
  if (v.before !== undefined) {
    try {
      cutoff = parseCutoff(v.before);
    } catch (e) {
      throw new BackupsUsageError(`--before: ${(e as Error).message}`);
    }
  }
  const endpointUrl = v['endpoint-url'];
  if (endpointUrl !== undefined && !/^https?:\/\//.test(endpointUrl)) throw new BackupsUsageError('--endpoint-url: must be an http(s) URL');
  return {
    region: v.region,
    selector: clusterId !== undefined ? { clusterId } : { sourceClusterId: id },
    cutoff,
    includingNewest: v['including-newest'],
    execute: v.execute,
    endpointUrl,
  };
}

function record(b: Backup): BackupRecord | undefined {
  if (!b.BackupId || !b.CreateTimestamp) return undefined;
  return { backupId: b.BackupId, state: b.BackupState, clusterId: b.ClusterId, sourceCluster: b.SourceCluster, createdAt: b.CreateTimestamp };
}

function describe(b: BackupRecord): string {
  const source = b.sourceCluster ? `\tcopy of ${b.sourceCluster}` : '';
  return `${b.backupId}\t${b.createdAt.toISOString()}\t${b.clusterId ?? '-'}${source}`;
}

function errorText(e: unknown): string {
  const err = e as Error;
  return `${err.name ?? 'Error'}: ${err.message}`;
}

/** What the command prints to: the CLI's console. */
export type Output = Pick<Console, 'log' | 'error'>;

/** `backups ...` with argv after `backups`; the exit code: 0 done, 1 a deletion (or the listing, or the audit record) failed, 2 usage. */
export async function runBackups(argv: string[], out: Output, env: NodeJS.ProcessEnv): Promise<number> {
  let args: PruneArgs | 'help';
  try {
    args = parsePruneArgs(['backups', ...argv]);
  } catch (e) {
    out.error(`hsm-signer-admin: ${(e as Error).message}\nusage: hsm-signer-admin\n${BACKUPS_USAGE}`);
    return 2;
  }
  if (args === 'help') {
    out.log(`usage: hsm-signer-admin\n${BACKUPS_USAGE}`);
    return 0;
  }
  // Opened before anything is deleted: a prune whose record cannot be written does not run.
  let audit: AdminAudit | undefined;
  if (args.execute && env.AUDIT_LOG) {
    try {
      audit = AdminAudit.open(env.AUDIT_LOG, env);
    } catch (e) {
      if (!(e instanceof AuditOpenError)) throw e;
      out.error(`hsm-signer-admin: ${e.message}`);
      return 2;
    }
  }
  // Loaded here, not at the top: the keys commands do not pay for the SDK's start-up.
  const { CloudHSMV2Client, DeleteBackupCommand, paginateDescribeBackups } = await import('@aws-sdk/client-cloudhsm-v2');
  // Adaptive: the SDK backs off on throttling answers and paces later requests by the rate they allow.
  const client = new CloudHSMV2Client({ region: args.region, retryMode: 'adaptive', ...(args.endpointUrl ? { endpoint: args.endpointUrl } : {}) });
  try {
    const backups: BackupRecord[] = [];
    const filters = 'clusterId' in args.selector ? { Filters: { clusterIds: [args.selector.clusterId] } } : {};
    for await (const page of paginateDescribeBackups({ client }, { ...filters, SortAscending: true })) {
      for (const b of page.Backups ?? []) {
        const r = record(b);
        if (r) backups.push(r);
      }
    }
    const plan = planPrune(backups, args);
    const which = 'clusterId' in args.selector ? `cluster ${args.selector.clusterId}` : `copies of cluster ${args.selector.sourceClusterId}`;
    const cut = args.cutoff === 'all' ? 'all' : `before ${args.cutoff.toISOString()}`;
    out.log(`${plan.matched} backup(s) of ${which} in ${args.region}; deleting ${cut}`);
    for (const b of plan.skipped) out.log(`skip\t${describe(b)}\t${b.state}`);
    if (plan.keptNewest) out.log(`keep\t${describe(plan.keptNewest)}\tthe newest backup (--all --including-newest deletes it)`);
    if (!args.execute) {
      for (const b of plan.toDelete) out.log(`would delete\t${describe(b)}`);
      out.log(
        `dry run: ${plan.toDelete.length} would be deleted, ${plan.skipped.length} skipped (being deleted), ${plan.keptNewer} newer kept${plan.keptNewest ? ', the newest kept' : ''}; add --execute to delete`,
      );
      return 0;
    }
    const failures: { backup: BackupRecord; error: string }[] = [];
    // One at a time: a failure is reported and the rest still run.
    for (const b of plan.toDelete) {
      try {
        await client.send(new DeleteBackupCommand({ BackupId: b.backupId }));
        out.log(`deleted\t${describe(b)}`);
      } catch (e) {
        failures.push({ backup: b, error: errorText(e) });
        out.log(`FAILED\t${describe(b)}\t${errorText(e)}`);
      }
    }
    out.log(
      `deleted ${plan.toDelete.length - failures.length} of ${plan.toDelete.length}, ${failures.length} failed, ${plan.skipped.length} skipped (being deleted), ${plan.keptNewer} newer kept${plan.keptNewest ? ', the newest kept' : ''}`,
    );
    let code = 0;
    if (failures.length > 0) {
      out.error(`hsm-signer-admin: ${failures.length} deletion(s) failed:`);
      for (const f of failures) out.error(`  ${f.backup.backupId}: ${f.error}`);
      code = 1;
    }
    if (audit) {
      const failedIds = new Set(failures.map((f) => f.backup.backupId));
      try {
        audit.write(
          'backups.prune',
          {
            region: args.region,
            ...('clusterId' in args.selector ? { clusterId: args.selector.clusterId } : { sourceClusterId: args.selector.sourceClusterId }),
            deleted: plan.toDelete.filter((b) => !failedIds.has(b.backupId)).map((b) => b.backupId),
            failed: [...failedIds],
          },
          failures.length === 0 ? 'ok' : 'DELETE_FAILED',
        );
      } catch (e) {
        out.error(`hsm-signer-admin: the deletions are done, but ${(e as Error).message}`);
        code = 1;
      }
    }
    return code;
  } finally {
    client.destroy();
    audit?.close();
  }
}
