import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { AsnConvert } from '@peculiar/asn1-schema';
import { CertificationRequest } from '@peculiar/asn1-csr';
import { parseCertificatePem, parseChainPem, parseCsrPem } from '../../../src/pki/parsePem.js';
import { MAX_PEM_LENGTH, pemBlocks, toPem } from '../../../src/pki/pem.js';
import { ServiceError } from '../../../src/errors.js';
import { rejectsWith } from './assertions.js';
import { TempDir, makeRoot, opensslCsr } from './openssl.js';

let dir: TempDir;
let rootPem: string;
let root2Pem: string;
let ecCsr: string;
before(async () => {
  dir = await TempDir.create();
  [rootPem, root2Pem, ecCsr] = await Promise.all([
    makeRoot(dir, { alg: 'ec-p256' }),
    makeRoot(dir, { name: 'root2', alg: 'ec-p256', subject: '/CN=Other Root' }),
    opensslCsr(dir, {
      name: 'ec',
      subject: '/CN=www.example.com',
      alg: 'ec-p256',
      addext: ['subjectAltName=DNS:www.example.com,IP:192.0.2.7'],
    }),
  ]);
});
after(() => dir.remove());

const derOf = (pem: string): Buffer => Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64');

test('CSRs signed by openssl with every supported algorithm parse and verify', async () => {
  const variants: Array<[string, Parameters<typeof opensslCsr>[1]]> = [
    ['ecdsa-with-SHA256', { name: 'v1', subject: '/CN=a', alg: 'ec-p256' }],
    ['ecdsa-with-SHA384', { name: 'v2', subject: '/CN=a', alg: 'ec-p384' }],
    ['sha384WithRSAEncryption', { name: 'v3', subject: '/CN=a', alg: 'rsa2048', digest: 'sha384' }],
    ['RSASSA-PSS', { name: 'v4', subject: '/CN=a', alg: 'rsa2048', sigopts: ['rsa_padding_mode:pss', 'rsa_pss_saltlen:digest'] }],
    ['RSASSA-PSS (salt 20)', { name: 'v5', subject: '/CN=a', alg: 'rsa2048', sigopts: ['rsa_padding_mode:pss', 'rsa_pss_saltlen:20'] }],
    ['Ed25519', { name: 'v6', subject: '/CN=a', alg: 'ed25519' }],
  ];
  for (const [label, opts] of variants) {
    const csr = parseCsrPem(await opensslCsr(dir, opts));
    assert.equal(csr.subject.length, 1, label);
  }
});

test('a CSR: subject, exact subject/SPKI DER, requested extensions', () => {
  const csr = parseCsrPem(ecCsr);
  assert.equal(csr.publicKey.asymmetricKeyType, 'ec');
  assert.deepEqual(csr.spkiDer, csr.publicKey.export({ type: 'spki', format: 'der' }));
  assert.deepEqual(csr.subjectDer, Buffer.from(AsnConvert.serialize(csr.subject)));
  assert.deepEqual(
    csr.requestedExtensions.map((e) => e.extnID),
    ['2.5.29.17'],
  );
  assert.deepEqual(csr.der, derOf(ecCsr));
});

test("a CSR whose signature is broken: csrPem: the CSR's signature does not verify", async () => {
  const der = derOf(ecCsr);
  // Flip a bit in the last byte of the signature...
  const badSig = Buffer.from(der);
  badSig[badSig.length - 1]! ^= 0x01;
  await rejectsWith(() => parseCsrPem(toPem('CERTIFICATE REQUEST', badSig)), 'INVALID_ARGUMENT', /^csrPem: the CSR's signature does not verify$/);
  // ...or in the signed data (the subject's CN "www.example.com" -> "www.example.con").
  const badInfo = Buffer.from(der);
  const at = badInfo.indexOf('www.example.com');
  badInfo[at + 14] = 'n'.charCodeAt(0);
  await rejectsWith(() => parseCsrPem(toPem('CERTIFICATE REQUEST', badInfo)), 'INVALID_ARGUMENT', /^csrPem: the CSR's signature does not verify$/);
  // A signature from another key (replace the public key by another's).
  const other = parseCsrPem(await opensslCsr(dir, { name: 'other', subject: '/CN=www.example.com' }));
  const csr = AsnConvert.parse(der, CertificationRequest);
  csr.certificationRequestInfo.subjectPKInfo = other.asn.certificationRequestInfo.subjectPKInfo;
  const swapped = Buffer.from(
    AsnConvert.serialize(
      new CertificationRequest({
        certificationRequestInfo: csr.certificationRequestInfo,
        signatureAlgorithm: csr.signatureAlgorithm,
        signature: csr.signature,
      }),
    ),
  );
  await rejectsWith(() => parseCsrPem(toPem('CERTIFICATE REQUEST', swapped)), 'INVALID_ARGUMENT', /^csrPem: the CSR's signature does not verify$/);
});

test('a SHA-1 signed CSR is refused as an unsupported algorithm', async () => {
  const pem = await opensslCsr(dir, { name: 'sha1', subject: '/CN=a', alg: 'rsa2048', digest: 'sha1' });
  await rejectsWith(() => parseCsrPem(pem), 'INVALID_ARGUMENT', /^csrPem: the CSR is signed with an unsupported algorithm \(1\.2\.840\.113549\.1\.1\.5\)/);
});

test('garbage and malformed PEM are INVALID_ARGUMENT naming the field', async () => {
  const der = derOf(ecCsr);
  const csrCases: Array<[unknown, RegExp]> = [
    ['hello', /^csrPem: no PEM block found/],
    ['', /^csrPem: no PEM block found/],
    [42, /^csrPem: must be a PEM string/],
    [undefined, /^csrPem: must be a PEM string/],
    ['-----BEGIN CERTIFICATE REQUEST-----\n!!!!\n-----END CERTIFICATE REQUEST-----\n', /^csrPem: PEM block 1 \("CERTIFICATE REQUEST"\) is not valid base64/],
    [
      '-----BEGIN CERTIFICATE REQUEST-----\nQUJD\n-----END CERTIFICATE-----\n',
      /^csrPem: PEM block 1 begins with "CERTIFICATE REQUEST" but ends with "CERTIFICATE"/,
    ],
    [`-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n`, /^csrPem: has an unterminated or malformed PEM block/],
    ['-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n', /^csrPem: PEM block 1 .*not valid base64/],
    [toPem('CERTIFICATE REQUEST', Buffer.from('definitely not DER')), /^csrPem: is not a valid DER PKCS#10 certification request/],
    [toPem('CERTIFICATE REQUEST', Buffer.concat([der, Buffer.from([0x05, 0x00])])), /^csrPem: is not a valid DER PKCS#10/],
    [toPem('CERTIFICATE REQUEST', der.subarray(0, der.length - 10)), /^csrPem: is not a valid DER PKCS#10/],
    [rootPem, /^csrPem: expected a CERTIFICATE REQUEST PEM block, found "CERTIFICATE"/],
    [ecCsr + ecCsr, /^csrPem: must hold exactly one CSR, found 2 PEM blocks/],
    ['x'.repeat(300_000), /^csrPem: longer than/],
    ['-----BEGIN CERTIFICATE REQUEST-----\nProc-Type: 4,ENCRYPTED\n\nQUJD\n-----END CERTIFICATE REQUEST-----\n', /^csrPem: PEM block 1 has headers/],
  ];
  for (const [input, message] of csrCases) {
    await rejectsWith(() => parseCsrPem(input), 'INVALID_ARGUMENT', message);
  }
  const certCases: Array<[unknown, RegExp]> = [
    ['garbage', /^certificatePem: no PEM block found/],
    [ecCsr, /^certificatePem: expected a CERTIFICATE PEM block, found "CERTIFICATE REQUEST"/],
    [toPem('CERTIFICATE', Buffer.from('definitely not DER')), /^certificatePem: is not a valid DER X\.509 certificate/],
    [toPem('CERTIFICATE', der), /^certificatePem: is not a valid DER X\.509 certificate/],
    [toPem('CERTIFICATE', Buffer.concat([derOf(rootPem), Buffer.from([0])])), /^certificatePem: is not a valid DER X\.509/],
    [rootPem + root2Pem, /^certificatePem: must hold exactly one certificate, found 2/],
  ];
  for (const [input, message] of certCases) {
    await rejectsWith(() => parseCertificatePem(input), 'INVALID_ARGUMENT', message);
  }
  await rejectsWith(() => parseChainPem('garbage'), 'INVALID_ARGUMENT', /^chainPem: no PEM block found/);
  await rejectsWith(() => parseChainPem(rootPem + ecCsr), 'INVALID_ARGUMENT', /^chainPem\[1\]: expected a CERTIFICATE PEM block/);
  await rejectsWith(
    () => parseChainPem(rootPem + toPem('CERTIFICATE', Buffer.from('nope'))),
    'INVALID_ARGUMENT',
    /^chainPem\[1\]: is not a valid DER X\.509 certificate/,
  );
  await rejectsWith(() => parseChainPem(rootPem.repeat(11)), 'INVALID_ARGUMENT', /^chainPem: more than 10 certificates/);
});

test('certificates: exact issuer/subject/SPKI DER, validity, extensions; chains keep their order; text around blocks is ignored', () => {
  const root = parseCertificatePem(rootPem);
  assert.deepEqual(root.issuerDer, root.subjectDer, 'self-issued');
  assert.deepEqual(root.spkiDer, root.publicKey.export({ type: 'spki', format: 'der' }));
  assert.equal(root.notAfter.toISOString(), new Date(root.x509.validTo).toISOString());
  assert.equal(root.notBefore.toISOString(), new Date(root.x509.validFrom).toISOString());
  assert.deepEqual(root.extensions.map((e) => e.extnID).sort(), ['2.5.29.14', '2.5.29.15', '2.5.29.19']);
  assert.equal(root.pem, rootPem);
  const chain = parseChainPem(`subject=CN = Example\nissuer=CN = Example\n${rootPem}\nsome text\n${root2Pem}`);
  assert.deepEqual(
    chain.map((c) => c.x509.subject),
    [root.x509.subject, 'CN=Other Root'],
  );
});

test('PEM: many unterminated BEGIN lines at the length limit are one clear 400 (read in one pass, not by backtracking)', () => {
  const text = '-----BEGIN A-----'.repeat(Math.floor(MAX_PEM_LENGTH / 17));
  assert.throws(
    () => pemBlocks(text, 'chainPem'),
    (e: unknown) => e instanceof ServiceError && e.code === 'INVALID_ARGUMENT' && /chainPem: has an unterminated or malformed PEM block/.test(e.message),
  );
  // And the neighbours of a good block are still read: explanatory text before, a second block after.
  const good = toPem('CERTIFICATE', Buffer.from([1, 2, 3]));
  assert.deepEqual(
    pemBlocks(`subject=CN=x\n${good}${good}`, 'p').map((b) => b.der),
    [Buffer.from([1, 2, 3]), Buffer.from([1, 2, 3])],
  );
  assert.throws(() => pemBlocks(`${good}-----END CERTIFICATE-----`, 'p'), /unterminated or malformed/);
});
