import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { algorithmsFor, type KeySpec, type SigningAlgorithm } from '../../../src/crypto/algorithms.js';
import { checkIssuerCertificate } from '../../../src/pki/checkIssuerCertificate.js';
import { issueCertificate } from '../../../src/pki/issueCertificate.js';
import { formatDistinguishedName } from '../../../src/pki/distinguishedName.js';
import { readSubjectAltNames } from '../../../src/pki/extensions.js';
import { parseCertificatePem } from '../../../src/pki/parsePem.js';
import { sanEntryOf } from '../../../src/pki/subjectAltNames.js';
import { makeCa, opensslVerify, type CaFixture } from './caFixture.js';
import { TempDir, openssl, opensslCsr, opensslOk } from './openssl.js';

let dir: TempDir;
let leafCsr: string;
let rsaLeafCsr: string;
let edLeafCsr: string;
const cas: CaFixture[] = [];

before(async () => {
  dir = await TempDir.create();
  [leafCsr, rsaLeafCsr, edLeafCsr] = await Promise.all([
    opensslCsr(dir, { name: 'leaf', subject: '/CN=www.example.com/O=Example', alg: 'ec-p256' }),
    opensslCsr(dir, { name: 'rsaleaf', subject: '/CN=rsa.example.com', alg: 'rsa2048' }),
    opensslCsr(dir, { name: 'edleaf', subject: '/CN=Code Signer/O=Example', alg: 'ed25519' }),
  ]);
});
after(async () => {
  await dir.remove();
  for (const ca of cas) await ca.signer.close();
});

async function ca(...args: Parameters<typeof makeCa> extends [TempDir, ...infer R] ? R : never): Promise<CaFixture> {
  const fixture = await makeCa(dir, ...args);
  cas.push(fixture);
  return fixture;
}

const hexColons = (b: Buffer): string => b.toString('hex').toUpperCase().match(/../g)!.join(':');

/** Issue tls-server for the EC leaf CSR and check everything with openssl. */
async function issueAndCheckTlsServer(fixture: CaFixture, file: string, algorithm?: SigningAlgorithm): Promise<string> {
  const now = new Date();
  const issued = await issueCertificate(
    fixture.signer,
    { certificatePem: fixture.intPem, chainPem: fixture.rootPem },
    {
      csrPem: leafCsr,
      profile: 'tls-server',
      validityDays: 90,
      subjectAltNames: { dns: ['www.example.com', '*.api.example.com'], ip: ['192.0.2.10', '2001:db8::10'] },
      now,
      ...(algorithm ? { algorithm } : {}),
    },
  );
  await dir.write(file, issued.certificatePem);
  await opensslVerify(dir, fixture, file, { purpose: 'sslserver' });

  const text = await opensslOk(dir.path, 'x509', '-in', file, '-noout', '-text');
  assert.match(
    text,
    /X509v3 Subject Alternative Name: \n\s+DNS:www\.example\.com, DNS:\*\.api\.example\.com, IP Address:192\.0\.2\.10, IP Address:2001:DB8:0:0:0:0:0:10\n/,
  );
  assert.match(text, /X509v3 Extended Key Usage: \n\s+TLS Web Server Authentication\n/);
  assert.match(text, /X509v3 Basic Constraints: critical\n\s+CA:FALSE\n/);
  assert.match(text, /X509v3 Key Usage: critical\n\s+Digital Signature\n/, 'no keyEncipherment for an EC key');
  const issuerFacts = checkIssuerCertificate(fixture.signer.publicKey, { certificatePem: fixture.intPem });
  assert.match(text, new RegExp(`X509v3 Authority Key Identifier: \\n\\s+${hexColons(issuerFacts.subjectKeyIdentifier)}\\n`));
  assert.match(text, /X509v3 Subject Key Identifier: \n\s+[0-9A-F:]{59}\n/);
  assert.match(text, /Subject: CN ?= ?www\.example\.com, O ?= ?Example/);

  // Issuer name: DER-identical to the intermediate's subject.
  const leaf = parseCertificatePem(issued.certificatePem);
  assert.deepEqual(leaf.issuerDer, parseCertificatePem(fixture.intPem).subjectDer);
  // Serial and dates as openssl reads them.
  const serial = await opensslOk(dir.path, 'x509', '-in', file, '-noout', '-serial');
  assert.equal(serial.trim(), `serial=${issued.serialNumber}`);
  assert.match(issued.serialNumber, /^[0-9A-F]{2,32}$/);
  const dates = await opensslOk(dir.path, 'x509', '-in', file, '-noout', '-startdate', '-enddate');
  const [, nb, na] = /notBefore=(.*)\nnotAfter=(.*)\n/.exec(dates)!;
  assert.equal(new Date(nb!).toISOString(), issued.notBefore);
  assert.equal(new Date(na!).toISOString(), issued.notAfter);
  const nowS = Math.floor(now.getTime() / 1000) * 1000;
  assert.equal(issued.notBefore, new Date(nowS - 5 * 60_000).toISOString());
  assert.equal(issued.notAfter, new Date(nowS + 90 * 86_400_000).toISOString());
  assert.equal(issued.chainPem, fixture.intPem + fixture.rootPem);
  return text;
}

const flows: Array<[KeySpec, SigningAlgorithm | undefined, RegExp]> = [
  ['RSA_3072', undefined, /Signature Algorithm: sha256WithRSAEncryption/],
  ['ECC_NIST_P384', undefined, /Signature Algorithm: ecdsa-with-SHA384/],
  ['ECC_NIST_P256', undefined, /Signature Algorithm: ecdsa-with-SHA256/],
  [
    'RSA_2048',
    'RSASSA_PSS_SHA_256',
    /Signature Algorithm: rsassaPss[\s\S]*Hash Algorithm: sha256[\s\S]*Mask Algorithm: mgf1 with sha256[\s\S]*Salt Length: 0x20/,
  ],
];
for (const [spec, algorithm, sigAlg] of flows) {
  test(`offline root -> ${spec} intermediate on the "HSM" -> tls-server leaf${algorithm ? ` (${algorithm})` : ''}, verified by openssl`, async () => {
    const fixture = await ca(`flow-${spec}`, spec, algorithm ? { csrAlgorithm: algorithm } : {});
    const text = await issueAndCheckTlsServer(fixture, `flow-${spec}.pem`, algorithm);
    assert.match(text, sigAlg);
  });
}

/** A 30-day tls-server request for `csrPem` that names its one DNS name. */
function tlsServerFor(csrPem: string, dns: string) {
  return { csrPem, profile: 'tls-server', validityDays: 30, subjectAltNames: { dns: [dns] } } as const;
}

test('every signing algorithm of RSA and EC keys yields a certificate openssl verifies', async () => {
  for (const spec of ['RSA_2048', 'ECC_NIST_P256'] as const) {
    const fixture = await ca(`alg-${spec}`, spec, { rootAlg: 'ec-p256' });
    for (const algorithm of algorithmsFor(spec)) {
      const issued = await issueCertificate(
        fixture.signer,
        { certificatePem: fixture.intPem, chainPem: fixture.rootPem },
        { csrPem: rsaLeafCsr, profile: 'tls-server', validityDays: 30, subjectAltNames: { dns: ['rsa.example.com'] }, algorithm },
      );
      const file = `alg-${spec}-${algorithm}.pem`;
      await dir.write(file, issued.certificatePem);
      await opensslVerify(dir, fixture, file, { purpose: 'sslserver' });
      assert.equal(fixture.signer.calls.at(-1), algorithm);
    }
  }
});

test('profiles: tls-server with an RSA key, tls-client, code-signing (Ed25519 key)', async () => {
  const fixture = await ca('profiles', 'ECC_NIST_P384');
  const issuer = { certificatePem: fixture.intPem, chainPem: fixture.rootPem };

  const rsaServer = await issueCertificate(fixture.signer, issuer, tlsServerFor(rsaLeafCsr, 'rsa.example.com'));
  await dir.write('p-rsa-server.pem', rsaServer.certificatePem);
  await opensslVerify(dir, fixture, 'p-rsa-server.pem', { purpose: 'sslserver' });
  const rsaText = await opensslOk(dir.path, 'x509', '-in', 'p-rsa-server.pem', '-noout', '-text');
  assert.match(rsaText, /X509v3 Key Usage: critical\n\s+Digital Signature, Key Encipherment\n/);

  const client = await issueCertificate(fixture.signer, issuer, {
    csrPem: leafCsr,
    profile: 'tls-client',
    validityDays: 30,
    subjectAltNames: { email: ['svc@example.com'], uri: ['spiffe://example.org/svc'] },
  });
  await dir.write('p-client.pem', client.certificatePem);
  await opensslVerify(dir, fixture, 'p-client.pem', { purpose: 'sslclient' });
  const clientText = await opensslOk(dir.path, 'x509', '-in', 'p-client.pem', '-noout', '-text');
  assert.match(clientText, /X509v3 Extended Key Usage: \n\s+TLS Web Client Authentication\n/);
  assert.match(clientText, /X509v3 Key Usage: critical\n\s+Digital Signature\n/);
  assert.match(clientText, /email:svc@example\.com, URI:spiffe:\/\/example\.org\/svc/);
  // openssl's sslserver purpose must refuse a client certificate.
  const wrong = await openssl(dir.path, 'verify', '-purpose', 'sslserver', '-CAfile', fixture.rootFile, '-untrusted', fixture.intFile, 'p-client.pem');
  assert.notEqual(wrong.code, 0);

  const code = await issueCertificate(fixture.signer, issuer, { csrPem: edLeafCsr, profile: 'code-signing', validityDays: 365 });
  await dir.write('p-code.pem', code.certificatePem);
  await opensslVerify(dir, fixture, 'p-code.pem');
  const codeText = await opensslOk(dir.path, 'x509', '-in', 'p-code.pem', '-noout', '-text');
  assert.match(codeText, /X509v3 Extended Key Usage: \n\s+Code Signing\n/);
  assert.match(codeText, /Public Key Algorithm: ED25519/);
  assert.doesNotMatch(codeText, /Subject Alternative Name/, 'no SANs asked, none in the CSR');
});

test('sub-ca: CA:TRUE pathlen 0 under an intermediate with pathlen 1; openssl verifies a leaf the sub-CA signs', async () => {
  const fixture = await ca('subca', 'ECC_NIST_P256', {
    intExt:
      'basicConstraints = critical,CA:TRUE,pathlen:1\nkeyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n',
  });
  const subCsr = await opensslCsr(dir, { name: 'sub', subject: '/C=US/O=Example/CN=Sub CA', alg: 'ec-p256' });
  const sub = await issueCertificate(
    fixture.signer,
    { certificatePem: fixture.intPem, chainPem: fixture.rootPem },
    { csrPem: subCsr, profile: 'sub-ca', validityDays: 365 },
  );
  await dir.write('sub.pem', sub.certificatePem);
  await opensslVerify(dir, fixture, 'sub.pem');
  const text = await opensslOk(dir.path, 'x509', '-in', 'sub.pem', '-noout', '-text');
  assert.match(text, /X509v3 Basic Constraints: critical\n\s+CA:TRUE, pathlen:0\n/);
  assert.match(text, /X509v3 Key Usage: critical\n\s+Certificate Sign, CRL Sign\n/);
  assert.doesNotMatch(text, /Extended Key Usage/);

  // The sub-CA (its key is openssl's) issues a leaf; the whole chain verifies.
  const endCsr = await opensslCsr(dir, { name: 'end', subject: '/CN=end.example.com', alg: 'ec-p256' });
  await dir.write('end.csr', endCsr);
  await dir.write(
    'end.ext',
    'basicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\nextendedKeyUsage = serverAuth\nsubjectAltName = DNS:end.example.com\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n',
  );
  await opensslOk(
    dir.path,
    'x509',
    '-req',
    '-in',
    'end.csr',
    '-CA',
    'sub.pem',
    '-CAkey',
    'sub.key',
    '-set_serial',
    '0x1234',
    '-days',
    '30',
    '-extfile',
    'end.ext',
    '-out',
    'end.pem',
  );
  await opensslVerify(dir, fixture, 'end.pem', { purpose: 'sslserver', untrusted: [fixture.intFile, 'sub.pem'] });
});

test("SANs: the CSR's requested SANs when none are given; the request's when given", async () => {
  const fixture = await ca('sans', 'ECC_NIST_P256', { rootAlg: 'ec-p256' });
  const issuer = { certificatePem: fixture.intPem, chainPem: fixture.rootPem };
  const withSans = await opensslCsr(dir, {
    name: 'withsans',
    subject: '/CN=from-csr.example.com',
    addext: ['subjectAltName=DNS:from-csr.example.com,IP:10.1.2.3,IP:::ffff:10.1.2.3,email:ops@example.com', 'basicConstraints=critical,CA:TRUE'],
  });
  const fromCsr = await issueCertificate(fixture.signer, issuer, { csrPem: withSans, profile: 'tls-server', validityDays: 30 });
  await dir.write('sans-csr.pem', fromCsr.certificatePem);
  await opensslVerify(dir, fixture, 'sans-csr.pem', { purpose: 'sslserver' });
  const t1 = await opensslOk(dir.path, 'x509', '-in', 'sans-csr.pem', '-noout', '-text');
  assert.match(t1, /DNS:from-csr\.example\.com, IP Address:10\.1\.2\.3, IP Address:0:0:0:0:0:FFFF:A01:203, email:ops@example\.com\n/);
  assert.match(t1, /CA:FALSE/, "the CSR's other requested extensions are ignored: the profile decides");

  const overridden = await issueCertificate(fixture.signer, issuer, tlsServerFor(withSans, 'chosen.example.com'));
  await dir.write('sans-req.pem', overridden.certificatePem);
  const t2 = await opensslOk(dir.path, 'x509', '-in', 'sans-req.pem', '-noout', '-ext', 'subjectAltName');
  assert.match(t2, /DNS:chosen\.example\.com\n/);
  assert.doesNotMatch(t2, /from-csr/);

  // An empty subject: the SAN extension becomes critical (RFC 5280 4.2.1.6), and openssl -x509_strict is happy.
  const noSubject = await opensslCsr(dir, { name: 'nosubject', subject: '/', addext: ['subjectAltName=DNS:anon.example.com'] });
  const anon = await issueCertificate(fixture.signer, issuer, { csrPem: noSubject, profile: 'tls-server', validityDays: 30 });
  await dir.write('anon.pem', anon.certificatePem);
  await opensslVerify(dir, fixture, 'anon.pem', { purpose: 'sslserver' });
  assert.match(await opensslOk(dir.path, 'x509', '-in', 'anon.pem', '-noout', '-text'), /X509v3 Subject Alternative Name: critical\n\s+DNS:anon\.example\.com/);
});

test('serial numbers: 128-bit random, positive, non-zero, minimally encoded; from the injected random source', async () => {
  const fixture = await ca('serial', 'ECC_NIST_P256', { rootAlg: 'ec-p256' });
  const issuer = { certificatePem: fixture.intPem };
  const base = { csrPem: leafCsr, profile: 'tls-server' as const, validityDays: 1, subjectAltNames: { dns: ['www.example.com'] } };
  const cases: Array<[Buffer[], string]> = [
    [[Buffer.alloc(16, 0xff)], '7F'.padEnd(32, 'F')],
    // All zero (after clearing the top bit) is retried.
    [[Buffer.from('80'.padEnd(32, '0'), 'hex'), Buffer.from('01'.repeat(16), 'hex')], '01'.repeat(16)],
    // A leading zero byte is dropped; a following high bit gets the 00 that keeps it positive.
    [[Buffer.from(`0080${'ab'.repeat(14)}`, 'hex')], `80${'AB'.repeat(14)}`],
  ];
  for (const [i, [outputs, expected]] of cases.entries()) {
    const queue = [...outputs];
    const issued = await issueCertificate(fixture.signer, issuer, {
      ...base,
      random: (n) => {
        assert.equal(n, 16);
        return queue.shift()!;
      },
    });
    const file = `serial-${i}.pem`;
    await dir.write(file, issued.certificatePem);
    // Strict DER INTEGER: openssl would refuse a padded one.
    assert.equal((await opensslOk(dir.path, 'x509', '-in', file, '-noout', '-serial')).trim(), `serial=${issued.serialNumber}`);
    assert.equal(issued.serialNumber, expected, 'the value, without the sign octet');
    await opensslVerify(dir, fixture, file);
  }
  const serials = new Set<string>();
  for (let i = 0; i < 5; i++) {
    serials.add((await issueCertificate(fixture.signer, issuer, base)).serialNumber);
  }
  assert.equal(serials.size, 5);
});

test("the facts returned for the inventory are the certificate's own, read back by node:crypto and the ASN.1 parser, under an issuer given as its checked facts", async () => {
  const fixture = await ca('facts', 'ECC_NIST_P256');
  const issuer = checkIssuerCertificate(fixture.signer.publicKey, { certificatePem: fixture.intPem, chainPem: fixture.rootPem });
  const requests = [
    {
      csrPem: leafCsr,
      profile: 'tls-server',
      validityDays: 90,
      subjectAltNames: { dns: ['WWW.Example.com'], ip: ['192.0.2.10', '2001:db8:0:0::10', '::ffff:192.0.2.1'] },
    },
    { csrPem: leafCsr, profile: 'tls-client', validityDays: 30, subjectAltNames: { email: ['svc@example.com'], uri: ['spiffe://example.org/svc'] } },
    { csrPem: edLeafCsr, profile: 'code-signing', validityDays: 365 },
  ] as const;
  for (const request of requests) {
    const issued = await issueCertificate(fixture.signer, issuer, request);
    const file = `facts-${request.profile}.pem`;
    await dir.write(file, issued.certificatePem);
    await opensslVerify(dir, fixture, file);
    const x509 = new X509Certificate(issued.certificatePem);
    const parsed = parseCertificatePem(issued.certificatePem);
    const { facts } = issued;
    assert.deepEqual(facts.der, x509.raw);
    assert.equal(facts.sha256, x509.fingerprint256.replaceAll(':', '').toLowerCase());
    assert.equal(facts.notBefore.getTime(), new Date(x509.validFrom).getTime());
    assert.equal(facts.notAfter.getTime(), new Date(x509.validTo).getTime());
    assert.equal(facts.subject, formatDistinguishedName(parsed.asn.tbsCertificate.subject));
    const fromCertificate = [...(readSubjectAltNames(parsed.extensions) ?? [])].flatMap((n) => {
      const e = sanEntryOf(n);
      return e ? [`${e.kind}:${e.value}`] : [];
    });
    assert.deepEqual(facts.subjectAltNames, fromCertificate, request.profile);
    assert.equal(facts.subjectAltNames.length, (x509.subjectAltName ?? '').split(', ').filter(Boolean).length);
  }
});
