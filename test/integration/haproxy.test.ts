/**
 * Issue 13: deploy/haproxy/haproxy.cfg without containers. Two service instances (own processes,
 * one SoftHSMv2 token) behind Debian's haproxy; 64 keep-alive connections sign through the
 * balancer and one instance gets SIGTERM mid-load. The client must see no failure: every answer a
 * 200 whose signature verifies with node:crypto. The instance drains: /readyz answers 503 at once,
 * haproxy takes it out on its next check, it keeps serving for DRAIN_MS, then exits 0.
 *
 * DRAIN_MS is 2000 here (the service's default is 5000, to be shorter than the test): it must stay
 * well above what haproxy needs to notice, LB_CHECK_INTER (500 ms) x fall (1) plus a check's round
 * trip, so that no request reaches the instance once it stops accepting.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createPublicKey, type KeyObject } from 'node:crypto';
import { mkdtempSync, openSync, closeSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { freePort } from '../../testkit/localHttp.js';
import { REPO_ROOT } from '../../testkit/repoRoot.js';
import { closedLoops, eventually, HttpDriver, signatureVerifies, startServiceProcess, type ServiceProcess } from '../support/faultService.js';
import { createTestToken, type TestToken } from '../support/testToken.js';

const KEY = 'lb-ec';
const ALGORITHM = 'ECDSA_SHA_256';
const CONNECTIONS = 64;
const DRAIN_MS = 2000;
const CHECK_INTER_MS = 500;
const SIGTERM_AT_MS = 2000;
/** The load goes on this long after A has exited: B alone serves it. */
const AFTER_EXIT_MS = 1000;

let token: TestToken;
let dir: string;
const services: ServiceProcess[] = [];
let haproxy: ChildProcess | undefined;
let lb: HttpDriver | undefined;

before(async () => {
  token = await createTestToken([{ name: KEY, spec: 'ECC_NIST_P256' }]);
  dir = mkdtempSync(join(tmpdir(), 'hsm-signer-haproxy-'));
});
after(async () => {
  lb?.close();
  if (haproxy && haproxy.exitCode === null && haproxy.signalCode === null) {
    const exited = new Promise((r) => haproxy?.once('exit', r));
    haproxy.kill('SIGTERM');
    await Promise.race([exited, sleep(5000)]);
  }
  for (const s of services) await s.stop();
  token?.cleanup();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** haproxy's stats as CSV rows of the backend's servers: name -> status (UP, DOWN, ...) and sessions. */
function serverStats(statsPort: number): Promise<Map<string, { status: string; sessions: number }>> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port: statsPort, path: '/stats;csv', agent: false }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          text += c;
        });
        res.on('end', () => {
          const [header = '', ...rows] = text.trim().split('\n');
          const names = header.replace(/^# /, '').split(',');
          const col = (row: string[], name: string): string => row[names.indexOf(name)] ?? '';
          const servers = new Map<string, { status: string; sessions: number }>();
          for (const row of rows.map((r) => r.split(','))) {
            if (col(row, 'pxname') === 'signers' && /^signer\d$/.test(col(row, 'svname')))
              servers.set(col(row, 'svname'), { status: col(row, 'status'), sessions: Number(col(row, 'stot')) });
          }
          resolve(servers);
        });
      })
      .on('error', reject);
  });
}

/** GET /readyz on a new connection to one instance: its status, or the connection error's code. */
function readyzDirect(port: number): Promise<string> {
  return new Promise((resolve) => {
    http
      .get({ host: '127.0.0.1', port, path: '/readyz', agent: false, timeout: 2000 }, (res) => {
        res.resume();
        res.on('end', () => resolve(String(res.statusCode)));
      })
      .on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
}

interface Answer {
  readonly sent: number;
  readonly end: number;
  readonly servedBy: string;
  /** Undefined when the answer is a 200 whose signature verifies. */
  readonly failure?: string;
}

test('64 connections through haproxy to two instances; SIGTERM one mid-load: no failed request, the other takes over', { timeout: 120_000 }, async (t) => {
  const env = token.env({ WORKERS: '1', DRAIN_MS: String(DRAIN_MS), LOG_LEVEL: 'error' });
  const [a, b] = await Promise.all([startServiceProcess(env, { maxSockets: 4 }), startServiceProcess(env, { maxSockets: 4 })]);
  services.push(a, b);
  const [lbPort, statsPort] = [await freePort(), await freePort()];
  const logFile = join(dir, 'haproxy.log');
  const fd = openSync(logFile, 'a');
  haproxy = spawn('haproxy', ['-db', '-f', join(REPO_ROOT, 'deploy/haproxy/haproxy.cfg')], {
    env: {
      PATH: process.env.PATH ?? '',
      LB_BIND: `127.0.0.1:${lbPort}`,
      LB_STATS_BIND: `127.0.0.1:${statsPort}`,
      LB_CHECK_INTER: String(CHECK_INTER_MS),
      SIGNER_1: `127.0.0.1:${a.port}`,
      SIGNER_2: `127.0.0.1:${b.port}`,
    },
    stdio: ['ignore', fd, fd],
  });
  closeSync(fd);
  const spawnError = new Promise<Error>((r) => haproxy?.once('error', r));
  const bothUp = await Promise.race([
    eventually(async () => {
      const s = await serverStats(statsPort);
      return s.get('signer1')?.status === 'UP' && s.get('signer2')?.status === 'UP' ? undefined : `servers: ${JSON.stringify([...s])}`;
    }, 15_000),
    spawnError.then((e) => `haproxy did not start (${e.message}): npm test installs the Debian package haproxy`),
  ]);
  assert.equal(bothUp, undefined, `both instances UP in haproxy (log: ${readFileSync(logFile, 'utf8').slice(-2000)})`);
  const instanceOf: Record<string, string> = { signer1: `A (pid ${a.pid}, the one stopped)`, signer2: `B (pid ${b.pid})` };

  lb = new HttpDriver(lbPort, CONNECTIONS);
  const info = await lb.request('GET', `/v1/keys/${KEY}`);
  assert.equal(info.status, 200, info.text);
  const publicKey: KeyObject = createPublicKey((info.body as { versions: { publicKeyPem: string }[] }).versions[0]!.publicKeyPem);

  const answers: Answer[] = [];
  const driver = lb;
  const loadStart = driver.now();
  // Until A has exited (or the wait for it is over), then AFTER_EXIT_MS more.
  let loadEnd = Infinity;
  const load = closedLoops(
    CONNECTIONS,
    () => driver.now() < loadEnd,
    async () => {
      const message = Buffer.from(`through the balancer ${Math.random()}`);
      const sent = driver.now();
      try {
        const r = await driver.request('POST', `/v1/keys/${KEY}/sign`, { algorithm: ALGORITHM, message: message.toString('base64') }, {}, 10_000);
        const signature = (r.body as { signature?: unknown } | undefined)?.signature;
        const failure =
          r.status !== 200
            ? `${r.status} ${r.text.slice(0, 200)}`
            : typeof signature !== 'string' || !signatureVerifies(publicKey, ALGORITHM, message, signature)
              ? 'a signature that does not verify'
              : undefined;
        answers.push({ sent, end: r.end, servedBy: String(r.headers['x-served-by'] ?? 'none'), ...(failure ? { failure } : {}) });
      } catch (e) {
        answers.push({ sent, end: driver.now(), servedBy: 'none', failure: (e as Error).message });
      }
    },
  );

  let sigtermAt = Infinity;
  let readyzDuringDrain: string;
  let markedDown: string | undefined;
  let markedDownAfter: number;
  let aliveNearDrainEnd: boolean;
  let exited: string | undefined;
  let exitedAfter: number;
  try {
    await sleep(SIGTERM_AT_MS);
    sigtermAt = driver.now();
    process.kill(a.pid, 'SIGTERM');
    // The drain as seen from outside: A says not ready at once, haproxy takes it out within a check
    // or two, A still answers until DRAIN_MS, then exits 0.
    await sleep(200);
    readyzDuringDrain = await readyzDirect(a.port);
    markedDown = await eventually(
      async () => {
        const s = await serverStats(statsPort);
        return s.get('signer1')?.status.startsWith('DOWN') ? undefined : `signer1 ${s.get('signer1')?.status}`;
      },
      DRAIN_MS,
      50,
    );
    markedDownAfter = driver.now() - sigtermAt;
    await sleep(Math.max(0, DRAIN_MS - 700 - (driver.now() - sigtermAt)));
    aliveNearDrainEnd = a.alive();
    exited = await eventually(async () => (a.alive() ? 'still running' : undefined), DRAIN_MS + 8000, 50);
    exitedAfter = driver.now() - sigtermAt;
  } finally {
    loadEnd = driver.now() + AFTER_EXIT_MS;
    await load;
  }
  const loadMs = driver.now() - loadStart;
  const stats = await serverStats(statsPort);

  const failures = answers.filter((x) => x.failure !== undefined);
  const count = (from: number, to: number): string =>
    ['signer1', 'signer2', 'none']
      .map((s) => `${instanceOf[s] ?? 'no instance'} ${answers.filter((x) => x.servedBy === s && x.sent >= from && x.sent < to).length}`)
      .join(', ');
  const logLines = readFileSync(logFile, 'utf8').split('\n');
  // httplog's "retries" field: a "+" when the request was redispatched to another server.
  const retried = logLines.filter((l) => / \d+\/\d+\/\d+\/\d+\/\+?[1-9]\d* \d+\/\d+ /.test(l));
  t.diagnostic(`${answers.length} requests over ${CONNECTIONS} keep-alive connections in ${(loadMs / 1000).toFixed(1)} s, ${failures.length} failed`);
  t.diagnostic(`served before SIGTERM: ${count(0, sigtermAt)}`);
  t.diagnostic(`served after SIGTERM:  ${count(sigtermAt, Infinity)}`);
  t.diagnostic(
    `A after SIGTERM: /readyz ${readyzDuringDrain} at 200 ms; haproxy marked it down after ${markedDownAfter.toFixed(0)} ms; ` +
      `alive at ${DRAIN_MS - 700} ms: ${aliveNearDrainEnd}; exited (code ${a.exitCode()}) after ${exitedAfter.toFixed(0)} ms (DRAIN_MS ${DRAIN_MS})`,
  );
  t.diagnostic(`haproxy: ${retried.length} requests retried; sessions per server ${JSON.stringify(Object.fromEntries(stats))}`);
  for (const l of logLines.filter((x) => /^Server signers\//.test(x)).slice(0, 10)) t.diagnostic(`haproxy: ${l.trim()}`);
  for (const f of failures.slice(0, 5)) t.diagnostic(`failure at ${(f.sent - sigtermAt).toFixed(0)} ms from SIGTERM: ${f.failure}`);

  assert.deepEqual(
    failures.map((f) => f.failure),
    [],
    'every request through the balancer got a 200 with a signature that verifies',
  );
  const before = answers.filter((x) => x.sent < sigtermAt);
  assert.ok(before.some((x) => x.servedBy === 'signer1') && before.some((x) => x.servedBy === 'signer2'), 'both instances served before the SIGTERM');
  assert.ok(
    answers.some((x) => x.servedBy === 'signer2' && x.sent > sigtermAt + DRAIN_MS),
    'B served the load after A stopped',
  );
  assert.equal(readyzDuringDrain, '503', 'A answers /readyz 503 as soon as it got SIGTERM');
  assert.equal(markedDown, undefined, `haproxy marked A down within DRAIN_MS (${DRAIN_MS} ms)`);
  assert.ok(aliveNearDrainEnd, 'A kept running through most of DRAIN_MS');
  assert.equal(exited, undefined, 'A exited after the drain');
  assert.equal(a.exitCode(), 0, 'with code 0');
  assert.ok(exitedAfter >= DRAIN_MS, `A stopped no earlier than DRAIN_MS (after ${exitedAfter.toFixed(0)} ms)`);
  // Taken out on a check, A got no new request from haproxy in the last part of its drain.
  assert.deepEqual(
    answers.filter((x) => x.servedBy === 'signer1' && x.sent > sigtermAt + markedDownAfter + CHECK_INTER_MS).map((x) => (x.sent - sigtermAt).toFixed(0)),
    [],
    'no request was sent to A after haproxy marked it down',
  );
  assert.ok(b.alive(), 'B is still serving');
});
