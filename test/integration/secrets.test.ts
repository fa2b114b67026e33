/**
 * Secrets in the real service process: with WORKERS=2 and the PIN in HSM_PIN, no worker's
 * environment (/proc/<pid>/environ, as the kernel reports it) holds the PIN, the workers still log
 * in (the primary hands them the PIN over IPC), and neither the PIN nor a bearer token reaches a log line.
 */
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { childPids } from '../../loadtest/serviceProbe.js';
import { eventually, startServiceProcess, type ServiceProcess } from '../support/faultService.js';
import { createTestToken, type TestToken } from '../support/testToken.js';

const TOKEN = 'tok-secrets-test-0123456789abcdef';
let token: TestToken;
let svc: ServiceProcess;

before(async () => {
  token = await createTestToken([{ name: 'ec', spec: 'ECC_NIST_P256' }]);
  const clientsFile = join(token.dir, 'clients.json');
  writeFileSync(clientsFile, JSON.stringify({ clients: [{ name: 'app', tokenSha256: createHash('sha256').update(TOKEN).digest('hex'), allow: [{ keys: '*', operations: ['sign', 'read'] }] }] }));
  const { HSM_PIN_FILE: _file, ...env } = token.env({ WORKERS: '2', LOG_LEVEL: 'debug', CLIENTS_FILE: clientsFile, HSM_PIN: token.pin });
  svc = await startServiceProcess(env);
});
after(async () => {
  await svc?.stop();
  token?.cleanup();
});

const environ = (pid: number): string[] => readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0').filter(Boolean);

test("no worker's environment holds HSM_PIN; the workers are logged in all the same", async () => {
  assert.ok(token.pin.length >= 4);
  assert.ok(environ(svc.pid).includes(`HSM_PIN=${token.pin}`), 'the primary was started with it (the check reads the right thing)');
  // The primary's children are its workers (NODE_UNIQUE_ID set by node:cluster) and tsx's esbuild.
  const workers = (): number[] => childPids(svc.pid).filter((pid) => environ(pid).some((e) => e.startsWith('NODE_UNIQUE_ID=')));
  assert.equal(await eventually(async () => (workers().length === 2 ? undefined : `${workers().length} workers`), 20_000), undefined);
  for (const pid of workers()) assert.ok(!environ(pid).some((e) => e.startsWith('HSM_PIN=') || e.includes(token.pin)), `worker ${pid}: no PIN in its environment`);
  // Both workers serve signatures (connections go round-robin), so both logged in.
  const served = await eventually(async () => {
    const r = await svc.driver.request('POST', '/v1/keys/ec/sign', { algorithm: 'ECDSA_SHA_256', message: 'eA==' }, { authorization: `Bearer ${TOKEN}`, connection: 'close' });
    if (r.status !== 200) return `status ${r.status}: ${r.text}`;
    const pids = new Set(
      svc.logs().flatMap((l) => {
        const j = JSON.parse(l) as { msg: string; status?: number; pid: number };
        return j.msg === 'request' && j.status === 200 ? [j.pid] : [];
      }),
    );
    return pids.size === 2 ? undefined : `signed by ${pids.size} worker(s)`;
  }, 20_000, 50);
  assert.equal(served, undefined, served);
});

test('neither the PIN nor a bearer token appears in any log line', async () => {
  await svc.driver.request('GET', '/v1/keys', undefined, { authorization: `Bearer ${TOKEN}` });
  await svc.driver.request('GET', '/v1/keys', undefined, { authorization: 'Bearer wrong-token-that-must-not-be-logged' });
  const log = svc.logs().join('\n');
  assert.match(log, /"msg":"request"/, 'requests are logged (LOG_LEVEL=debug)');
  for (const secret of [token.pin, TOKEN, 'wrong-token-that-must-not-be-logged']) assert.ok(!log.includes(secret), 'a secret in the log');
});
