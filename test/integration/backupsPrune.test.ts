/**
 * `hsm-signer-admin backups prune` as a process, with the real AWS SDK client, against a local
 * server speaking the CloudHSM V2 JSON 1.1 protocol: 60 backups of a cluster over 3 pages (out of
 * order) and 3 copies of its backups from another region,
 * throttling answers, one deletion that fails, backups already being deleted, and a cut-off in
 * +05:30 exactly equal to one backup's creation time.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CLUSTER = 'cluster-prune01';
const BASE = Date.UTC(2026, 0, 1) / 1000; // epoch seconds, as the JSON 1.1 protocol sends them
const HOUR = 3600;
const PAGE = 20;
const PENDING = new Set([3, 17]);
const DELETED = new Set([7, 8]);
const FAILING = 'backup-000012';

interface ApiBackup {
  BackupId: string;
  BackupState: string;
  ClusterId: string;
  CreateTimestamp: number;
  SourceCluster?: string;
}

const id = (i: number) => `backup-${String(i).padStart(6, '0')}`;

class FakeCloudHsm {
  readonly backups: ApiBackup[] = [];
  readonly deleteCalls: string[] = [];
  readonly describeCalls: { NextToken?: string; Filters?: unknown }[] = [];
  throttledDescribe = 0;
  throttledDelete = 0;
  /** Throttle the next request for page 2, and the next deletion of backup 5, once each. */
  throttle = { page2: true, delete5: true };

  constructor() {
    for (let i = 0; i < 60; i++) {
      const state = PENDING.has(i) ? 'PENDING_DELETION' : DELETED.has(i) ? 'DELETED' : 'READY';
      this.backups.push({ BackupId: id(i), BackupState: state, ClusterId: CLUSTER, CreateTimestamp: BASE + i * HOUR });
    }
    // Copies in this region of another region's backups of the cluster (not matched by --cluster-id).
    for (let i = 0; i < 3; i++)
      this.backups.push({
        BackupId: `backup-copy${i}`,
        BackupState: 'READY',
        ClusterId: 'cluster-copy01',
        SourceCluster: CLUSTER,
        CreateTimestamp: BASE + i * HOUR,
      });
    // The API's order is not trusted: a deterministic shuffle.
    this.backups.sort((a, b) => ((a.CreateTimestamp * 7919) % 61) - ((b.CreateTimestamp * 7919) % 61) || a.CreateTimestamp - b.CreateTimestamp);
  }

  handle(target: string, body: Record<string, unknown>): { status: number; body: unknown } {
    if (target === 'BaldrApiService.DescribeBackups') {
      this.describeCalls.push(body);
      const start = typeof body.NextToken === 'string' ? Number(body.NextToken.replace('page-', '')) : 0;
      if (start === PAGE && this.throttle.page2) {
        this.throttle.page2 = false;
        this.throttledDescribe++;
        return { status: 400, body: { __type: 'ThrottlingException', message: 'Rate exceeded' } };
      }
      const filters = body.Filters as { clusterIds?: string[] } | undefined;
      const all = this.backups.filter((b) => !filters?.clusterIds || filters.clusterIds.includes(b.ClusterId));
      const page = all.slice(start, start + PAGE);
      return { status: 200, body: { Backups: page, ...(start + PAGE < all.length ? { NextToken: `page-${start + PAGE}` } : {}) } };
    }
    if (target === 'BaldrApiService.DeleteBackup') {
      const backupId = String(body.BackupId);
      if (backupId === id(5) && this.throttle.delete5) {
        this.throttle.delete5 = false;
        this.throttledDelete++;
        return { status: 400, body: { __type: 'ThrottlingException', message: 'Rate exceeded' } };
      }
      this.deleteCalls.push(backupId);
      if (backupId === FAILING) return { status: 400, body: { __type: 'CloudHsmInvalidRequestException', Message: 'The backup cannot be deleted right now' } };
      const b = this.backups.find((x) => x.BackupId === backupId);
      if (!b) return { status: 400, body: { __type: 'CloudHsmResourceNotFoundException', Message: 'no such backup' } };
      b.BackupState = 'PENDING_DELETION';
      return { status: 200, body: { Backup: { ...b, DeleteTimestamp: Date.now() / 1000 } } };
    }
    return { status: 400, body: { __type: 'UnknownOperationException' } };
  }
}

let fake: FakeCloudHsm;
let server: http.Server;
let endpoint: string;
let work: string;
const contentTypes = new Set<string>();

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'backups-prune-'));
  fake = new FakeCloudHsm();
  server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      contentTypes.add(String(req.headers['content-type']));
      const target = String(req.headers['x-amz-target'] ?? '');
      const r = fake.handle(target, JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Record<string, unknown>);
      res.writeHead(r.status, { 'content-type': 'application/x-amz-json-1.1', 'x-amzn-requestid': 'test' });
      res.end(JSON.stringify(r.body));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(async () => {
  rmSync(work, { recursive: true, force: true });
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

function prune(...args: string[]): Promise<Result> {
  return pruneWith({}, ...args);
}

function pruneWith(extraEnv: NodeJS.ProcessEnv, ...args: string[]): Promise<Result> {
  const env = {
    ...process.env,
    AUDIT_LOG: undefined,
    ...extraEnv,
    // Static fake credentials: the SDK signs; the local server ignores the signature.
    AWS_ACCESS_KEY_ID: 'AKIDEXAMPLE',
    AWS_SECRET_ACCESS_KEY: 'not-a-secret',
    AWS_SESSION_TOKEN: undefined,
    AWS_PROFILE: undefined,
    AWS_CONFIG_FILE: '/nonexistent',
    AWS_SHARED_CREDENTIALS_FILE: '/nonexistent',
    AWS_EC2_METADATA_DISABLED: 'true',
  };
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', 'src/admin/cli.ts', 'backups', 'prune', ...args],
      { cwd: ROOT, env, encoding: 'utf8', timeout: 60_000 },
      (error, stdout, stderr) => resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr }),
    );
  });
}

/** Backup 30 is at 2026-01-02T06:00:00Z: this is the same instant in +05:30. */
const CUTOFF = '2026-01-02T11:30:00+05:30';
const PLANNED = Array.from({ length: 30 }, (_, i) => i)
  .filter((i) => !PENDING.has(i) && !DELETED.has(i))
  .map(id);

const listed = (stdout: string, verb: string) =>
  stdout
    .split('\n')
    .filter((l) => l.startsWith(`${verb}\t`))
    .map((l) => l.split('\t')[1]);

test('the dry run reads every page, plans the backups strictly before the cut-off, and deletes nothing', async () => {
  const r = await prune('--region', 'eu-west-1', '--cluster-id', CLUSTER, '--before', CUTOFF, '--endpoint-url', endpoint);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(listed(r.stdout, 'would delete'), PLANNED, 'oldest first, backup 30 (at the cut-off) kept');
  assert.deepEqual(listed(r.stdout, 'skip').sort(), [3, 7, 8, 17].map(id));
  assert.match(r.stdout, /dry run: 26 would be deleted, 4 skipped \(being deleted\), 30 newer kept; add --execute/);
  assert.equal(fake.deleteCalls.length, 0);
  assert.equal(fake.throttledDescribe, 1, 'page 2 was throttled once');
  // Three pages, plus the throttled request repeated by the SDK.
  assert.deepEqual(
    fake.describeCalls.map((c) => c.NextToken ?? 'first'),
    ['first', 'page-20', 'page-20', 'page-40'],
  );
  assert.deepEqual(fake.describeCalls[0]?.Filters, { clusterIds: [CLUSTER] });
  assert.deepEqual([...contentTypes], ['application/x-amz-json-1.1']);
});

test('--execute deletes exactly the planned backups, goes on after a failure, exits 1 naming it, and writes one audit record', async () => {
  fake.describeCalls.length = 0;
  const auditLog = join(work, 'audit.log');
  const r = await pruneWith(
    { AUDIT_LOG: auditLog },
    '--region',
    'eu-west-1',
    '--cluster-id',
    CLUSTER,
    '--before',
    CUTOFF,
    '--endpoint-url',
    endpoint,
    '--execute',
  );
  assert.equal(r.code, 1, r.stderr);
  assert.equal(fake.throttledDelete, 1, 'the deletion of backup 5 was throttled once');
  assert.deepEqual([...fake.deleteCalls].sort(), PLANNED);
  assert.equal(new Set(fake.deleteCalls).size, PLANNED.length, 'each deleted once (the throttled one retried by the SDK)');
  assert.deepEqual(
    listed(r.stdout, 'deleted'),
    PLANNED.filter((b) => b !== FAILING),
  );
  assert.match(r.stdout, /deleted 25 of 26, 1 failed, 4 skipped/);
  assert.match(r.stderr, /1 deletion\(s\) failed:\n {2}backup-000012: CloudHsmInvalidRequestException: The backup cannot be deleted right now/);
  const state = new Map(fake.backups.map((b) => [b.BackupId, b.BackupState]));
  assert.equal(state.get(id(30)), 'READY');
  assert.equal(state.get(FAILING), 'READY');
  const lines = readFileSync(auditLog, 'utf8').split('\n').filter(Boolean);
  assert.equal(lines.length, 1, 'one record for the whole prune');
  const record = JSON.parse(lines[0] as string) as Record<string, unknown>;
  assert.equal(record.client, 'hsm-signer-admin');
  assert.equal(record.operation, 'backups.prune');
  assert.equal(record.outcome, 'DELETE_FAILED');
  assert.equal(record.region, 'eu-west-1');
  assert.equal(record.clusterId, CLUSTER);
  assert.deepEqual(
    record.deleted,
    PLANNED.filter((b) => b !== FAILING),
  );
  assert.deepEqual(record.failed, [FAILING]);
  assert.equal(typeof record.osUser, 'string');
});

test('a dry run writes no audit record; an audit log that cannot be opened stops --execute before any request', async () => {
  const auditLog = join(work, 'dry-run-audit.log');
  const dry = await pruneWith({ AUDIT_LOG: auditLog }, '--region', 'eu-west-1', '--cluster-id', CLUSTER, '--all', '--endpoint-url', endpoint);
  assert.equal(dry.code, 0, dry.stderr);
  assert.throws(() => readFileSync(auditLog), { code: 'ENOENT' });
  const calls = fake.describeCalls.length;
  const deletes = fake.deleteCalls.length;
  const bad = await pruneWith(
    { AUDIT_LOG: join(work, 'missing-dir', 'audit.log') },
    '--region',
    'eu-west-1',
    '--cluster-id',
    CLUSTER,
    '--all',
    '--endpoint-url',
    endpoint,
    '--execute',
  );
  assert.equal(bad.code, 2, bad.stderr);
  assert.match(bad.stderr, /AUDIT_LOG: cannot open/);
  assert.equal(fake.describeCalls.length, calls);
  assert.equal(fake.deleteCalls.length, deletes);
});

test('--all keeps the newest backup unless --including-newest; a run after --execute skips what it deleted', async () => {
  const r = await prune('--region', 'eu-west-1', '--cluster-id', CLUSTER, '--all', '--endpoint-url', endpoint);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(listed(r.stdout, 'keep'), [id(59)]);
  const planned = listed(r.stdout, 'would delete');
  assert.deepEqual(planned, [FAILING, ...Array.from({ length: 29 }, (_, i) => id(30 + i))]);
  const all = await prune('--region', 'eu-west-1', '--cluster-id', CLUSTER, '--all', '--including-newest', '--endpoint-url', endpoint);
  assert.equal(all.code, 0, all.stderr);
  assert.deepEqual(listed(all.stdout, 'would delete'), [...planned, id(59)]);
});

test('--source-cluster-id selects the copies by their source cluster, unfiltered by the API', async () => {
  fake.describeCalls.length = 0;
  const r = await prune('--region', 'eu-west-1', '--source-cluster-id', CLUSTER, '--all', '--endpoint-url', endpoint);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(listed(r.stdout, 'would delete'), ['backup-copy0', 'backup-copy1']);
  assert.deepEqual(listed(r.stdout, 'keep'), ['backup-copy2']);
  assert.equal(fake.describeCalls[0]?.Filters, undefined);
  assert.equal(fake.describeCalls.length, 4, '63 backups: 4 pages');
});

test('ambiguous timestamps and missing choices are usage errors (exit 2) before any request', async () => {
  const calls = fake.describeCalls.length;
  for (const [args, message] of [
    [['--before', '2026-01-02T11:30:00'], /--before: must be an ISO 8601 date-time with an offset/],
    [['--before', '2026-01-02'], /--before: must be an ISO 8601/],
    [['--before', '2026-02-30T00:00:00Z'], /--before: .*out of range/],
    [['--before', CUTOFF, '--all'], /one of --before TIMESTAMP or --all/],
    [['--before', CUTOFF, '--including-newest'], /--including-newest: only with --all/],
  ] as const) {
    const r = await prune('--region', 'eu-west-1', '--cluster-id', CLUSTER, '--endpoint-url', endpoint, ...args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, message);
  }
  const both = await prune('--region', 'eu-west-1', '--cluster-id', CLUSTER, '--source-cluster-id', CLUSTER, '--all');
  assert.equal(both.code, 2);
  assert.match(both.stderr, /one of --cluster-id .* or --source-cluster-id/);
  assert.equal(fake.describeCalls.length, calls);
});
