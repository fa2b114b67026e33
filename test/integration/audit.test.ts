/**
 * Issue 12, the audit trail (AUDIT_LOG): one JSON line per operation, written before the answer,
 * never holding a secret; and what the service does when the line cannot be written, with real
 * failures: /dev/full (ENOSPC), a removed directory (ENOENT), a FIFO whose reader went away (EPIPE).
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { createHash, createPublicKey, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import {
  closeSync,
  constants,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { hostname, userInfo } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import request from 'supertest';
import { runAdmin } from '../support/adminCli.js';
import { createTestToken, startTestService, type TestToken } from '../support/testToken.js';
import { TempDir, makeRoot, opensslCsr, signAsRoot } from '../unit/pki/openssl.js';

const sha = (s: string | Buffer): string => createHash('sha256').update(s).digest('hex');
const PAYMENTS_TOKEN = 'tok-audit-payments-7f3a9c1e55';
const PKI_TOKEN = 'tok-audit-pki-ops-2b8d4e6f00';
const TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

type Line = Record<string, unknown>;
const lines = (file: string): Line[] =>
  existsSync(file)
    ? readFileSync(file, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Line)
    : [];
const recordsOf = (file: string, requestId: string): Line[] => lines(file).filter((l) => l.requestId === requestId);

let token: TestToken;
let clientsFile: string;

before(async () => {
  token = await createTestToken([
    { name: 'payments-ec', spec: 'ECC_NIST_P256' },
    { name: 'payments-rsa', spec: 'RSA_2048' },
    { name: 'other-ec', spec: 'ECC_NIST_P256' },
    { name: 'issuing-ca', spec: 'ECC_NIST_P384' },
  ]);
  clientsFile = join(token.dir, 'clients.json');
  writeFileSync(
    clientsFile,
    JSON.stringify({
      clients: [
        { name: 'payments-api', tokenSha256: sha(PAYMENTS_TOKEN), allow: [{ keys: 'payments-*', operations: ['sign', 'verify', 'read'] }] },
        { name: 'pki-ops', tokenSha256: sha(PKI_TOKEN), allow: [{ keys: 'issuing-*', operations: ['csr', 'certificate', 'issue', 'read'] }] },
      ],
    }),
  );
});
after(() => token?.cleanup());

describe('records', () => {
  let svc: Awaited<ReturnType<typeof startTestService>>;
  let file: string;
  let dir: TempDir;
  const pay = (r: request.Test): request.Test => r.set('Authorization', `Bearer ${PAYMENTS_TOKEN}`);
  const pki = (r: request.Test): request.Test => r.set('Authorization', `Bearer ${PKI_TOKEN}`);
  const secrets: string[] = [PAYMENTS_TOKEN, PKI_TOKEN];

  before(async () => {
    file = join(token.dir, 'records.log');
    svc = await startTestService(token, { CLIENTS_FILE: clientsFile, AUDIT_LOG: file });
    dir = await TempDir.create();
  });
  after(async () => {
    await svc?.close();
    await dir?.remove();
  });

  async function publicKey(name: string): Promise<KeyObject> {
    const res = await pay(request(svc.app).get(`/v1/keys/${name}`)).expect(200);
    return createPublicKey(res.body.versions[0].publicKeyPem);
  }

  test('sign: one record, with the SHA-256 of the digest signed', async () => {
    const message = Buffer.from('audit me: payment 4711');
    const b64 = message.toString('base64');
    secrets.push(b64);
    const res = await pay(request(svc.app).post('/v1/keys/payments-ec/sign'))
      .set('X-Request-Id', 'audit-sign-1')
      .send({ algorithm: 'ECDSA_SHA_256', message: b64 })
      .expect(200);
    secrets.push(res.body.signature);
    const recs = recordsOf(file, 'audit-sign-1');
    assert.equal(recs.length, 1, 'exactly one record');
    const rec = recs[0]!;
    assert.deepEqual(Object.keys(rec), ['time', 'requestId', 'client', 'source', 'operation', 'keyName', 'keyVersion', 'algorithm', 'digestSha256', 'outcome']);
    assert.match(String(rec.time), TIME);
    assert.ok(Math.abs(Date.parse(String(rec.time)) - Date.now()) < 5000);
    assert.deepEqual(
      { ...rec, time: undefined, source: undefined },
      {
        time: undefined,
        requestId: 'audit-sign-1',
        client: 'payments-api',
        source: undefined,
        operation: 'sign',
        keyName: 'payments-ec',
        keyVersion: 1,
        algorithm: 'ECDSA_SHA_256',
        // The HSM signed SHA-256(message); the record holds the SHA-256 of that digest.
        digestSha256: sha(createHash('sha256').update(message).digest()),
        outcome: 'ok',
      },
    );
    assert.match(String(rec.source), /127\.0\.0\.1|::1/);
    assert.ok(
      cryptoVerify('sha256', message, await publicKey('payments-ec'), Buffer.from(res.body.signature, 'base64')),
      'the signature verifies (node:crypto)',
    );
  });

  test('sign with a digest; refusals (403, 404, 400) are recorded with their code', async () => {
    const digest = createHash('sha256').update('a digest sent by the caller').digest();
    secrets.push(digest.toString('base64'));
    const ok = await pay(request(svc.app).post('/v1/keys/payments-rsa/sign'))
      .send({ algorithm: 'RSASSA_PKCS1_V1_5_SHA_256', digest: digest.toString('base64') })
      .expect(200);
    secrets.push(ok.body.signature);
    const rec = recordsOf(file, ok.headers['x-request-id']!)[0]!;
    assert.equal(rec.digestSha256, sha(digest));
    assert.equal(rec.algorithm, 'RSASSA_PKCS1_V1_5_SHA_256');
    assert.ok(cryptoVerify('sha256', Buffer.from('a digest sent by the caller'), await publicKey('payments-rsa'), Buffer.from(ok.body.signature, 'base64')));

    const denied = await pay(request(svc.app).post('/v1/keys/other-ec/sign'))
      .send({ algorithm: 'ECDSA_SHA_256', digest: digest.toString('base64') })
      .expect(403);
    assert.deepEqual(
      recordsOf(file, denied.headers['x-request-id']!).map((r) => [r.operation, r.keyName, r.client, r.outcome, r.digestSha256]),
      [['sign', 'other-ec', 'payments-api', 'PERMISSION_DENIED', undefined]],
    );
    const missing = await pay(request(svc.app).post('/v1/keys/payments-none/sign'))
      .send({ algorithm: 'ECDSA_SHA_256', digest: digest.toString('base64') })
      .expect(404);
    assert.equal(recordsOf(file, missing.headers['x-request-id']!)[0]?.outcome, 'NOT_FOUND');
    const bad = await pay(request(svc.app).post('/v1/keys/payments-ec/sign')).send({ algorithm: 'ECDSA_SHA_256', digest: 'not base64!' }).expect(400);
    assert.deepEqual(
      recordsOf(file, bad.headers['x-request-id']!).map((r) => [r.keyName, r.outcome]),
      [['payments-ec', 'INVALID_ARGUMENT']],
    );
  });

  test('verify: a record with the answer, for a good and a wrong signature', async () => {
    const message = Buffer.from('verify me');
    const signed = await pay(request(svc.app).post('/v1/keys/payments-ec/sign'))
      .send({ algorithm: 'ECDSA_SHA_256', message: message.toString('base64') })
      .expect(200);
    const good = await pay(request(svc.app).post('/v1/keys/payments-ec/verify'))
      .send({ algorithm: 'ECDSA_SHA_256', message: message.toString('base64'), signature: signed.body.signature })
      .expect(200);
    assert.deepEqual(good.body, { valid: true, keyVersion: 1 });
    const wrong = await pay(request(svc.app).post('/v1/keys/payments-ec/verify'))
      .send({ algorithm: 'ECDSA_SHA_256', message: Buffer.from('something else').toString('base64'), signature: signed.body.signature })
      .expect(200);
    assert.equal(wrong.body.valid, false);
    const g = recordsOf(file, good.headers['x-request-id']!)[0]!;
    assert.deepEqual(
      [g.operation, g.keyVersion, g.valid, g.outcome, g.digestSha256],
      ['verify', 1, true, 'ok', sha(createHash('sha256').update(message).digest())],
    );
    assert.equal(recordsOf(file, wrong.headers['x-request-id']!)[0]?.valid, false);
  });

  test('batch: one record per item, each with its own outcome', async () => {
    const m = Buffer.from('batch item').toString('base64');
    const res = await pay(request(svc.app).post('/v1/sign/batch'))
      .send({
        requests: [
          { keyName: 'payments-ec', algorithm: 'ECDSA_SHA_256', message: m },
          { keyName: 'payments-ec', algorithm: 'ECDSA_SHA_256', message: '***' },
          { keyName: 'other-ec', algorithm: 'ECDSA_SHA_256', message: m },
          { keyName: 'payments-rsa', algorithm: 'RSASSA_PSS_SHA_256', message: m },
        ],
      })
      .expect(200);
    assert.ok(res.body.results[0].signature && res.body.results[3].signature);
    const recs = recordsOf(file, res.headers['x-request-id']!);
    assert.deepEqual(
      recs.map((r) => [r.batchItem, r.operation, r.keyName, r.keyVersion, r.outcome, typeof r.digestSha256]),
      [
        [0, 'sign', 'payments-ec', 1, 'ok', 'string'],
        [1, 'sign', 'payments-ec', undefined, 'INVALID_ARGUMENT', 'undefined'],
        [2, 'sign', 'other-ec', undefined, 'PERMISSION_DENIED', 'undefined'],
        [3, 'sign', 'payments-rsa', 1, 'ok', 'string'],
      ],
    );
  });

  test('csr, certificate attach and issue: recorded, issuance with serial number, subject and profile', async () => {
    const auth = (r: request.Test): request.Test => pki(r);
    const csr = await auth(request(svc.app).post('/v1/keys/issuing-ca/csr'))
      .send({ subject: 'CN=Audit Issuing CA,O=Example,C=US', ca: { pathLength: 0 } })
      .expect(200);
    const c = recordsOf(file, csr.headers['x-request-id']!)[0]!;
    assert.deepEqual([c.operation, c.client, c.keyName, c.keyVersion, c.algorithm, c.outcome], ['csr', 'pki-ops', 'issuing-ca', 1, 'ECDSA_SHA_384', 'ok']);
    assert.match(String(c.digestSha256), /^[0-9a-f]{64}$/);

    const rootPem = await makeRoot(dir, { name: 'root' });
    const intPem = await signAsRoot(dir, csr.body.csrPem, { root: 'root', out: 'int' });
    const attach = await auth(request(svc.app).put('/v1/keys/issuing-ca/certificate')).send({ certificatePem: intPem, chainPem: rootPem }).expect(204);
    const a = recordsOf(file, attach.headers['x-request-id']!)[0]!;
    assert.deepEqual([a.operation, a.keyVersion, a.outcome, a.subject], ['certificate', 1, 'ok', 'CN=Audit Issuing CA,O=Example,C=US']);
    assert.match(String(a.serialNumber), /^[0-9A-F]+$/);

    const leafCsr = await opensslCsr(dir, { name: 'leaf', subject: '/O=Example/CN=www.audit.example' });
    const issued = await auth(request(svc.app).post('/v1/keys/issuing-ca/certificates'))
      .send({ csrPem: leafCsr, profile: 'tls-server', validityDays: 30, subjectAltNames: { dns: ['www.audit.example'] } })
      .expect(201);
    const i = recordsOf(file, issued.headers['x-request-id']!)[0]!;
    assert.deepEqual(
      [i.operation, i.keyName, i.keyVersion, i.algorithm, i.outcome, i.serialNumber, i.subject, i.profile],
      ['issue', 'issuing-ca', 1, 'ECDSA_SHA_384', 'ok', issued.body.serialNumber, 'CN=www.audit.example,O=Example', 'tls-server'],
    );
    const refused = await auth(request(svc.app).post('/v1/keys/issuing-ca/certificates'))
      .send({ csrPem: leafCsr, profile: 'tls-server', validityDays: 99999 })
      .expect(400);
    assert.deepEqual(
      recordsOf(file, refused.headers['x-request-id']!).map((r) => [r.operation, r.outcome]),
      [['issue', 'INVALID_ARGUMENT']],
    );
  });

  test('no token, PIN, message or signature in the audit log', () => {
    const text = readFileSync(file, 'utf8');
    assert.ok(text.length > 0);
    for (const s of [...secrets, token.pin]) assert.ok(!text.includes(s), `the audit log holds a secret (${s.slice(0, 6)}...)`);
    for (const l of text.split('\n').filter(Boolean)) JSON.parse(l);
  });

  test('reopen (log rotation): after the file is moved and the log reopened, records go to a new file at the path', async () => {
    const rotated = `${file}.1`;
    renameSync(file, rotated);
    const before = await pay(request(svc.app).post('/v1/keys/payments-ec/sign')).send({ algorithm: 'ECDSA_SHA_256', message: 'YQ==' }).expect(200);
    assert.equal(recordsOf(rotated, before.headers['x-request-id']!).length, 1, 'until the signal, the moved file');
    svc.reopenAuditLog();
    const after = await pay(request(svc.app).post('/v1/keys/payments-ec/sign')).send({ algorithm: 'ECDSA_SHA_256', message: 'YQ==' }).expect(200);
    assert.equal(recordsOf(file, after.headers['x-request-id']!).length, 1, 'after it, the new file');
    assert.equal(recordsOf(rotated, after.headers['x-request-id']!).length, 0);
  });
});

test('the answer waits for its record: while a FIFO is full, the signature is held back; once read, it is sent', async () => {
  const fifo = join(token.dir, 'slow.fifo');
  execFileSync('mkfifo', [fifo]);
  const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  const filler = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
  const svc = await startTestService(token, { CLIENTS_FILE: clientsFile, AUDIT_LOG: fifo });
  try {
    // Fill the pipe: the service's next write gets EAGAIN until the reader reads.
    let filled = 0;
    for (;;) {
      try {
        filled += writeSync(filler, Buffer.alloc(4096, 0x20));
      } catch (e) {
        assert.equal((e as NodeJS.ErrnoException).code, 'EAGAIN');
        break;
      }
    }
    const message = Buffer.from('held back');
    let answered = false;
    const pending = request(svc.app)
      .post('/v1/keys/payments-ec/sign')
      .set('X-Request-Id', 'held-1')
      .set('Authorization', `Bearer ${PAYMENTS_TOKEN}`)
      .send({ algorithm: 'ECDSA_SHA_256', message: message.toString('base64') })
      .then((r) => {
        answered = true;
        return r;
      });
    await new Promise((r) => setTimeout(r, 600));
    assert.equal(answered, false, `no answer while its record cannot be written (pipe filled with ${filled} bytes)`);
    let text = '';
    const buf = Buffer.alloc(1 << 16);
    const end = Date.now() + 3000;
    while (!text.includes('"held-1"') && Date.now() < end) {
      try {
        text += buf.subarray(0, readSync(reader, buf)).toString();
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
        await new Promise((r) => setTimeout(r, 10));
      }
    }
    const res = await pending;
    assert.equal(res.status, 200, res.text);
    const rec = text.split('\n').find((l) => l.includes('"held-1"'));
    assert.equal((JSON.parse(rec!) as Line).outcome, 'ok');
    const key = await request(svc.app).get('/v1/keys/payments-ec').set('Authorization', `Bearer ${PAYMENTS_TOKEN}`).expect(200);
    assert.ok(cryptoVerify('sha256', message, createPublicKey(key.body.versions[0].publicKeyPem), Buffer.from(res.body.signature, 'base64')));
  } finally {
    await svc.close();
    closeSync(filler);
    closeSync(reader);
  }
});

describe('when the audit log cannot be written', () => {
  const sign = (app: Parameters<typeof request>[0], id: string): request.Test =>
    request(app)
      .post('/v1/keys/payments-ec/sign')
      .set('X-Request-Id', id)
      .set('Authorization', `Bearer ${PAYMENTS_TOKEN}`)
      .send({ algorithm: 'ECDSA_SHA_256', message: 'YQ==' });

  function assertRefused(res: request.Response): void {
    assert.equal(res.status, 503, res.text);
    assert.equal(res.body.error.code, 'AUDIT_UNAVAILABLE');
    assert.match(res.body.error.message, /audit log cannot be written/);
    assert.equal(res.headers['retry-after'], '1');
    assert.ok(!('signature' in res.body) && !res.text.includes('results'), 'no signature leaves');
  }

  async function until(check: () => Promise<boolean>, ms: number, what: string): Promise<void> {
    const end = Date.now() + ms;
    while (!(await check())) {
      if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  test('disk full (/dev/full: ENOSPC): 503 AUDIT_UNAVAILABLE, no signature, /readyz 503 with the reason', async () => {
    // The failure is real: a write to /dev/full fails with ENOSPC, whoever writes.
    const fd = openSync('/dev/full', 'a');
    assert.throws(() => writeSync(fd, 'x\n'), { code: 'ENOSPC' });
    closeSync(fd);
    const svc = await startTestService(token, { CLIENTS_FILE: clientsFile, AUDIT_LOG: '/dev/full' });
    try {
      assertRefused(await sign(svc.app, 'full-1'));
      // Now known unavailable: refused before the HSM is asked.
      assertRefused(await sign(svc.app, 'full-2'));
      const batch = await request(svc.app)
        .post('/v1/sign/batch')
        .set('Authorization', `Bearer ${PAYMENTS_TOKEN}`)
        .send({ requests: [{ keyName: 'payments-ec', algorithm: 'ECDSA_SHA_256', message: 'YQ==' }] });
      assertRefused(batch);
      const verify = await request(svc.app)
        .post('/v1/keys/payments-ec/verify')
        .set('Authorization', `Bearer ${PAYMENTS_TOKEN}`)
        .send({ algorithm: 'ECDSA_SHA_256', message: 'YQ==', signature: 'AAAA' });
      assertRefused(verify);
      const ready = await request(svc.app).get('/readyz').expect(503);
      assert.equal(ready.body.status, 'unavailable');
      assert.match(ready.body.reason, /audit log cannot be written \(ENOSPC\)/);
      // Reads are not audited and keep working.
      await request(svc.app).get('/v1/keys/payments-ec').set('Authorization', `Bearer ${PAYMENTS_TOKEN}`).expect(200);
    } finally {
      await svc.close();
    }
  });

  test('directory removed (ENOENT): 503 until it is back, then a record of the gap and signing again', async () => {
    const logDir = join(token.dir, 'audit-dir');
    mkdirSync(logDir);
    const file = join(logDir, 'audit.log');
    const svc = await startTestService(token, { CLIENTS_FILE: clientsFile, AUDIT_LOG: file });
    try {
      assert.equal((await sign(svc.app, 'dir-1')).status, 200);
      rmSync(logDir, { recursive: true });
      // The write goes to a file that no longer has a name, which is found after the write; the path cannot be created again.
      assertRefused(await sign(svc.app, 'dir-2'));
      assertRefused(await sign(svc.app, 'dir-3'));
      const ready = await request(svc.app).get('/readyz').expect(503);
      assert.match(ready.body.reason, /audit log cannot be written \(file removed, cannot create it again: ENOENT\)/);
      mkdirSync(logDir);
      await until(async () => (await request(svc.app).get('/readyz')).status === 200, 5000, '/readyz to recover');
      assert.equal((await sign(svc.app, 'dir-4')).status, 200);
      const recs = lines(file);
      assert.equal(recs[0]?.operation, 'audit.resumed', 'the new file starts with the record of the gap');
      assert.equal(recs[0]?.refused, 2, 'the refused operations are counted');
      assert.match(String(recs[0]?.reason), /ENOENT/);
      assert.deepEqual(
        recs.slice(1).map((r) => [r.requestId, r.outcome]),
        [['dir-4', 'ok']],
      );
    } finally {
      await svc.close();
    }
  });

  test('file removed, directory still there: the file is created again and the record written to it', async () => {
    const file = join(token.dir, 'removed.log');
    const svc = await startTestService(token, { CLIENTS_FILE: clientsFile, AUDIT_LOG: file });
    try {
      assert.equal((await sign(svc.app, 'rm-1')).status, 200);
      unlinkSync(file);
      assert.equal((await sign(svc.app, 'rm-2')).status, 200);
      assert.deepEqual(
        lines(file).map((r) => r.requestId),
        ['rm-2'],
      );
    } finally {
      await svc.close();
    }
  });

  test('a FIFO: no reader at start stops the service; its reader gone (EPIPE) is a 503; a reader back, signing again', async () => {
    const fifo = join(token.dir, 'audit.fifo');
    execFileSync('mkfifo', [fifo]);
    await assert.rejects(
      startTestService(token, { CLIENTS_FILE: clientsFile, AUDIT_LOG: fifo }),
      /AUDIT_LOG: cannot open .*audit\.fifo for appending \(ENXIO\)/,
    );
    const out = join(token.dir, 'fifo-out.log');
    const reader = (): ChildProcess => spawn('sh', ['-c', `exec cat "${fifo}" >> "${out}"`], { stdio: 'ignore' });
    let cat = reader();
    await new Promise((r) => setTimeout(r, 200));
    const svc = await startTestService(token, { CLIENTS_FILE: clientsFile, AUDIT_LOG: fifo });
    try {
      assert.equal((await sign(svc.app, 'fifo-1')).status, 200);
      await until(async () => lines(out).some((r) => r.requestId === 'fifo-1'), 2000, 'the reader to get the record');
      const gone = new Promise((r) => cat.once('exit', r));
      cat.kill('SIGKILL');
      await gone;
      assertRefused(await sign(svc.app, 'fifo-2'));
      assert.match((await request(svc.app).get('/readyz').expect(503)).body.reason, /EPIPE/);
      cat = reader();
      await until(async () => (await request(svc.app).get('/readyz')).status === 200, 5000, '/readyz to recover');
      assert.equal((await sign(svc.app, 'fifo-3')).status, 200);
      await until(async () => lines(out).some((r) => r.requestId === 'fifo-3'), 2000, 'the new reader to get the record');
      const resumed = lines(out).find((r) => r.operation === 'audit.resumed');
      assert.equal(resumed?.reason, 'EPIPE');
    } finally {
      await svc.close();
      cat.kill('SIGKILL');
    }
  });
});

describe('the admin CLI', () => {
  test('create, rotate and retire leave records with who ran them, a refused create its code; never the PIN', async () => {
    const file = join(token.dir, 'admin-audit.log');
    const run = (...args: string[]) => runAdmin(token, args, { AUDIT_LOG: file });
    assert.equal((await run('keys', 'create', '--name', 'audited-key', '--spec', 'ECC_NIST_P256')).code, 0);
    assert.equal((await run('keys', 'create', '--name', 'audited-key', '--spec', 'RSA_2048')).code, 1);
    assert.equal((await run('keys', 'rotate', '--name', 'audited-key')).code, 0);
    assert.equal((await run('keys', 'retire', '--name', 'audited-key', '--version', '1')).code, 2, 'not confirmed: nothing done, nothing recorded');
    assert.equal((await run('keys', 'retire', '--name', 'audited-key', '--version', '1', '--confirm')).code, 0);
    assert.equal((await run('keys', 'list')).code, 0);
    const recs = lines(file);
    assert.deepEqual(
      recs.map((r) => [r.operation, r.keyName, r.keyVersion, r.keySpec, r.outcome]),
      [
        ['create', 'audited-key', 1, 'ECC_NIST_P256', 'ok'],
        ['create', 'audited-key', undefined, 'RSA_2048', 'CONFLICT'],
        ['rotate', 'audited-key', 2, 'ECC_NIST_P256', 'ok'],
        ['retire', 'audited-key', 1, 'ECC_NIST_P256', 'ok'],
      ],
    );
    for (const r of recs) {
      assert.match(String(r.time), TIME);
      assert.equal(r.client, 'hsm-signer-admin');
      assert.equal(r.osUser, userInfo().username);
      assert.equal(r.host, hostname());
      assert.equal(typeof r.pid, 'number');
      assert.ok(!('requestId' in r) && !('source' in r));
    }
    assert.ok(!readFileSync(file, 'utf8').includes(token.pin));
  });

  test('a log it cannot open stops it before the HSM is touched; one it cannot write to is reported, naming what was done', async () => {
    const missing = await runAdmin(token, ['keys', 'create', '--name', 'never-made', '--spec', 'ECC_NIST_P256'], {
      AUDIT_LOG: join(token.dir, 'no-such-dir', 'audit.log'),
    });
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /AUDIT_LOG: cannot open .*no-such-dir\/audit\.log for appending \(ENOENT\)/);
    assert.ok(!(await runAdmin(token, ['keys', 'list'])).stdout.includes('never-made'), 'no key was created');
    const full = await runAdmin(token, ['keys', 'create', '--name', 'made-unrecorded', '--spec', 'ECC_NIST_P256'], { AUDIT_LOG: '/dev/full' });
    assert.equal(full.code, 1);
    assert.match(full.stderr, /create of 'made-unrecorded' version 1 is done, but AUDIT_LOG: the record could not be written \(ENOSPC\)/);
    assert.ok(!full.stderr.includes(token.pin));
    // A command that fails and cannot record it: its own error first, the audit failure beside it.
    const both = await runAdmin(token, ['keys', 'create', '--name', 'made-unrecorded', '--spec', 'ECC_NIST_P256'], { AUDIT_LOG: '/dev/full' });
    assert.equal(both.code, 1);
    assert.match(both.stderr, /AUDIT_LOG: the record could not be written \(ENOSPC\)/);
    assert.match(both.stderr, /key 'made-unrecorded' exists/);
  });
});
