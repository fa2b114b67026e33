/**
 * What the real process (`node --import tsx src/main.ts`) refuses at start, and what it serves
 * when it starts in production: TLS on 127.0.0.1, checked with openssl s_client and node:https.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { freePort } from '../../testkit/localHttp.js';
import { startServiceProcess } from '../support/faultService.js';
import { runUntilExit, type Exited } from '../support/runUntilExit.js';
import { createTestToken, type TestToken } from '../support/testToken.js';
import { httpsRequest, TestPki } from '../support/tlsPki.js';

const PIN = 'pin-that-must-never-be-logged-4711';
const TOKEN = 'tok-startup-0123456789abcdef';

let pki: TestPki;
let token: TestToken;
let clientsFile: string;

before(async () => {
  [pki, token] = await Promise.all([TestPki.create(), createTestToken([{ name: 'ec', spec: 'ECC_NIST_P256' }])]);
  clientsFile = join(token.dir, 'clients.json');
  writeFileSync(
    clientsFile,
    JSON.stringify({ clients: [{ name: 'app', tokenSha256: createHash('sha256').update(TOKEN).digest('hex'), allow: [{ keys: '*', operations: ['read'] }] }] }),
  );
});
after(async () => {
  await pki?.remove();
  token?.cleanup();
});

/** `openssl s_client` with stdin at end of file: it handshakes, prints and quits. */
function sClient(args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('openssl', ['s_client', ...args], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, out }));
  });
}

/** No HSM is touched before these refusals: a PIN in the environment is enough. */
const bare = (extra: Record<string, string>): NodeJS.ProcessEnv => ({ PATH: process.env.PATH ?? '', HSM_PIN: PIN, LOG_LEVEL: 'info', ...extra });

/** Exit code 2 and exactly one line: a fatal pino record whose message starts with `variable`, without the PIN or key material. */
function refusedNaming(r: Exited, variable: string): string {
  assert.equal(r.code, 2, r.lines.join('\n'));
  assert.equal(r.lines.length, 1, `one line:\n${r.lines.join('\n')}`);
  const record = JSON.parse(r.lines[0]!) as { level: number; msg: string };
  assert.equal(record.level, 60, 'fatal');
  assert.ok(record.msg.startsWith(`${variable}: `), record.msg);
  assert.ok(!r.lines[0]!.includes(PIN), 'the PIN is not logged');
  for (const l of pki.server.key.split('\n').filter((x) => x && !x.startsWith('-----'))) assert.ok(!r.lines[0]!.includes(l.slice(0, 16)), 'no key material');
  return record.msg;
}

test('production without CLIENTS_FILE or TLS_CLIENT_CA_FILE refuses to start: exit 2, one line naming both', async () => {
  const [plain, tls] = await Promise.all([
    runUntilExit(bare({ NODE_ENV: 'production' })),
    // Even on loopback, and even with TLS: serving everyone is never a production set-up.
    runUntilExit(bare({ NODE_ENV: 'production', HOST: '127.0.0.1', TLS_CERT_FILE: pki.server.certFile, TLS_KEY_FILE: pki.server.keyFile })),
  ]);
  assert.match(refusedNaming(plain, 'CLIENTS_FILE'), /TLS_CLIENT_CA_FILE/);
  refusedNaming(tls, 'CLIENTS_FILE');
});

test('production on a non-loopback address without TLS refuses to start, naming TLS_CERT_FILE and ALLOW_PLAINTEXT', async () => {
  const [anyAddress, byDefault] = await Promise.all([
    runUntilExit(bare({ NODE_ENV: 'production', CLIENTS_FILE: clientsFile, HOST: '0.0.0.0' })),
    runUntilExit(bare({ NODE_ENV: 'production', CLIENTS_FILE: clientsFile })),
  ]);
  assert.match(refusedNaming(anyAddress, 'TLS_CERT_FILE'), /ALLOW_PLAINTEXT=true/);
  refusedNaming(byDefault, 'TLS_CERT_FILE');
});

test('a TLS file that is missing, a key that does not match, or a clients file that does not load stops the start naming its variable', async () => {
  const prod = { NODE_ENV: 'production', CLIENTS_FILE: clientsFile, HOST: '127.0.0.1' };
  const other = await pki.leaf('startup-other', { subject: '/CN=other' });
  const badClients = join(token.dir, 'bad-clients.json');
  writeFileSync(badClients, JSON.stringify({ clients: [{ name: 'nobody', allow: [] }] }));
  const [noKey, missing, mismatch, swapped, clients] = await Promise.all([
    runUntilExit(bare({ ...prod, TLS_CERT_FILE: pki.server.certFile })),
    runUntilExit(bare({ ...prod, TLS_CERT_FILE: `${pki.server.certFile}.missing`, TLS_KEY_FILE: pki.server.keyFile })),
    runUntilExit(bare({ ...prod, TLS_CERT_FILE: pki.server.certFile, TLS_KEY_FILE: other.keyFile })),
    // The key given as the certificate: the line names the variable, not what is in the file.
    runUntilExit(bare({ ...prod, TLS_CERT_FILE: pki.server.keyFile, TLS_KEY_FILE: pki.server.keyFile })),
    runUntilExit(bare({ ...prod, CLIENTS_FILE: badClients, TLS_CERT_FILE: pki.server.certFile, TLS_KEY_FILE: pki.server.keyFile })),
  ]);
  refusedNaming(noKey, 'TLS_KEY_FILE');
  refusedNaming(missing, 'TLS_CERT_FILE');
  refusedNaming(mismatch, 'TLS_KEY_FILE');
  refusedNaming(swapped, 'TLS_CERT_FILE');
  assert.equal(refusedNaming(clients, 'CLIENTS_FILE'), 'CLIENTS_FILE: clients.0: give tokenSha256, certificate or both');
});

test('production with TLS and a clients file starts on loopback without warnings and serves TLS 1.2 and 1.3 only', async () => {
  const svc = await startServiceProcess(
    // NODE_OPTIONS lowers node's own TLS minimum: the service's explicit TLS 1.2 minimum must hold regardless.
    token.env({
      NODE_ENV: 'production',
      LOG_LEVEL: 'info',
      CLIENTS_FILE: clientsFile,
      TLS_CERT_FILE: pki.server.certFile,
      TLS_KEY_FILE: pki.server.keyFile,
      METRICS_PORT: String(await freePort()),
      NODE_OPTIONS: '--tls-min-v1.0',
    }),
    { ready: async (port) => (await httpsRequest(port, { path: '/readyz', ca: pki.ca })).status === 200 },
  );
  try {
    const levels = svc.logs().map((l) => (JSON.parse(l) as { level: number }).level);
    assert.ok(
      levels.every((l) => l < 40),
      `no warnings or errors:\n${svc.logs().join('\n')}`,
    );
    assert.match(svc.logs().join('\n'), /"tls":true/);
    const noToken = await httpsRequest(svc.port, { path: '/v1/keys', ca: pki.ca });
    assert.equal(noToken.status, 401);
    const ok = await httpsRequest(svc.port, { path: '/v1/keys', ca: pki.ca, headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(ok.status, 200);
    assert.equal(ok.protocol, 'TLSv1.3');
    const s = (...args: string[]) => sClient(['-connect', `127.0.0.1:${svc.port}`, '-CAfile', pki.caFile, '-brief', ...args]);
    for (const v of ['-tls1_2', '-tls1_3']) {
      const r = await s(v);
      assert.match(r.out, new RegExp(`Protocol version: TLSv1\\.${v.slice(-1)}`), r.out);
      assert.match(r.out, /Verification: OK/, r.out);
    }
    // SECLEVEL=0 lets this openssl client offer TLS 1.1 at all; the service must answer "protocol version".
    const old = await s('-tls1_1', '-cipher', 'DEFAULT@SECLEVEL=0');
    assert.notEqual(old.code, 0);
    assert.match(old.out, /alert protocol version/, old.out);
  } finally {
    await svc.stop();
  }
});
