import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createPublicKey, verify, type JsonWebKey } from 'node:crypto';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { admin, dumpTokenObjects, runAdmin } from '../support/adminCli.js';
import { createTestToken, startTestService, type TestToken } from '../support/testToken.js';
import { TempDir, makeRoot, signAsRoot } from '../unit/pki/openssl.js';

/**
 * hsm-signer-admin as its own process, as in production: what it creates on the token (read
 * back by another process), its refusals, and a running service following its rotations.
 */
const KEY_REFRESH_MS = 200;
let token: TestToken;
let svc: Awaited<ReturnType<typeof startTestService>>;
let server: Server;
let base: string;

before(async () => {
  token = await createTestToken();
  svc = await startTestService(token, { KEY_REFRESH_MS: String(KEY_REFRESH_MS) });
  server = svc.app.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(async () => {
  await new Promise((r) => server?.close(r));
  await svc?.close();
  token?.cleanup();
});

/** A sign answer's fields these tests read. */
type SignAnswer = { keyVersion: number; signature: string };

/** `json` is the body as the caller expects a 200 answer to be (T), null without a body; read it after checking the status. */
async function call<T = unknown>(method: string, path: string, body?: unknown): Promise<{ status: number; json: T }> {
  const res = await fetch(`${base}${path}`, {
    method,
    ...(body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : null };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls until `check` holds (or fails after `ms`). */
async function until(check: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

describe('commands and their output', () => {
  test('create, rotate and list; a development notice when the key-manager PIN falls back to the user PIN', async () => {
    const created = await runAdmin(token, ['keys', 'create', '--name', 'app', '--spec', 'RSA_2048']);
    assert.equal(created.code, 0, created.stderr);
    assert.match(created.stdout, /^created app version 1 \(RSA_2048\), CKA_ID [0-9a-f]{32}\n$/);
    assert.match(created.stderr, /notice: HSM_ADMIN_PIN is not set; using the token user PIN \(SoftHSMv2 development only\)/);

    const rotated = await runAdmin(token, ['keys', 'rotate', '--name', 'app']);
    assert.equal(rotated.code, 0, rotated.stderr);
    assert.match(rotated.stdout, /^rotated app: version 2 \(RSA_2048\) is now current, CKA_ID [0-9a-f]{32}\n$/);

    const list = await admin(token, 'keys', 'list');
    assert.equal(list, 'app\tv1\tRSA_2048\tno certificate\napp\tv2\tRSA_2048\tno certificate\n');
    const json = JSON.parse(await admin(token, 'keys', 'list', '--json')) as {
      keys: { name: string; version: number; keySpec: string; id: string; hasCertificate: boolean }[];
    };
    assert.deepEqual(
      json.keys.map((k) => [k.name, k.version, k.keySpec, k.hasCertificate]),
      [
        ['app', 1, 'RSA_2048', false],
        ['app', 2, 'RSA_2048', false],
      ],
    );
    assert.notEqual(json.keys[0]!.id, json.keys[1]!.id);

    // The same through the npm script (the sources). The package's bin runs the compiled build:
    // test/integration/productionBuild.test.ts runs it.
    const env = { ...process.env, ...token.env() };
    assert.ok(execFileSync('npm', ['run', '--silent', 'admin', '--', 'keys', 'list'], { env, encoding: 'utf8', stdio: 'pipe' }).endsWith(list));
  });

  test('refusals: an existing name, an unknown key, bad arguments', async () => {
    const cases: { args: string[]; code: number; says: RegExp }[] = [
      { args: ['keys', 'create', '--name', 'app', '--spec', 'RSA_2048'], code: 1, says: /key 'app' exists; use 'keys rotate'/ },
      { args: ['keys', 'rotate', '--name', 'nope'], code: 1, says: /no key named 'nope'/ },
      { args: ['keys', 'create', '--name', 'x', '--spec', 'RSA_1024'], code: 2, says: /--spec: must be one of RSA_2048/ },
      { args: ['keys', 'create', '--name', '../x', '--spec', 'RSA_2048'], code: 2, says: /--name: must be/ },
      { args: ['keys', 'retire', '--name', 'app', '--version', 'one'], code: 2, says: /--version: must be a positive integer/ },
      { args: ['keys', 'list', '--verbose'], code: 2, says: /Unknown option '--verbose'/ },
      { args: ['keys', 'explode'], code: 2, says: /unknown command 'keys explode'/ },
    ];
    for (const c of cases) {
      const r = await runAdmin(token, c.args);
      assert.equal(r.code, c.code, `${c.args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, c.says, c.args.join(' '));
    }
  });

  test('credentials: HSM_ADMIN_PIN_FILE is used without a notice, a wrong PIN is refused, no PIN off SoftHSMv2 is an error', async () => {
    const ok = await runAdmin(token, ['keys', 'list'], { HSM_ADMIN_PIN_FILE: token.pinFile, HSM_PIN_FILE: undefined });
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stderr, '');
    const wrong = await runAdmin(token, ['keys', 'list'], { HSM_ADMIN_PIN: 'not-the-pin' });
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /the HSM refused the key-manager credential/);
    assert.doesNotMatch(wrong.stderr, /not-the-pin/);
    const missing = await runAdmin(token, ['keys', 'list'], { HSM_ADMIN_PIN_FILE: '/nonexistent/admin.pin' });
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /HSM_ADMIN_PIN_FILE: cannot read the file \(ENOENT\)/);
    const emptyFile = join(token.dir, 'empty-admin.pin');
    writeFileSync(emptyFile, '\n', { mode: 0o600 });
    const empty = await runAdmin(token, ['keys', 'list'], { HSM_ADMIN_PIN_FILE: emptyFile });
    assert.equal(empty.code, 2);
    assert.match(empty.stderr, /HSM_ADMIN_PIN_FILE: the file is empty/);
    const cloud = await runAdmin(token, ['keys', 'list'], { HSM_MODULE: '/opt/cloudhsm/lib/libcloudhsm_pkcs11.so' });
    assert.equal(cloud.code, 2);
    assert.match(cloud.stderr, /set HSM_ADMIN_PIN or HSM_ADMIN_PIN_FILE/);
  });
});

test('keys on the token: token objects, sensitive, never extractable, sign only, one CKA_ID per pair; secrets cannot be read', async () => {
  await admin(token, 'keys', 'create', '--name', 'ec', '--spec', 'ECC_NIST_P384');
  // Read back by another process (PKCS#11 state is per process; the service in this one keeps running).
  const objects = await dumpTokenObjects(token);
  const privateKeys = objects.filter((o) => o.class === 'privateKey');
  assert.deepEqual(privateKeys.map((o) => o.label).sort(), ['app/v1', 'app/v2', 'ec/v1']);
  for (const key of privateKeys) {
    const at = key.label;
    assert.deepEqual(
      { ...key.flags, MODIFIABLE: undefined, SIGN_RECOVER: undefined },
      {
        TOKEN: true,
        PRIVATE: true,
        SENSITIVE: true,
        EXTRACTABLE: false,
        ALWAYS_SENSITIVE: true,
        NEVER_EXTRACTABLE: true,
        LOCAL: true,
        SIGN: true,
        DECRYPT: false,
        UNWRAP: false,
        DERIVE: false,
        MODIFIABLE: undefined,
        SIGN_RECOVER: undefined,
      },
      at,
    );
    // C_GetAttributeValue of the private parts fails with CKR_ATTRIBUTE_SENSITIVE.
    const secrets = Object.values(key.secrets ?? {});
    assert.ok(secrets.length > 0, at);
    for (const s of secrets) assert.equal(s, 'CKR_ATTRIBUTE_SENSITIVE', at);
    assert.match(key.id, /^[0-9a-f]{32}$/, at);
    const publicKeys = objects.filter((o) => o.class === 'publicKey' && o.id === key.id);
    assert.equal(publicKeys.length, 1, `${at}: one public key with the same CKA_ID`);
    assert.equal(publicKeys[0]!.label, key.label);
    assert.equal(publicKeys[0]!.flags.TOKEN, true);
    assert.equal(publicKeys[0]!.flags.VERIFY, true);
    assert.equal(publicKeys[0]!.flags.ENCRYPT, false);
    assert.equal(publicKeys[0]!.flags.WRAP, false);
  }
  assert.deepEqual(
    privateKeys
      .filter((k) => k.secrets?.PRIVATE_EXPONENT)
      .map((k) => k.label)
      .sort(),
    ['app/v1', 'app/v2'],
  );
  assert.deepEqual(
    privateKeys.filter((k) => k.secrets?.VALUE).map((k) => k.label),
    ['ec/v1'],
  );
  assert.equal(new Set(privateKeys.map((k) => k.id)).size, privateKeys.length, 'CKA_IDs are unique');
});

test('the running service picks up a rotated version within KEY_REFRESH_MS, /sign serving throughout; JWKS lists every version', async () => {
  await admin(token, 'keys', 'create', '--name', 'live', '--spec', 'ECC_NIST_P256');
  const digest = Buffer.alloc(32, 1).toString('base64');
  await until(async () => (await call('POST', '/v1/keys/live/sign', { algorithm: 'ECDSA_SHA_256', digest })).status === 200, 3000, 'the new key');

  const results: { status: number; version?: number; at: number; message: Buffer; signature?: Buffer }[] = [];
  let stop = false;
  let n = 0;
  const loop = async (): Promise<void> => {
    while (!stop) {
      const message = Buffer.from(`message ${n++}`);
      const r = await call<SignAnswer | null>('POST', '/v1/keys/live/sign', { algorithm: 'ECDSA_SHA_256', message: message.toString('base64') });
      results.push({
        status: r.status,
        version: r.json?.keyVersion,
        at: Date.now(),
        message,
        ...(r.status === 200 ? { signature: Buffer.from(r.json!.signature, 'base64') } : {}),
      });
    }
  };
  const loops = Array.from({ length: 4 }, loop);
  await sleep(100);
  const rotated = await runAdmin(token, ['keys', 'rotate', '--name', 'live']);
  const rotatedAt = Date.now();
  assert.equal(rotated.code, 0, rotated.stderr);
  await until(async () => results.some((r) => r.version === 2), 5000, 'a signature by version 2');
  const firstV2 = results.find((r) => r.version === 2)!.at;
  await sleep(100);
  stop = true;
  await Promise.all(loops);

  assert.deepEqual(
    results.filter((r) => r.status !== 200).map((r) => r.status),
    [],
    'no failed request during the rotation',
  );
  // The periodic rescan every KEY_REFRESH_MS (plus the scan itself) bounds the delay.
  assert.ok(firstV2 - rotatedAt <= KEY_REFRESH_MS + 800, `version 2 served ${firstV2 - rotatedAt} ms after the rotation`);
  assert.ok(results.some((r) => r.version === 1) && results.some((r) => r.version === 2));
  // Once seen, version 2 stays current.
  const afterFirst = results.filter((r) => r.at > firstV2 + 50);
  assert.ok(afterFirst.length > 0 && afterFirst.every((r) => r.version === 2));

  const key = await call<{ currentVersion: number }>('GET', '/v1/keys/live');
  assert.equal(key.json.currentVersion, 2);
  const jwks = await call<{ keys: (JsonWebKey & { kid: string; kty: string; crv: string; use: string })[] }>('GET', '/v1/keys/live/jwks');
  assert.equal(jwks.status, 200);
  assert.deepEqual(
    jwks.json.keys.map((k) => [k.kid, k.kty, k.crv, k.use]),
    [
      ['live/v1', 'EC', 'P-256', 'sig'],
      ['live/v2', 'EC', 'P-256', 'sig'],
    ],
  );
  // A relying party verifies across the rotation with the JWK named by the version.
  const jwk = (v: number) => createPublicKey({ key: jwks.json.keys[v - 1]!, format: 'jwk' });
  for (const v of [1, 2]) {
    const r = results.find((x) => x.version === v)!;
    assert.ok(verify('sha256', r.message, jwk(v), r.signature!), `a version ${v} signature verifies with live/v${v}`);
    assert.ok(!verify('sha256', r.message, jwk(3 - v), r.signature!), `and not with live/v${3 - v}`);
  }
  for (const r of results) assert.ok(verify('sha256', r.message, jwk(r.version!), r.signature!));
});

test('retire: refuses without --confirm and the only version; prints every object it destroys, certificates included', async () => {
  // Give app/v1 a certificate (through the service, as PKI jobs do) so its retirement removes one.
  const dir = await TempDir.create();
  try {
    await makeRoot(dir, { name: 'root' });
    const csr = await call<{ csrPem: string }>('POST', '/v1/keys/app/csr', { subject: 'CN=App CA', keyVersion: 1, ca: { pathLength: 0 } });
    assert.equal(csr.status, 200, JSON.stringify(csr.json));
    const cert = await signAsRoot(dir, csr.json.csrPem, { root: 'root', out: 'app' });
    assert.equal((await call('PUT', '/v1/keys/app/certificate', { certificatePem: cert, keyVersion: 1 })).status, 204);
  } finally {
    await dir.remove();
  }
  assert.match(await admin(token, 'keys', 'list'), /^app\tv1\tRSA_2048\tcertificate$/m);
  const before = await dumpTokenObjects(token);
  const id = before.find((o) => o.class === 'privateKey' && o.label === 'app/v1')!.id;

  const unconfirmed = await runAdmin(token, ['keys', 'retire', '--name', 'app', '--version', '1']);
  assert.equal(unconfirmed.code, 2);
  assert.match(unconfirmed.stderr, /would retire app version 1 \(RSA_2048, CKA_ID [0-9a-f]{32}, with certificate\).*add --confirm to do it/);
  assert.deepEqual((await dumpTokenObjects(token)).filter((o) => o.id === id).length, 3, 'nothing removed without --confirm');

  await admin(token, 'keys', 'create', '--name', 'solo', '--spec', 'ECC_NIST_P256');
  for (const confirm of [[], ['--confirm']]) {
    const only = await runAdmin(token, ['keys', 'retire', '--name', 'solo', '--version', '1', ...confirm]);
    assert.equal(only.code, 1);
    assert.match(only.stderr, /version: 1 is the only version of 'solo'; it cannot be retired/);
  }
  const missing = await runAdmin(token, ['keys', 'retire', '--name', 'app', '--version', '9', '--confirm']);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /key 'app' has no version 9/);

  const retired = await runAdmin(token, ['keys', 'retire', '--name', 'app', '--version', '1', '--confirm']);
  assert.equal(retired.code, 0, retired.stderr);
  const [head, ...lines] = retired.stdout.trim().split('\n');
  assert.match(head!, /^retired app version 1 \(RSA_2048, CKA_ID [0-9a-f]{32}, with certificate\); destroyed 3 object\(s\):$/);
  assert.deepEqual(lines.map((l) => l.trim()).sort(), ['certificate\tapp/v1', 'private key\tapp/v1', 'public key\tapp/v1']);
  assert.deepEqual(
    (await dumpTokenObjects(token)).filter((o) => o.id === id),
    [],
  );
  assert.equal(
    await admin(token, 'keys', 'list'),
    'app\tv2\tRSA_2048\tno certificate\nec\tv1\tECC_NIST_P384\tno certificate\nlive\tv1\tECC_NIST_P256\tno certificate\nlive\tv2\tECC_NIST_P256\tno certificate\nsolo\tv1\tECC_NIST_P256\tno certificate\n',
  );
  // The service drops the retired version at its next rescan.
  await until(async () => (await call<{ keys: unknown[] }>('GET', '/v1/keys/app/jwks')).json.keys.length === 1, 3000, 'the JWKS without app/v1');
});

test('concurrent admin commands run one at a time: no two keys ever share a version', async () => {
  await admin(token, 'keys', 'create', '--name', 'race', '--spec', 'ECC_NIST_P256');
  const runs = await Promise.all(Array.from({ length: 3 }, () => runAdmin(token, ['keys', 'rotate', '--name', 'race'])));
  for (const r of runs) assert.equal(r.code, 0, r.stderr);
  const versions = runs.map((r) => Number(/version (\d+)/.exec(r.stdout)![1])).sort();
  assert.deepEqual(versions, [2, 3, 4]);
  const labels = (await dumpTokenObjects(token))
    .filter((o) => o.class === 'privateKey' && o.label.startsWith('race/'))
    .map((o) => o.label)
    .sort();
  assert.deepEqual(labels, ['race/v1', 'race/v2', 'race/v3', 'race/v4']);
});

// Last: its keys would change what the tests above find on the token.
test('CloudHSM (named by HSM_MODULE_VENDOR): create and rotate print the key share command for the new private key; list asks the service which versions it can sign with', async () => {
  const cloud = { HSM_MODULE_VENDOR: 'cloudhsm', HSM_SIGNER_USER: 'signer-cu' };
  const created = await runAdmin(token, ['keys', 'create', '--name', 'shared', '--spec', 'ECC_NIST_P256'], cloud);
  assert.equal(created.code, 0, created.stderr);
  assert.match(created.stdout, /^created shared version 1 \(ECC_NIST_P256\), CKA_ID [0-9a-f]{32}\n/);
  assert.ok(
    created.stdout.endsWith('\n  key share --filter attr.label=shared/v1 attr.class=private-key --username signer-cu --role crypto-user\n'),
    created.stdout,
  );
  const rotated = await runAdmin(token, ['keys', 'rotate', '--name', 'shared'], { HSM_MODULE_VENDOR: 'cloudhsm', HSM_SIGNER_USER: '' });
  assert.equal(rotated.code, 0, rotated.stderr);
  assert.match(rotated.stdout, /set HSM_SIGNER_USER to that user's name/);
  assert.match(rotated.stdout, /\n {2}key share --filter attr.label=shared\/v2 attr.class=private-key --username <signing user> --role crypto-user\n$/);
  const badUser = await runAdmin(token, ['keys', 'list'], { HSM_SIGNER_USER: 'x; rm -rf /' });
  assert.equal(badUser.code, 2);
  assert.match(badUser.stderr, /HSM_SIGNER_USER: must be/);
  assert.doesNotMatch(badUser.stderr, /rm -rf/);

  await until(async () => (await call<{ versions: unknown[] }>('GET', '/v1/keys/shared')).json?.versions?.length === 2, 5000, 'the service serving shared v2');
  const list = await runAdmin(token, ['keys', 'list', '--service-url', base]);
  assert.equal(list.code, 0, list.stderr);
  assert.match(list.stdout, /^shared\tv1\tECC_NIST_P256\tno certificate\tusable$/m);
  assert.match(list.stdout, /^shared\tv2\tECC_NIST_P256\tno certificate\tusable$/m);
  const json = await runAdmin(token, ['keys', 'list', '--json'], { HSM_SIGNER_URL: base });
  const listed = (JSON.parse(json.stdout) as { keys: { name: string; version: number; served: boolean; usable?: boolean }[] }).keys;
  assert.deepEqual(
    listed.filter((k) => k.name === 'shared').map((k) => [k.version, k.served, k.usable]),
    [
      [1, true, true],
      [2, true, true],
    ],
  );
  const down = await runAdmin(token, ['keys', 'list', '--service-url', 'http://127.0.0.1:1']);
  assert.equal(down.code, 0, 'the token listing does not depend on the service');
  assert.match(down.stderr, /cannot ask the service at http:\/\/127.0.0.1:1 which versions it can sign with/);
  assert.match(down.stdout, /^shared\tv1\tECC_NIST_P256\tno certificate\n/m);
});
