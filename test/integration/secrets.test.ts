/**
 * Secrets in the real service process: with WORKERS=2 and the PIN in HSM_PIN, no worker's
 * environment (/proc/<pid>/environ, as the kernel reports it) holds the PIN, the workers still log
 * in (the primary hands them the PIN over IPC), and neither the PIN nor a bearer token reaches a log line.
 */
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { childPids } from '../../testkit/processProbe.js';
import { eventually, startServiceProcess, type ServiceProcess } from '../support/faultService.js';
import { createTestToken, type TestToken } from '../support/testToken.js';

const TOKEN = 'tok-secrets-test-0123456789abcdef';
let token: TestToken;
let svc: ServiceProcess;

before(async () => {
  token = await createTestToken([{ name: 'ec', spec: 'ECC_NIST_P256' }]);
  const clientsFile = join(token.dir, 'clients.json');
  writeFileSync(
    clientsFile,
    JSON.stringify({
      clients: [{ name: 'app', tokenSha256: createHash('sha256').update(TOKEN).digest('hex'), allow: [{ keys: '*', operations: ['sign', 'read'] }] }],
    }),
  );
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
  for (const pid of workers())
    assert.ok(!environ(pid).some((e) => e.startsWith('HSM_PIN=') || e.includes(token.pin)), `worker ${pid}: no PIN in its environment`);
  // Both workers serve signatures (connections go round-robin), so both logged in.
  const served = await eventually(
    async () => {
      const r = await svc.driver.request(
        'POST',
        '/v1/keys/ec/sign',
        { algorithm: 'ECDSA_SHA_256', message: 'eA==' },
        { authorization: `Bearer ${TOKEN}`, connection: 'close' },
      );
      if (r.status !== 200) return `status ${r.status}: ${r.text}`;
      const pids = new Set(
        svc.logs().flatMap((l) => {
          const j = JSON.parse(l) as { msg: string; status?: number; pid: number };
          return j.msg === 'request' && j.status === 200 ? [j.pid] : [];
        }),
      );
      return pids.size === 2 ? undefined : `signed by ${pids.size} worker(s)`;
    },
    20_000,
    50,
  );
  assert.equal(served, undefined, served);
});

test('neither the PIN nor a bearer token appears in any log line', async () => {
  await svc.driver.request('GET', '/v1/keys', undefined, { authorization: `Bearer ${TOKEN}` });
  await svc.driver.request('GET', '/v1/keys', undefined, { authorization: 'Bearer wrong-token-that-must-not-be-logged' });
  const log = svc.logs().join('\n');
  assert.match(log, /"msg":"request"/, 'requests are logged (LOG_LEVEL=debug)');
  for (const secret of [token.pin, TOKEN, 'wrong-token-that-must-not-be-logged']) assert.ok(!log.includes(secret), 'a secret in the log');
});

/**
 * The sweep: a production service (two workers, PIN in HSM_PIN, a clients file, the audit log,
 * /metrics on its own port, debug logs) taken through authentication, bad input, HSM faults
 * (a lost login, which logs in again with the PIN, and failing signs) and two reloads (a new
 * clients file, then one that does not parse). Everything it wrote or answered is kept: standard
 * output and error, the audit log, the metrics, every response's headers and body. Neither the PIN,
 * the SO PIN, nor any client token (known, unknown or malformed) may appear anywhere in it.
 */
test('the sweep: nothing the service writes or answers holds the PIN or a client token', { timeout: 90_000 }, async (t) => {
  const { ensureShimBuilt, ShimControl } = await import('../../testkit/p11shim.js');
  const { CKR } = await import('../../src/hsm/errors.js');
  const { freePort } = await import('../../testkit/localHttp.js');
  const tokens = { a: 'tok-sweep-alpha-5f0c2d9e1b', b: 'tok-sweep-bravo-7a3e8c4f20', c: 'tok-sweep-charlie-19d4b6e0aa' };
  const unknownToken = 'tok-sweep-unknown-8e2f6a1c3d';
  const sha = (s: string): string => createHash('sha256').update(s).digest('hex');
  const clientsFile = join(token.dir, 'sweep-clients.json');
  const writeClients = (withC: boolean): void =>
    writeFileSync(
      clientsFile,
      JSON.stringify({
        clients: [
          { name: 'alpha', tokenSha256: sha(tokens.a), allow: [{ keys: '*', operations: ['sign', 'verify', 'read'] }] },
          { name: 'bravo', tokenSha256: sha(tokens.b), allow: [{ keys: '*', operations: ['read'] }] },
          ...(withC ? [{ name: 'charlie', tokenSha256: sha(tokens.c), allow: [{ keys: '*', operations: ['sign'] }] }] : []),
        ],
      }),
    );
  writeClients(false);
  const auditFile = join(token.dir, 'sweep-audit.log');
  const shim = new ShimControl(join(token.dir, 'sweep-shim.control'));
  const metricsPort = await freePort();
  const { HSM_PIN_FILE: _file, ...env } = token.env({
    NODE_ENV: 'production',
    CLIENTS_FILE: clientsFile,
    AUDIT_LOG: auditFile,
    METRICS_PORT: String(metricsPort),
    LOG_LEVEL: 'debug',
    HSM_PIN: token.pin,
    HSM_MODULE: ensureShimBuilt(),
    ...shim.env(),
  });
  const sweep = await startServiceProcess(env);
  const answers: string[] = [];
  const send = async (method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<number> => {
    const r = await sweep.driver.request(method, path, body, headers, 10_000, { newConnection: true });
    answers.push(JSON.stringify(r.headers), r.text);
    return r.status;
  };
  const bearer = (s: string): Record<string, string> => ({ authorization: `Bearer ${s}` });
  const sign = { algorithm: 'ECDSA_SHA_256', message: Buffer.from('sweep').toString('base64') };
  try {
    const statuses: number[] = [];
    // Authentication: allowed, refused, unknown, malformed (the token inside a bad header).
    statuses.push(await send('POST', '/v1/keys/ec/sign', sign, bearer(tokens.a)));
    statuses.push(await send('POST', '/v1/keys/ec/sign', sign, bearer(tokens.b)));
    statuses.push(await send('POST', '/v1/keys/ec/sign', sign, bearer(unknownToken)));
    statuses.push(await send('POST', '/v1/keys/ec/sign', sign, { authorization: `Token ${tokens.a}` }));
    statuses.push(await send('POST', '/v1/keys/ec/sign', sign, { authorization: `Bearer ${tokens.a} ${tokens.b}` }));
    // Bad input and a key that does not exist.
    statuses.push(await send('POST', '/v1/keys/ec/sign', { ...sign, algorithm: tokens.a }, bearer(tokens.a)));
    statuses.push(await send('POST', '/v1/keys/no-such-key/sign', sign, bearer(tokens.a)));
    statuses.push(
      await send(
        'POST',
        '/v1/sign/batch',
        {
          requests: [
            { keyName: 'ec', ...sign },
            { keyName: 'ec', algorithm: 'RSASSA_PSS_SHA_256', message: sign.message },
          ],
        },
        bearer(tokens.a),
      ),
    );
    // Faults: a lost login (the service logs in again with the PIN), then signs the HSM fails.
    shim.fail('C_Sign', CKR.USER_NOT_LOGGED_IN, 2);
    await shim.settle();
    for (let i = 0; i < 4; i++) statuses.push(await send('POST', '/v1/keys/ec/sign', sign, bearer(tokens.a)));
    shim.reset().fail('C_Sign', CKR.DEVICE_ERROR, 1);
    await shim.settle();
    for (let i = 0; i < 4; i++) statuses.push(await send('POST', '/v1/keys/ec/sign', sign, bearer(tokens.a)));
    shim.reset();
    await shim.settle();
    // Reloads: a new clients file (charlie), then a file that does not parse.
    writeClients(true);
    process.kill(sweep.pid, 'SIGHUP');
    const charlie = await eventually(
      async () => ((await send('POST', '/v1/keys/ec/sign', sign, bearer(tokens.c))) === 200 ? undefined : 'charlie not yet known'),
      10_000,
      200,
    );
    assert.equal(charlie, undefined, 'the reloaded clients file took effect');
    writeFileSync(clientsFile, `{"clients": [{"name": "broken", "tokenSha256": "${sha(tokens.a)}"`);
    process.kill(sweep.pid, 'SIGHUP');
    await eventually(async () => (sweep.logs().some((l) => l.includes('kept the previous clients')) ? undefined : 'no reload error yet'), 10_000, 100);
    statuses.push(await send('GET', '/v1/keys', undefined, bearer(tokens.a)));
    const metrics = await new Promise<string>((resolve, reject) => {
      http
        .get({ host: '127.0.0.1', port: metricsPort, path: '/metrics' }, (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (text += c));
          res.on('end', () => resolve(text));
        })
        .on('error', reject);
    });
    const counts = new Map<number, number>();
    for (const s of statuses) counts.set(s, (counts.get(s) ?? 0) + 1);
    t.diagnostic(`answers by status: ${[...counts].map(([s, n]) => `${s} x${n}`).join(', ')}`);
    // The run went where it was meant to: successes, refusals, bad input, and the faults' retries or 503s.
    for (const s of [200, 400, 401, 403, 404]) assert.ok(counts.has(s), `a ${s} among the answers`);
    const log = sweep.logs().join('\n');
    assert.match(log, /HSM login was lost; logged in again/, 'the lost login was handled: the PIN was used again');
    assert.match(log, /HSM connection lost; re-initializing the module/, 'the device error was handled: the module re-initialized and logged in');
    assert.match(log, /kept the previous clients/, 'the broken clients file was refused in the log');
    const audit = readFileSync(auditFile, 'utf8');
    assert.ok(audit.split('\n').filter(Boolean).length >= 5, 'the audit log has the operations');
    assert.match(audit, /"client":"alpha"/, 'the audit log names the client (and is what the sweep reads)');
    const everything = [log, audit, metrics, ...answers].join('\n');
    const soPin = readFileSync(join(token.dir, 'so.pin'), 'utf8').trim();
    const secrets: [string, string][] = [
      ['PIN', token.pin],
      ['SO PIN', soPin],
      ['token a', tokens.a],
      ['token b', tokens.b],
      ['token c', tokens.c],
      ['unknown token', unknownToken],
    ];
    t.diagnostic(
      `swept ${everything.length} characters: ${log.split('\n').length} log lines, ${audit.split('\n').length - 1} audit records, ${metrics.length} characters of metrics, ${answers.length / 2} answers`,
    );
    for (const [what, secret] of secrets) assert.ok(!everything.includes(secret), `the ${what} appears in what the service wrote or answered`);
  } finally {
    await sweep.stop();
  }
});
