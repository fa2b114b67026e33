import { createHash, createPublicKey, verify } from 'node:crypto';
import { Agent, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { SigningAlgorithm } from '../../src/crypto/algorithms.js';
import { signatureValid } from '../../testkit/signatureValid.js';
import { addTokenObjects, admin } from '../support/adminCli.js';
import { createTestToken, startTestService, type TestToken } from '../support/testToken.js';

let token: TestToken;
let svc: Awaited<ReturnType<typeof startTestService>>;
let server: Server;
let base: { port: number };
const agent = new Agent({ keepAlive: true, maxSockets: 100 });

before(async () => {
  token = await createTestToken([
    { name: 'ec', spec: 'ECC_NIST_P256' },
    { name: 'rsa', spec: 'RSA_2048' },
  ]);
  // One worker, a pool smaller than the callers: requests queue for sessions and must all succeed.
  svc = await startTestService(token, { HSM_SESSIONS: '16', HSM_THREADS: '4', KEY_REFRESH_MS: '500', REQUEST_DEADLINE_MS: '20000' });
  server = svc.app.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  base = { port: (server.address() as AddressInfo).port };
});
after(async () => {
  agent.destroy();
  await new Promise((r) => server?.close(r));
  await svc?.close();
  token?.cleanup();
});

/** A sign answer's fields these tests read. */
type SignAnswer = { keyVersion: number; signature: string };

/** `json` is the body as the caller expects a 200 answer to be (T), null without a body; read it after checking the status. */
function call<T = unknown>(method: string, path: string, body?: unknown): Promise<{ status: number; json: T }> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = httpRequest(
      {
        host: '127.0.0.1',
        port: base.port,
        method,
        path,
        agent,
        headers: data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {},
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode!, json: JSON.parse(Buffer.concat(chunks).toString() || 'null') }));
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

async function publicKey(name: string, version = 1): Promise<string> {
  const k = await call<{ versions: { version: number; publicKeyPem: string }[] }>('GET', `/v1/keys/${name}`);
  assert.equal(k.status, 200, JSON.stringify(k.json));
  const v = k.json.versions.find((x) => x.version === version);
  assert.ok(v, `key '${name}' has a version ${version}`);
  return v.publicKeyPem;
}

test('500 signs with 100 in flight through one worker: all valid, pool idle afterwards', async () => {
  const pems = { ec: await publicKey('ec'), rsa: await publicKey('rsa') };
  let next = 0;
  let inFlight = 0;
  let maxInFlight = 0;
  const failures: string[] = [];
  await Promise.all(
    Array.from({ length: 100 }, async () => {
      while (next < 500) {
        const i = next++;
        const name = i % 5 === 0 ? 'rsa' : 'ec';
        const algorithm: SigningAlgorithm = name === 'rsa' ? 'RSASSA_PSS_SHA_256' : 'ECDSA_SHA_256';
        const message = Buffer.from(`message ${i}`);
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        const r = await call<SignAnswer>('POST', `/v1/keys/${name}/sign`, { algorithm, message: message.toString('base64') });
        inFlight--;
        if (r.status !== 200) {
          failures.push(`${i}: ${r.status} ${JSON.stringify(r.json)}`);
          continue;
        }
        const sig = Buffer.from(r.json.signature, 'base64');
        if (!signatureValid(algorithm, message, createPublicKey(name === 'rsa' ? pems.rsa : pems.ec), sig)) failures.push(`${i}: signature does not verify`);
      }
    }),
  );
  assert.deepEqual(failures, []);
  assert.equal(maxInFlight, 100);
  // The periodic key scan (KEY_REFRESH_MS=500 here) borrows a session for a few ms, and behind 100
  // signs its calls queue too: wait for a moment with no scan running. A leaked session never returns.
  let h = svc.service.health();
  for (let i = 0; i < 100 && h.sessions.inUse + h.sessions.waiting + h.callsInFlight > 0; i++) {
    await new Promise((r) => setTimeout(r, 20));
    h = svc.service.health();
  }
  assert.equal(h.sessions.inUse, 0);
  assert.equal(h.sessions.waiting, 0);
  assert.equal(h.sessions.idle, 16);
  assert.equal(h.callsInFlight, 0);
});

test('a key added to the token after start is served; 1,000 extra objects do not change which key signs', async () => {
  const before = await call('POST', '/v1/keys/late/sign', { algorithm: 'ECDSA_SHA_256', digest: Buffer.alloc(32).toString('base64') });
  assert.equal(before.status, 404);
  // The key-manager CLI is its own process, as in production.
  // Asynchronously: this process also runs the server, whose event loop must keep turning.
  await admin(token, 'keys', 'create', '--name', 'late', '--spec', 'ECC_NIST_P384');
  await addTokenObjects(token, { data: 990, ecPairs: 10 });
  const digest = createHash('sha384').update('late').digest();
  // A miss rescans the token (at most once a second), so the new key is served within ~1 s.
  let res = await call<SignAnswer>('POST', '/v1/keys/late/sign', { algorithm: 'ECDSA_SHA_384', digest: digest.toString('base64') });
  for (let i = 0; i < 20 && res.status === 404; i++) {
    await new Promise((r) => setTimeout(r, 200));
    res = await call<SignAnswer>('POST', '/v1/keys/late/sign', { algorithm: 'ECDSA_SHA_384', digest: digest.toString('base64') });
  }
  assert.equal(res.status, 200, JSON.stringify(res.json));
  assert.ok(verify('sha384', Buffer.from('late'), await publicKey('late'), Buffer.from(res.json.signature, 'base64')));

  // After the periodic rescan has seen all 1,000 objects, 'ec' is still the same key.
  await new Promise((r) => setTimeout(r, 1200));
  const list = await call<{ keys: { name: string }[] }>('GET', '/v1/keys');
  const names = list.json.keys.map((k) => k.name);
  assert.ok(names.includes('decoy-9'), 'the rescan saw the decoy keys');
  const pem = await publicKey('ec');
  for (let i = 0; i < 20; i++) {
    const m = Buffer.from(`after decoys ${i}`);
    const r = await call<SignAnswer>('POST', '/v1/keys/ec/sign', { algorithm: 'ECDSA_SHA_256', message: m.toString('base64') });
    assert.equal(r.status, 200);
    assert.equal(r.json.keyVersion, 1);
    assert.ok(verify('sha256', m, pem, Buffer.from(r.json.signature, 'base64')));
  }
});
