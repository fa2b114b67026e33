import { createHash, X509Certificate } from 'node:crypto';
import { pino } from 'pino';
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import request from 'supertest';
import type { KeySpec } from '../../src/crypto/algorithms.js';
import { authenticate, ClientRegistry } from '../../src/http/auth.js';
import { createApp } from '../../src/http/createApp.js';
import { pkiRouter } from '../../src/http/routes/pkiRouter.js';
import { admin, dumpTokenObjects } from '../support/adminCli.js';
import { createTestToken, startTestService, type TestToken } from '../support/testToken.js';
import { INTERMEDIATE_EXT, TempDir, makeRoot, openssl, opensslCsr, opensslOk, signAsRoot } from '../unit/pki/openssl.js';

/**
 * The offline-root flow end to end: keys made by the admin CLI (its own process), CSRs and
 * certificates from the service over HTTP, the openssl CLI as the offline root and as the
 * independent verifier.
 */
let token: TestToken;
let svc: Awaited<ReturnType<typeof startTestService>>;
let dir: TempDir;
let rootPem: string;

const ROOT_DAYS = 3650;
const INT_DAYS = 365;

before(async () => {
  token = await createTestToken();
  // A small refresh interval so a rotated version is seen quickly (the production bound is KEY_REFRESH_MS, 10 s).
  svc = await startTestService(token, { KEY_REFRESH_MS: '200' });
  dir = await TempDir.create();
  rootPem = await makeRoot(dir, { name: 'root', alg: 'ec-p384', subject: '/C=US/O=Example/CN=Example Offline Root', days: ROOT_DAYS });
  await admin(token, 'keys', 'create', '--name', 'nocert', '--spec', 'ECC_NIST_P256');
});
after(async () => {
  await svc?.close();
  token?.cleanup();
  await dir?.remove();
});

const api = () => request(svc.app);
const der = (pem: string): Buffer => new X509Certificate(pem).raw;
const pemBlocks = (pem: string): string[] => pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g) ?? [];

/** A request that may meet a key or version the service has not seen yet: retried on 404 for up to 3 s. */
async function eventually(send: () => request.Test, status: number): Promise<request.Response> {
  let res = await send();
  for (let i = 0; i < 30 && res.status === 404; i++) {
    await new Promise((r) => setTimeout(r, 100));
    res = await send();
  }
  assert.equal(res.status, status, JSON.stringify(res.body));
  return res;
}

/** CSR from the service, signed by the openssl root, attached; returns the intermediate's PEM (also in `${out}.pem`). */
async function certifyIntermediate(name: string, version: number, out: string): Promise<string> {
  const csr = await eventually(
    () =>
      api()
        .post(`/v1/keys/${name}/csr`)
        .send({ subject: `CN=Issuing CA ${name},O=Example,C=US`, keyVersion: version, ca: { pathLength: 0 } }),
    200,
  );
  assert.equal(csr.body.keyVersion, version);
  await dir.write(`${out}.csr`, csr.body.csrPem);
  const v = await openssl(dir.path, 'req', '-verify', '-in', `${out}.csr`, '-noout');
  assert.equal(v.code, 0, v.stderr);
  assert.match(v.stdout + v.stderr, /verify OK/);
  const intPem = await signAsRoot(dir, csr.body.csrPem, { root: 'root', out, ext: INTERMEDIATE_EXT, days: INT_DAYS });
  await api().put(`/v1/keys/${name}/certificate`).send({ certificatePem: intPem, chainPem: rootPem, keyVersion: version }).expect(204);
  return intPem;
}

async function opensslVerify(leafFile: string, intFile: string): Promise<{ ok: boolean; output: string }> {
  const r = await openssl(dir.path, 'verify', '-x509_strict', '-purpose', 'sslserver', '-CAfile', 'root.pem', '-untrusted', intFile, leafFile);
  return { ok: r.code === 0 && r.stdout.trim() === `${leafFile}: OK`, output: r.stdout + r.stderr };
}

async function issueTlsServer(name: string, leaf: string, sans?: object): Promise<request.Response> {
  const csrPem = await opensslCsr(dir, {
    name: leaf,
    subject: `/O=Example/CN=${leaf}.example.com`,
    alg: 'ec-p256',
    // Without explicit SANs in the request, the CSR's are used.
    addext: sans ? [] : [`subjectAltName=DNS:${leaf}.example.com,IP:192.0.2.7`],
  });
  const res = await api()
    .post(`/v1/keys/${name}/certificates`)
    .send({ csrPem, profile: 'tls-server', validityDays: 90, ...(sans ? { subjectAltNames: sans } : {}) })
    .expect(201);
  await dir.write(`${leaf}.pem`, res.body.certificatePem);
  return res;
}

const flows: { name: string; spec: KeySpec }[] = [
  { name: 'int-rsa', spec: 'RSA_3072' },
  { name: 'int-ec', spec: 'ECC_NIST_P384' },
];

describe('offline-root flow: admin CLI key, CSR from the service, openssl root, attach, issue, openssl verify', () => {
  for (const { name, spec } of flows) {
    test(`${spec} intermediate`, async () => {
      assert.match(await admin(token, 'keys', 'create', '--name', name, '--spec', spec), new RegExp(`created ${name} version 1 \\(${spec}\\)`));
      const intPem = await certifyIntermediate(name, 1, `${name}-v1`);

      // The certificate and chain are on the token, paired with the key by CKA_ID.
      const key = await api().get(`/v1/keys/${name}`).expect(200);
      assert.equal(key.body.versions[0].hasCertificate, true);
      const list = await api().get('/v1/keys').expect(200);
      const listed = list.body.keys.find((k: { name: string }) => k.name === name);
      assert.equal(listed.versions[0].hasCertificate, true);
      const nocert = list.body.keys.find((k: { name: string }) => k.name === 'nocert');
      assert.equal(nocert.versions[0].hasCertificate, false);
      const got = await api().get(`/v1/keys/${name}/certificate`).expect(200);
      assert.equal(got.body.keyVersion, 1);
      assert.deepEqual(der(got.body.certificatePem), der(intPem));
      assert.deepEqual(der(got.body.chainPem), der(rootPem));
      const objects = await dumpTokenObjects(token);
      const privateKey = objects.find((o) => o.class === 'privateKey' && o.label === `${name}/v1`)!;
      const certs = objects.filter((o) => o.class === 'certificate' && o.id === privateKey.id);
      assert.deepEqual(certs.map((c) => c.label).sort(), [`${name}/v1`, `${name}/v1/chain/1`]);
      for (const c of certs) {
        assert.equal(c.flags.TOKEN, true);
        assert.equal(c.flags.PRIVATE, false);
        assert.ok((c.valueLength ?? 0) > 0);
      }

      // A leaf for a CSR made by openssl, with SANs from the request.
      const sans = { dns: [`www.${name}.example.com`, `${name}.example.com`], ip: ['192.0.2.10'] };
      const issued = await issueTlsServer(name, `${name}-leaf`, sans);
      assert.equal(issued.body.issuerKeyVersion, 1);
      const chain = pemBlocks(issued.body.chainPem);
      assert.equal(chain.length, 2);
      assert.deepEqual(der(chain[0]!), der(intPem));
      assert.deepEqual(der(chain[1]!), der(rootPem));
      const verified = await opensslVerify(`${name}-leaf.pem`, `${name}-v1.pem`);
      assert.ok(verified.ok, verified.output);

      const text = await opensslOk(dir.path, 'x509', '-in', `${name}-leaf.pem`, '-noout', '-text');
      assert.match(text, /X509v3 Basic Constraints: critical\s+CA:FALSE/);
      assert.match(text, /X509v3 Key Usage: critical\s+Digital Signature\s/);
      assert.match(text, /X509v3 Extended Key Usage:\s+TLS Web Server Authentication\s/);
      assert.match(
        text,
        new RegExp(`X509v3 Subject Alternative Name:\\s+DNS:www\\.${name}\\.example\\.com, DNS:${name}\\.example\\.com, IP Address:192\\.0\\.2\\.10`),
      );
      assert.match(text, /X509v3 Subject Key Identifier/);
      assert.match(text, new RegExp(`Issuer: C = US, O = Example, CN = Issuing CA ${name}`));
      assert.match(text, spec.startsWith('RSA') ? /Signature Algorithm: sha256WithRSAEncryption/ : /Signature Algorithm: ecdsa-with-SHA384/);
      const leaf = new X509Certificate(issued.body.certificatePem);
      const intermediate = new X509Certificate(intPem);
      // The authority key identifier is the intermediate's subject key identifier.
      const ski = /X509v3 Subject Key Identifier:\s+([0-9A-F:]+)/.exec(await opensslOk(dir.path, 'x509', '-in', `${name}-v1.pem`, '-noout', '-text'))![1]!;
      assert.match(text, new RegExp(`X509v3 Authority Key Identifier:\\s+(keyid:)?${ski}`));
      // 128 random bits with the top bit cleared (a positive INTEGER): 15 or 16 bytes.
      assert.equal(leaf.serialNumber, issued.body.serialNumber);
      assert.ok(leaf.serialNumber.length >= 30 && leaf.serialNumber.length <= 32, leaf.serialNumber);
      assert.equal(new Date(leaf.validTo).getTime(), new Date(issued.body.notAfter).getTime());
      assert.ok(new Date(leaf.validTo).getTime() <= new Date(intermediate.validTo).getTime());

      // SANs from the CSR when the request has none.
      const fromCsr = await issueTlsServer(name, `${name}-leaf-csr-sans`);
      const csrSans = new X509Certificate(fromCsr.body.certificatePem).subjectAltName;
      assert.equal(csrSans, `DNS:${name}-leaf-csr-sans.example.com, IP Address:192.0.2.7`);
      assert.ok((await opensslVerify(`${name}-leaf-csr-sans.pem`, `${name}-v1.pem`)).ok);
    });
  }
});

test('rotation: the new version is certified and issues; old leaves still verify with the old intermediate', async () => {
  const name = 'int-ec';
  assert.match(await admin(token, 'keys', 'rotate', '--name', name), /version 2 \(ECC_NIST_P384\) is now current/);
  // Until version 2 has a certificate, version 1 (the newest with one) keeps issuing.
  const beforeAttach = await issueTlsServer(name, 'before-attach', { dns: ['before-attach.example.com'] });
  assert.equal(beforeAttach.body.issuerKeyVersion, 1);

  const int2 = await certifyIntermediate(name, 2, `${name}-v2`);
  const issued = await issueTlsServer(name, 'after-rotation', { dns: ['after-rotation.example.com'] });
  assert.equal(issued.body.issuerKeyVersion, 2);
  assert.deepEqual(der(pemBlocks(issued.body.chainPem)[0]!), der(int2));

  const newWithNew = await opensslVerify('after-rotation.pem', `${name}-v2.pem`);
  assert.ok(newWithNew.ok, newWithNew.output);
  const newWithOld = await opensslVerify('after-rotation.pem', `${name}-v1.pem`);
  assert.ok(!newWithOld.ok, 'the new leaf must not verify with the old intermediate');
  for (const old of [`${name}-leaf.pem`, 'before-attach.pem']) {
    const oldWithOld = await opensslVerify(old, `${name}-v1.pem`);
    assert.ok(oldWithOld.ok, oldWithOld.output);
  }

  // Both versions keep their certificates; the default is the current version.
  const current = await api().get(`/v1/keys/${name}/certificate`).expect(200);
  assert.equal(current.body.keyVersion, 2);
  assert.deepEqual(der(current.body.certificatePem), der(int2));
  const v1 = await api().get(`/v1/keys/${name}/certificate?keyVersion=1`).expect(200);
  assert.deepEqual(der(v1.body.certificatePem), der(await dir.read(`${name}-v1.pem`)));
  const key = await api().get(`/v1/keys/${name}`).expect(200);
  assert.deepEqual(
    key.body.versions.map((v: { hasCertificate: boolean }) => v.hasCertificate),
    [true, true],
  );
  const listed = JSON.parse(await admin(token, 'keys', 'list', '--json')).keys.filter((k: { name: string }) => k.name === name);
  assert.deepEqual(
    listed.map((k: { version: number; hasCertificate: boolean }) => [k.version, k.hasCertificate]),
    [
      [1, true],
      [2, true],
    ],
  );

  // Attaching again replaces the objects rather than adding to them.
  await api().put(`/v1/keys/${name}/certificate`).send({ certificatePem: int2, keyVersion: 2 }).expect(204);
  const objects = await dumpTokenObjects(token);
  const id = objects.find((o) => o.class === 'privateKey' && o.label === `${name}/v2`)!.id;
  assert.deepEqual(
    objects.filter((o) => o.class === 'certificate' && o.id === id).map((o) => o.label),
    [`${name}/v2`],
  );
  const again = await api().get(`/v1/keys/${name}/certificate?keyVersion=2`).expect(200);
  assert.equal(again.body.chainPem, '');

  // Issuance follows what is attached now, though it checked version 2's earlier certificates already:
  // the same certificate without its chain, then a new certificate for the same version.
  const noChain = await issueTlsServer(name, 'after-reattach', { dns: ['after-reattach.example.com'] });
  assert.deepEqual(pemBlocks(noChain.body.chainPem).map(der), [der(int2)]);
  const int2b = await certifyIntermediate(name, 2, `${name}-v2b`);
  assert.notDeepEqual(der(int2b), der(int2));
  const underNew = await issueTlsServer(name, 'after-recertify', { dns: ['after-recertify.example.com'] });
  assert.deepEqual(pemBlocks(underNew.body.chainPem).map(der), [der(int2b), der(rootPem)]);
  const verifiedUnderNew = await opensslVerify('after-recertify.pem', `${name}-v2b.pem`);
  assert.ok(verifiedUnderNew.ok, verifiedUnderNew.output);
});

describe('bad input: a clear 4xx naming the field', () => {
  let goodCsr: string;
  let brokenCsr: string;
  let nonCaCert: string;
  let otherKeyCert: string;
  let unrelatedCert: string;

  before(async () => {
    goodCsr = await opensslCsr(dir, { name: 'bad-base', subject: '/CN=bad.example.com', alg: 'ec-p256', addext: ['subjectAltName=DNS:bad.example.com'] });
    // Flip a bit in the last byte: inside the signature, so the DER still parses but the self-signature breaks.
    const csrDer = Buffer.from(goodCsr.replace(/-----[A-Z ]+-----|\s/g, ''), 'base64');
    csrDer[csrDer.length - 1]! ^= 0x01;
    brokenCsr = `-----BEGIN CERTIFICATE REQUEST-----\n${csrDer.toString('base64').replace(/(.{64})/g, '$1\n')}\n-----END CERTIFICATE REQUEST-----\n`;
    // A certificate for nocert's key that is not a CA certificate.
    const csr = await api().post('/v1/keys/nocert/csr').send({ subject: 'CN=Not A CA' }).expect(200);
    nonCaCert = await signAsRoot(dir, csr.body.csrPem, {
      root: 'root',
      out: 'non-ca',
      ext: 'basicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n',
    });
    otherKeyCert = await dir.read('int-rsa-v1.pem');
    unrelatedCert = await makeRoot(dir, { name: 'unrelated', alg: 'ec-p256', subject: '/CN=Unrelated Root' });
  });

  interface Case {
    readonly name: string;
    readonly method: 'post' | 'put' | 'get';
    readonly path: string;
    readonly body?: () => object;
    readonly status: number;
    readonly code: string;
    /** The message starts with this field name. */
    readonly field: string;
    readonly says?: RegExp;
  }
  const issue = (extra: object) => () => ({ csrPem: goodCsr, profile: 'tls-server', validityDays: 30, ...extra });
  const cases: Case[] = [
    {
      name: 'empty CSR',
      method: 'post',
      path: '/v1/keys/int-ec/certificates',
      body: issue({ csrPem: '' }),
      status: 400,
      code: 'INVALID_ARGUMENT',
      field: 'csrPem',
    },
    {
      name: 'CSR with a broken self-signature',
      method: 'post',
      path: '/v1/keys/int-ec/certificates',
      body: () => ({ ...issue({})(), csrPem: brokenCsr }),
      status: 400,
      code: 'INVALID_ARGUMENT',
      field: 'csrPem',
      says: /signature does not verify/,
    },
    {
      name: 'non-CA certificate to attach',
      method: 'put',
      path: '/v1/keys/nocert/certificate',
      body: () => ({ certificatePem: nonCaCert }),
      status: 409,
      code: 'CONFLICT',
      field: 'certificatePem',
      says: /not a CA certificate/,
    },
    {
      name: 'certificate for another key',
      method: 'put',
      path: '/v1/keys/int-ec/certificate',
      body: () => ({ certificatePem: otherKeyCert, keyVersion: 1 }),
      status: 409,
      code: 'CONFLICT',
      field: 'certificatePem',
      says: /public key is not this key version's/,
    },
    {
      name: 'chain that does not link',
      method: 'put',
      path: '/v1/keys/int-rsa/certificate',
      body: () => ({ certificatePem: otherKeyCert, chainPem: unrelatedCert }),
      status: 409,
      code: 'CONFLICT',
      field: 'chainPem',
      says: /does not link/,
    },
    {
      name: 'certificate that is not PEM',
      method: 'put',
      path: '/v1/keys/int-rsa/certificate',
      body: () => ({ certificatePem: 'hello' }),
      status: 400,
      code: 'INVALID_ARGUMENT',
      field: 'certificatePem',
    },
    {
      name: 'validity beyond the issuer',
      method: 'post',
      path: '/v1/keys/int-ec/certificates',
      body: issue({ validityDays: INT_DAYS + 30 }),
      status: 400,
      code: 'INVALID_ARGUMENT',
      field: 'validityDays',
      says: /only valid until/,
    },
    {
      name: 'validity out of range',
      method: 'post',
      path: '/v1/keys/int-ec/certificates',
      body: issue({ validityDays: 0 }),
      status: 400,
      code: 'INVALID_ARGUMENT',
      field: 'validityDays',
    },
    {
      name: 'validity not an integer',
      method: 'post',
      path: '/v1/keys/int-ec/certificates',
      body: issue({ validityDays: '30' }),
      status: 400,
      code: 'INVALID_ARGUMENT',
      field: 'validityDays',
    },
    {
      name: 'malformed DNS name',
      method: 'post',
      path: '/v1/keys/int-ec/certificates',
      body: issue({ subjectAltNames: { dns: ['ok.example.com', 'bad_name!.example.com'] } }),
      status: 400,
      code: 'INVALID_ARGUMENT',
      field: 'subjectAltNames.dns[1]',
    },
    {
      name: 'malformed IP',
      method: 'post',
      path: '/v1/keys/int-ec/certificates',
      body: issue({ subjectAltNames: { dns: ['a.example.com'], ip: ['300.1.2.3'] } }),
      status: 400,
      code: 'INVALID_ARGUMENT',
      field: 'subjectAltNames.ip[0]',
    },
    {
      name: 'malformed email',
      method: 'post',
      path: '/v1/keys/int-ec/certificates',
      body: issue({ subjectAltNames: { dns: ['a.example.com'], email: ['no-at-sign'] } }),
      status: 400,
      code: 'INVALID_ARGUMENT',
      field: 'subjectAltNames.email[0]',
    },
    {
      name: 'malformed URI',
      method: 'post',
      path: '/v1/keys/int-ec/certificates',
      body: issue({ subjectAltNames: { dns: ['a.example.com'], uri: ['not a uri'] } }),
      status: 400,
      code: 'INVALID_ARGUMENT',
      field: 'subjectAltNames.uri[0]',
    },
    {
      name: 'unknown SAN kind',
      method: 'post',
      path: '/v1/keys/int-ec/certificates',
      body: issue({ subjectAltNames: { upn: ['x'] } }),
      status: 400,
      code: 'INVALID_ARGUMENT',
      field: 'subjectAltNames.upn',
    },
    {
      name: 'tls-server without a DNS or IP name',
      method: 'post',
      path: '/v1/keys/int-ec/certificates',
      body: issue({ subjectAltNames: { email: ['a@example.com'] } }),
      status: 400,
      code: 'INVALID_ARGUMENT',
      field: 'subjectAltNames',
    },
    {
      name: 'unknown profile',
      method: 'post',
      path: '/v1/keys/int-ec/certificates',
      body: issue({ profile: 'web' }),
      status: 400,
      code: 'INVALID_ARGUMENT',
      field: 'profile',
    },
    {
      name: 'unknown field',
      method: 'post',
      path: '/v1/keys/int-ec/certificates',
      body: issue({ validity: 30 }),
      status: 400,
      code: 'INVALID_ARGUMENT',
      field: 'body',
      says: /'validity'/,
    },
    {
      name: 'missing CSR',
      method: 'post',
      path: '/v1/keys/int-ec/certificates',
      body: () => ({ profile: 'tls-server', validityDays: 30 }),
      status: 400,
      code: 'INVALID_ARGUMENT',
      field: 'csrPem',
    },
    {
      name: 'issue from a key without a certificate',
      method: 'post',
      path: '/v1/keys/nocert/certificates',
      body: issue({}),
      status: 409,
      code: 'CONFLICT',
      field: "key 'nocert'",
    },
    {
      name: 'issue from an unknown key',
      method: 'post',
      path: '/v1/keys/nope/certificates',
      body: issue({}),
      status: 404,
      code: 'NOT_FOUND',
      field: "no key named 'nope'",
    },
    {
      name: 'CSR with a malformed subject',
      method: 'post',
      path: '/v1/keys/int-ec/csr',
      body: () => ({ subject: 'CN' }),
      status: 400,
      code: 'INVALID_ARGUMENT',
      field: 'subject',
    },
    {
      name: 'CSR without a subject',
      method: 'post',
      path: '/v1/keys/int-ec/csr',
      body: () => ({ ca: {} }),
      status: 400,
      code: 'INVALID_ARGUMENT',
      field: 'subject',
    },
    {
      name: 'CSR with a negative path length',
      method: 'post',
      path: '/v1/keys/int-ec/csr',
      body: () => ({ subject: 'CN=x', ca: { pathLength: -1 } }),
      status: 400,
      code: 'INVALID_ARGUMENT',
      field: 'ca.pathLength',
    },
    {
      name: 'CSR with a malformed SAN',
      method: 'post',
      path: '/v1/keys/int-ec/csr',
      body: () => ({ subject: 'CN=x', subjectAltNames: { dns: ['-bad-.example'] } }),
      status: 400,
      code: 'INVALID_ARGUMENT',
      field: 'subjectAltNames.dns[0]',
    },
    {
      name: 'CSR for a version that does not exist',
      method: 'post',
      path: '/v1/keys/int-ec/csr',
      body: () => ({ subject: 'CN=x', keyVersion: 9 }),
      status: 404,
      code: 'NOT_FOUND',
      field: "key 'int-ec' has no version 9",
    },
    {
      name: 'certificate of a version without one',
      method: 'get',
      path: '/v1/keys/nocert/certificate',
      status: 404,
      code: 'NOT_FOUND',
      field: "key 'nocert' version 1 has no certificate",
    },
    {
      name: 'malformed keyVersion query',
      method: 'get',
      path: '/v1/keys/int-ec/certificate?keyVersion=abc',
      status: 400,
      code: 'INVALID_ARGUMENT',
      field: 'keyVersion',
    },
    { name: 'malformed key name', method: 'get', path: '/v1/keys/bad%20name/certificate', status: 400, code: 'INVALID_ARGUMENT', field: 'name' },
  ];
  for (const c of cases) {
    test(c.name, async () => {
      const req = api()[c.method](c.path);
      const res = c.body ? await req.send(c.body()) : await req;
      assert.equal(res.status, c.status, JSON.stringify(res.body));
      assert.equal(res.body.error.code, c.code);
      assert.ok(res.body.error.message.startsWith(c.field), `"${res.body.error.message}" should start with ${c.field}`);
      if (c.says) assert.match(res.body.error.message, c.says);
    });
  }

  test('a body that is not JSON is a 415', async () => {
    const res = await api().put('/v1/keys/int-ec/certificate').set('content-type', 'application/x-pem-file').send('-----BEGIN CERTIFICATE-----');
    assert.equal(res.status, 415);
  });

  test('the rejected attachments left the stored certificates alone', async () => {
    const got = await api().get('/v1/keys/int-rsa/certificate').expect(200);
    assert.deepEqual(der(got.body.certificatePem), der(otherKeyCert));
    await api().get('/v1/keys/nocert/certificate').expect(404);
  });
});

test('with auth on, each PKI route needs its own operation: csr, certificate (attach), read, issue', async () => {
  const clients = [
    { name: 'pki-job', token: 'job-token', allow: [{ keys: 'int-*', operations: ['csr', 'read'] }] },
    { name: 'issuer', token: 'issuer-token', allow: [{ keys: 'int-ec', operations: ['issue'] }] },
    { name: 'attacher', token: 'attach-token', allow: [{ keys: 'int-rsa', operations: ['certificate'] }] },
  ];
  const file = await dir.write(
    'clients.json',
    JSON.stringify({ clients: clients.map((c) => ({ name: c.name, tokenSha256: createHash('sha256').update(c.token).digest('hex'), allow: c.allow })) }),
  );
  // The same service objects behind an app with authentication (a second service would share this process's PKCS#11 state).
  const app = createApp({
    service: svc.service,
    logger: pino({ level: 'silent' }),
    bodyLimitBytes: svc.config.bodyLimitBytes,
    requestDeadlineMs: svc.config.requestDeadlineMs,
    v1Guard: authenticate(new ClientRegistry(file)),
    extraRouters: [pkiRouter(svc.pki)],
  });
  const as = (token: string) => ({
    post: (path: string, body: object) => request(app).post(path).set('authorization', `Bearer ${token}`).send(body),
    put: (path: string, body: object) => request(app).put(path).set('authorization', `Bearer ${token}`).send(body),
    get: (path: string) => request(app).get(path).set('authorization', `Bearer ${token}`),
  });
  const csrPem = await opensslCsr(dir, { name: 'auth-leaf', subject: '/CN=auth.example.com', addext: ['subjectAltName=DNS:auth.example.com'] });
  const issueBody = { csrPem, profile: 'tls-server', validityDays: 30 };
  const intRsa = await dir.read('int-rsa-v1.pem');

  await request(app).post('/v1/keys/int-ec/csr').send({ subject: 'CN=x' }).expect(401);
  const job = as('job-token');
  assert.equal((await job.post('/v1/keys/int-ec/csr', { subject: 'CN=x' })).status, 200);
  assert.equal((await job.get('/v1/keys/int-ec/certificate')).status, 200);
  const denied = await job.post('/v1/keys/int-ec/certificates', issueBody);
  assert.equal(denied.status, 403);
  assert.match(denied.body.error.message, /may not issue with key 'int-ec'/);
  assert.equal((await job.put('/v1/keys/int-rsa/certificate', { certificatePem: intRsa })).status, 403);
  assert.equal((await job.post('/v1/keys/nocert/csr', { subject: 'CN=x' })).status, 403);

  const issuer = as('issuer-token');
  assert.equal((await issuer.post('/v1/keys/int-ec/certificates', issueBody)).status, 201);
  assert.equal((await issuer.post('/v1/keys/int-rsa/certificates', issueBody)).status, 403);
  assert.equal((await issuer.get('/v1/keys/int-ec/certificate')).status, 403);
  assert.equal((await issuer.post('/v1/keys/int-ec/csr', { subject: 'CN=x' })).status, 403);

  const attacher = as('attach-token');
  assert.equal((await attacher.put('/v1/keys/int-rsa/certificate', { certificatePem: intRsa, chainPem: rootPem })).status, 204);
  assert.equal((await attacher.put('/v1/keys/int-ec/certificate', { certificatePem: intRsa })).status, 403);
});
