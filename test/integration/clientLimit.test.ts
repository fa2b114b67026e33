/**
 * Issue 12, per-client limits: with authentication on, a client at 200 connections against a
 * worker of 16 HSM sessions gets 429 RESOURCE_EXHAUSTED beyond CLIENT_MAX_IN_FLIGHT (64), and a
 * second client at 4 connections is served throughout: no errors, p99 below the request deadline.
 * The real service in its own process on a real socket, on a SoftHSMv2 token.
 *
 * The queue behind the sessions is 96 (HSM_MAX_WAITING): 200 requests in flight would overflow it
 * and the small client would be shed with 503 OVERLOADED; the limit keeps the big one at 64.
 */
import { execFile } from 'node:child_process';
import { createHash, createPublicKey, type KeyObject } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { closedLoops, errorCode, HttpDriver, percentile, signatureVerifies, startServiceProcess, type HttpResult, type ServiceProcess } from '../support/faultService.js';
import { createTestToken, type TestToken } from '../support/testToken.js';

const KEY = 'limit-ec';
const ALGORITHM = 'ECDSA_SHA_256';
const DEADLINE_MS = 2000;
const WARMUP_MS = 1500;
const RUN_MS = 4000;
const AUTOCANNON = fileURLToPath(new URL('../../node_modules/autocannon/autocannon.js', import.meta.url));
const BULK = 'tok-bulk-client-5c1d0e7a9b';
const SMALL = 'tok-small-client-3f2a6b8c4d';
const sha = (s: string): string => createHash('sha256').update(s).digest('hex');

let token: TestToken;
let svc: ServiceProcess | undefined;
const drivers: HttpDriver[] = [];

before(async () => {
  token = await createTestToken([{ name: KEY, spec: 'ECC_NIST_P256' }]);
});
after(async () => {
  for (const d of drivers) d.close();
  await svc?.stop();
  token?.cleanup();
});

/** autocannon in its own process (so its 200 connections do not share the small client's event loop); resolves with its JSON result. */
function bulkLoad(port: number, durationSec: number): Promise<{ statusCodeStats: Record<string, { count: number }>; latency: { p50: number; p99: number }; errors: number; timeouts: number }> {
  const body = JSON.stringify({ algorithm: ALGORITHM, message: Buffer.from('bulk job item').toString('base64') });
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [AUTOCANNON, '-c', '200', '-d', String(durationSec), '-m', 'POST', '-H', 'content-type=application/json', '-H', `authorization=Bearer ${BULK}`, '-b', body, '-j', `http://127.0.0.1:${port}/v1/keys/${KEY}/sign`],
      { maxBuffer: 16 << 20 },
      (e, stdout, stderr) => (e ? reject(new Error(`autocannon failed: ${stderr}`)) : resolve(JSON.parse(stdout))),
    );
  });
}

test('one client at 200 connections is held to 64 in flight; another at 4 connections sees no errors and a p99 below the deadline', { timeout: 60_000 }, async (t) => {
  const clientsFile = join(token.dir, 'clients.json');
  const grant = [{ keys: '*', operations: ['sign', 'read'] }];
  writeFileSync(clientsFile, JSON.stringify({ clients: [{ name: 'bulk-batch-job', tokenSha256: sha(BULK), allow: grant }, { name: 'checkout-api', tokenSha256: sha(SMALL), allow: grant }] }));
  svc = await startServiceProcess(
    token.env({ CLIENTS_FILE: clientsFile, HSM_SESSIONS: '16', HSM_MAX_WAITING: '96', REQUEST_DEADLINE_MS: String(DEADLINE_MS), LOG_LEVEL: 'error' }),
    { maxSockets: 4 },
  );
  const s = svc;
  const auth = (tok: string): Record<string, string> => ({ authorization: `Bearer ${tok}` });
  const info = await s.driver.request('GET', `/v1/keys/${KEY}`, undefined, auth(SMALL));
  assert.equal(info.status, 200, info.text);
  const publicKey: KeyObject = createPublicKey((info.body as { versions: { publicKeyPem: string }[] }).versions[0]!.publicKeyPem);
  const sign = async (d: HttpDriver, tok: string): Promise<{ r: HttpResult; message: Buffer }> => {
    const message = Buffer.from(`small ${Math.random()}`);
    const r = await d.request('POST', `/v1/keys/${KEY}/sign`, { algorithm: ALGORITHM, message: message.toString('base64') }, auth(tok));
    return { r, message };
  };

  // The bulk client runs WARMUP_MS + RUN_MS + a margin and never backs off (autocannon sends again at once after a 429);
  // the small one starts once the bulk one is at full speed, and a probe with the bulk client's token looks at its 429s.
  const bulk = bulkLoad(s.port, (WARMUP_MS + RUN_MS) / 1000 + 1);
  await sleep(WARMUP_MS);
  const probe = new HttpDriver(s.port, 1);
  drivers.push(probe);
  const smallResults: { r: HttpResult; message: Buffer }[] = [];
  const probeResults: HttpResult[] = [];
  const end = Date.now() + RUN_MS;
  const running = (): boolean => Date.now() < end;
  await Promise.all([
    closedLoops(4, running, async () => smallResults.push(await sign(s.driver, SMALL))),
    closedLoops(1, running, async () => probeResults.push((await sign(probe, BULK)).r), 50),
  ]);
  const b = await bulk;

  const smallR = smallResults.map((x) => x.r);
  const lat = (p: number): number => percentile(smallR.map((r) => r.end - r.start), p);
  const smallErrors = smallR.filter((r) => r.status !== 200);
  const codes = Object.entries(b.statusCodeStats).map(([code, v]) => `${v.count} x ${code}`).join(', ');
  t.diagnostic(`bulk-batch-job, 200 connections for ${(WARMUP_MS + RUN_MS) / 1000 + 1} s (autocannon): ${codes}; latency p50 ${b.latency.p50} ms, p99 ${b.latency.p99} ms; ${b.errors} errors, ${b.timeouts} timeouts`);
  t.diagnostic(`checkout-api, 4 connections for ${RUN_MS / 1000} s: ${smallR.length - smallErrors.length} x 200, ${smallErrors.length} errors; p50 ${lat(50).toFixed(1)} ms, p99 ${lat(99).toFixed(1)} ms, max ${lat(100).toFixed(1)} ms (deadline ${DEADLINE_MS} ms)`);

  assert.deepEqual(smallErrors.map((r) => `${r.status} ${errorCode(r)}`).slice(0, 5), [], 'the small client gets no errors');
  assert.ok(smallR.length >= 20, `the small client was served throughout (${smallR.length} requests)`);
  assert.ok(lat(99) < DEADLINE_MS, 'its p99 is below the request deadline');
  assert.equal(smallResults.filter((x) => !signatureVerifies(publicKey, ALGORITHM, x.message, (x.r.body as { signature: string }).signature)).length, 0, 'every signature it got verifies');

  assert.ok((b.statusCodeStats['429']?.count ?? 0) > 0, 'the bulk client was limited');
  assert.ok((b.statusCodeStats['200']?.count ?? 0) > 0, 'and served up to its limit');
  assert.deepEqual(Object.keys(b.statusCodeStats).filter((c) => c !== '200' && c !== '429'), [], 'nothing but 200 and 429 for the bulk client');
  const limited = probeResults.filter((r) => r.status === 429);
  assert.ok(limited.length > 0, `the bulk client's own probe met the limit (${probeResults.length} tries)`);
  const l = limited[0]!;
  assert.equal(errorCode(l), 'RESOURCE_EXHAUSTED');
  assert.equal(l.headers['retry-after'], '1');
  assert.match((l.body as { error: { message: string } }).error.message, /client 'bulk-batch-job' already has 64 requests in flight \(CLIENT_MAX_IN_FLIGHT\)/);
  assert.equal((l.body as { error: { requestId: string } }).error.requestId, l.headers['x-request-id']);
  for (const r of [...limited, ...smallR.slice(0, 50)]) assert.ok(!r.text.includes(BULK) && !r.text.includes(SMALL) && !r.text.includes(token.pin));
  assert.ok(s.logs().every((line) => !line.includes(BULK) && !line.includes(SMALL) && !line.includes(token.pin)), 'no token or PIN in the service log');
});
