import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { issueCertificate, type IssueCertificateRequest } from '../../../src/pki/issueCertificate.js';
import { toPem } from '../../../src/pki/pem.js';
import { rejectsWith } from './assertions.js';
import { makeCa, type CaFixture } from './caFixture.js';
import { TempDir, makeRoot, opensslCsr, signAsRoot } from './openssl.js';
import { parseCertificatePem } from '../../../src/pki/parsePem.js';
import { createCsr } from '../../../src/pki/createCsr.js';
import { checkIssuerCertificate } from '../../../src/pki/checkIssuerCertificate.js';

let dir: TempDir;
let fixture: CaFixture;
let leafCsr: string;
let issuer: { certificatePem: string; chainPem: string };

before(async () => {
  dir = await TempDir.create();
  [fixture, leafCsr] = await Promise.all([
    makeCa(dir, 'errors', 'ECC_NIST_P256', { rootAlg: 'ec-p256', days: 365 }),
    opensslCsr(dir, { name: 'leaf', subject: '/CN=www.example.com', alg: 'ec-p256' }),
  ]);
  issuer = { certificatePem: fixture.intPem, chainPem: fixture.rootPem };
});
after(async () => {
  await dir.remove();
  await fixture.signer.close();
});

const ok = (over: Partial<IssueCertificateRequest> = {}): IssueCertificateRequest => ({
  csrPem: leafCsr,
  profile: 'tls-server',
  validityDays: 90,
  subjectAltNames: { dns: ['www.example.com'] },
  ...over,
});

test('the baseline request is fine', async () => {
  const issued = await issueCertificate(fixture.signer, issuer, ok());
  assert.match(issued.certificatePem, /^-----BEGIN CERTIFICATE-----\n/);
});

test('INVALID_ARGUMENT csrPem: a CSR whose signature is broken (one flipped byte)', async () => {
  const der = Buffer.from(leafCsr.replace(/-----[^-]+-----|\s/g, ''), 'base64');
  der[der.length - 3]! ^= 0xff;
  await rejectsWith(
    () => issueCertificate(fixture.signer, issuer, ok({ csrPem: toPem('CERTIFICATE REQUEST', der) })),
    'INVALID_ARGUMENT',
    /^csrPem: the CSR's signature does not verify$/,
  );
});

test('INVALID_ARGUMENT csrPem: garbage, and keys the CA will not certify', async () => {
  await rejectsWith(() => issueCertificate(fixture.signer, issuer, ok({ csrPem: 'garbage' })), 'INVALID_ARGUMENT', /^csrPem: no PEM block found/);
  await rejectsWith(
    () => issueCertificate(fixture.signer, issuer, ok({ csrPem: fixture.intPem })),
    'INVALID_ARGUMENT',
    /^csrPem: expected a CERTIFICATE REQUEST PEM block/,
  );
  const weak = await opensslCsr(dir, { name: 'weak', subject: '/CN=weak.example.com', alg: 'rsa1024' });
  await rejectsWith(
    () => issueCertificate(fixture.signer, issuer, ok({ csrPem: weak })),
    'INVALID_ARGUMENT',
    /^csrPem: an RSA key of 1024 bits is not accepted/,
  );
  const k1 = await opensslCsr(dir, { name: 'k1', subject: '/CN=k1.example.com', alg: 'ec-secp256k1' });
  await rejectsWith(() => issueCertificate(fixture.signer, issuer, ok({ csrPem: k1 })), 'INVALID_ARGUMENT', /^csrPem: the EC curve secp256k1 is not accepted/);
});

test('CONFLICT: an issuer certificate for another key, a non-CA one, a chain that does not link', async () => {
  await rejectsWith(
    () => issueCertificate(fixture.signer, { certificatePem: fixture.rootPem }, ok()),
    'CONFLICT',
    /^certificatePem: the certificate's public key is not this key version's public key/,
  );
  const csr = await createCsr(fixture.signer, { subject: 'CN=Not A CA' });
  const nonCa = await signAsRoot(dir, csr, {
    root: 'errors-root',
    out: 'nonca',
    ext: 'basicConstraints = critical,CA:FALSE\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n',
  });
  await rejectsWith(
    () => issueCertificate(fixture.signer, { certificatePem: nonCa, chainPem: fixture.rootPem }, ok()),
    'CONFLICT',
    /^certificatePem: the certificate is not a CA certificate/,
  );
  await rejectsWith(
    () => issueCertificate(fixture.signer, { certificatePem: fixture.intPem, chainPem: fixture.intPem }, ok()),
    'CONFLICT',
    /^chainPem: the chain does not link/,
  );
  await rejectsWith(() => issueCertificate(fixture.signer, { certificatePem: 'nope' }, ok()), 'INVALID_ARGUMENT', /^certificatePem: no PEM block found/);
});

test('CONFLICT profile: a sub-ca under an issuer with pathLenConstraint 0, or whose root allows no more CAs', async () => {
  await rejectsWith(
    () => issueCertificate(fixture.signer, issuer, ok({ profile: 'sub-ca', subjectAltNames: undefined })),
    'CONFLICT',
    /^profile: sub-ca cannot be issued: the issuer certificate has pathLenConstraint 0/,
  );
  // Root pathlen:1, intermediate without pathlen: the intermediate may exist, a CA below it may not.
  const rootP1 = await makeRoot(dir, { name: 'p1', alg: 'ec-p256', subject: '/CN=Pathlen One Root', pathlen: 1 });
  const unlimited = await signAsRoot(dir, await createCsr(fixture.signer, { subject: 'CN=No Pathlen', ca: {} }), {
    root: 'p1',
    out: 'nopathlen',
    ext: 'basicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n',
  });
  const facts = checkIssuerCertificate(fixture.signer.publicKey, { certificatePem: unlimited, chainPem: rootP1 });
  assert.equal(facts.pathLenConstraint, undefined);
  assert.equal(facts.caLevelsAllowedBelow, 0);
  await rejectsWith(
    () => issueCertificate(fixture.signer, { certificatePem: unlimited, chainPem: rootP1 }, ok({ profile: 'sub-ca', subjectAltNames: undefined })),
    'CONFLICT',
    /^profile: sub-ca cannot be issued: a pathLenConstraint in the issuer's chain allows no further CA/,
  );
  // Without the chain nothing limits it.
  assert.equal(checkIssuerCertificate(fixture.signer.publicKey, { certificatePem: unlimited }).caLevelsAllowedBelow, undefined);
});

test('INVALID_ARGUMENT validityDays: beyond the issuer, with the date it is valid until', async () => {
  // The intermediate is valid 365 days.
  const until = parseCertificatePem(fixture.intPem).notAfter.toISOString();
  await rejectsWith(
    () => issueCertificate(fixture.signer, issuer, ok({ validityDays: 400 })),
    'INVALID_ARGUMENT',
    new RegExp(
      `^validityDays: 400 days would end on .*, but the issuer certificate is only valid until ${until.replace(/[.]/g, '\\.')} \\(at most 36[45] days\\)$`,
    ),
  );
  // The chain counts too: an intermediate that outlives its root.
  await makeRoot(dir, { name: 'short', alg: 'ec-p256', subject: '/CN=Short Root', days: 10 });
  const longInt = await signAsRoot(dir, await createCsr(fixture.signer, { subject: 'CN=Long', ca: {} }), { root: 'short', out: 'long', days: 100 });
  const shortPem = await dir.read('short.pem');
  const shortUntil = parseCertificatePem(shortPem).notAfter.toISOString();
  await rejectsWith(
    () => issueCertificate(fixture.signer, { certificatePem: longInt, chainPem: shortPem }, ok({ validityDays: 30 })),
    'INVALID_ARGUMENT',
    new RegExp(
      `^validityDays: 30 days would end on .*, but the issuer certificate chain is only valid until ${shortUntil.replace(/[.]/g, '\\.')} \\(at most (9|10) days\\)$`,
    ),
  );
  for (const bad of [0, -1, 3651, 1.5, Number.NaN, '90', undefined]) {
    await rejectsWith(
      () => issueCertificate(fixture.signer, issuer, ok({ validityDays: bad as number })),
      'INVALID_ARGUMENT',
      /^validityDays: must be an integer from 1 to 3650$/,
    );
  }
});

test('INVALID_ARGUMENT subjectAltNames: malformed names, and a tls-server certificate without DNS or IP', async () => {
  const cases: Array<[unknown, RegExp]> = [
    [{ dns: ['-bad-.example'] }, /^subjectAltNames\.dns\[0\]: "-bad-\.example" has an invalid label/],
    [{ dns: ['ok.example'], ip: ['999.1.1.1'] }, /^subjectAltNames\.ip\[0\]: "999\.1\.1\.1" is not an IPv4 or IPv6 address/],
    [{ dns: ['ok.example'], email: ['no-at'] }, /^subjectAltNames\.email\[0\]: "no-at" must be an address/],
    [{ dns: ['ok.example'], uri: ['not a uri'] }, /^subjectAltNames\.uri\[0\]: "not a uri" /],
    [{ dns: ['ok.example'], other: ['x'] }, /^subjectAltNames\.other: unknown key/],
    [{ email: ['a@example.com'] }, /^subjectAltNames: a tls-server certificate needs at least one dns or ip name/],
    [{}, /^subjectAltNames: a tls-server certificate needs at least one dns or ip name/],
  ];
  for (const [subjectAltNames, message] of cases) {
    await rejectsWith(
      () => issueCertificate(fixture.signer, issuer, ok({ subjectAltNames: subjectAltNames as IssueCertificateRequest['subjectAltNames'] })),
      'INVALID_ARGUMENT',
      message,
    );
  }
  // None given and none in the CSR.
  await rejectsWith(
    () => issueCertificate(fixture.signer, issuer, ok({ subjectAltNames: undefined })),
    'INVALID_ARGUMENT',
    /^subjectAltNames: a tls-server certificate needs at least one dns or ip name \(none given, none in the CSR\)/,
  );
  // Bad names requested in the CSR are reported against the CSR.
  const badCsr = await opensslCsr(dir, { name: 'badsan', subject: '/CN=x', addext: ['subjectAltName=DNS:ok.example,DNS:-bad-.example'] });
  await rejectsWith(
    () => issueCertificate(fixture.signer, issuer, ok({ csrPem: badCsr, subjectAltNames: undefined })),
    'INVALID_ARGUMENT',
    /^csrPem\.subjectAltNames\.dns\[1\]: "-bad-\.example"/,
  );
  const otherNameCsr = await opensslCsr(dir, { name: 'othername', subject: '/CN=x', addext: ['subjectAltName=DNS:ok.example,otherName:1.2.3.4;UTF8:hello'] });
  await rejectsWith(
    () => issueCertificate(fixture.signer, issuer, ok({ csrPem: otherNameCsr, subjectAltNames: undefined })),
    'INVALID_ARGUMENT',
    /^csrPem: subject alternative name 2 is of a type this CA does not issue/,
  );
  // An empty subject needs SANs.
  const anon = await opensslCsr(dir, { name: 'anon', subject: '/' });
  await rejectsWith(
    () => issueCertificate(fixture.signer, issuer, ok({ csrPem: anon, profile: 'tls-client', subjectAltNames: undefined })),
    'INVALID_ARGUMENT',
    /^csrPem: the CSR has an empty subject and there are no subjectAltNames/,
  );
});

test('INVALID_ARGUMENT profile and algorithm', async () => {
  await rejectsWith(
    () => issueCertificate(fixture.signer, issuer, ok({ profile: 'email' as IssueCertificateRequest['profile'] })),
    'INVALID_ARGUMENT',
    /^profile: must be one of tls-server, tls-client, code-signing, sub-ca$/,
  );
  await rejectsWith(
    () => issueCertificate(fixture.signer, issuer, ok({ algorithm: 'RSASSA_PKCS1_V1_5_SHA_256' })),
    'INVALID_ARGUMENT',
    /^algorithm: RSASSA_PKCS1_V1_5_SHA_256 cannot be used with a ECC_NIST_P256 key$/,
  );
});

test('nothing is signed when a request is refused', async () => {
  const before = fixture.signer.calls.length;
  await rejectsWith(() => issueCertificate(fixture.signer, issuer, ok({ validityDays: 5000 })), 'INVALID_ARGUMENT', /^validityDays/);
  await rejectsWith(() => issueCertificate(fixture.signer, issuer, ok({ subjectAltNames: { ip: ['x'] } })), 'INVALID_ARGUMENT', /^subjectAltNames/);
  assert.equal(fixture.signer.calls.length, before);
});
