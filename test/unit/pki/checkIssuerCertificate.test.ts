import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { checkIssuerCertificate } from '../../../src/pki/checkIssuerCertificate.js';
import { createCsr } from '../../../src/pki/createCsr.js';
import { rejectsWith } from './assertions.js';
import { createSoftwareSigner, type SoftwareSigner } from './softwareSigner.js';
import { INTERMEDIATE_EXT, TempDir, makeRoot, opensslOk, signAsRoot } from './openssl.js';

let dir: TempDir;
let signer: SoftwareSigner;
let rootPem: string;
let csrPem: string;
let intPem: string;

before(async () => {
  dir = await TempDir.create();
  [signer, rootPem] = await Promise.all([createSoftwareSigner('ECC_NIST_P256'), makeRoot(dir, { alg: 'ec-p384' })]);
  csrPem = await createCsr(signer, { subject: 'CN=Issuing CA 2027,O=Example,C=US', ca: { pathLength: 0 } });
  intPem = await signAsRoot(dir, csrPem, { out: 'int' });
});
after(async () => {
  await dir.remove();
  await signer.close();
});

test('accepts the intermediate openssl signed for the key, with and without its chain', async () => {
  const facts = checkIssuerCertificate(signer.publicKey, { certificatePem: intPem, chainPem: rootPem });
  assert.equal(facts.subjectText, 'CN=Issuing CA 2027,O=Example,C=US');
  assert.equal(facts.pathLenConstraint, 0);
  const ski = await opensslOk(dir.path, 'x509', '-in', 'int.pem', '-noout', '-ext', 'subjectKeyIdentifier');
  assert.match(ski, new RegExp(facts.subjectKeyIdentifier.toString('hex').toUpperCase().match(/../g)!.join(':')));
  const end = await opensslOk(dir.path, 'x509', '-in', 'int.pem', '-noout', '-enddate');
  assert.equal(facts.notAfter.getTime(), new Date(end.trim().replace('notAfter=', '')).getTime());
  assert.equal(facts.validUntil.getTime(), facts.notAfter.getTime(), 'the root outlives the intermediate');
  assert.equal(facts.certificatePem, intPem);
  assert.equal(facts.chainPem, rootPem);
  assert.equal(facts.chain.length, 1);

  const alone = checkIssuerCertificate(signer.publicKey, { certificatePem: intPem });
  assert.equal(alone.chainPem, '');
  assert.deepEqual(alone.subjectKeyIdentifier, facts.subjectKeyIdentifier);
  assert.equal(checkIssuerCertificate(signer.publicKey, { certificatePem: intPem, chainPem: '  \n' }).chain.length, 0);
});

test('computes the SKI (RFC 5280 method 1, as openssl "hash") when the certificate has none', async () => {
  const withSki = checkIssuerCertificate(signer.publicKey, { certificatePem: intPem });
  const noSkiPem = await signAsRoot(dir, csrPem, {
    out: 'int-noski',
    ext: 'basicConstraints = critical,CA:TRUE,pathlen:0\nkeyUsage = critical,keyCertSign,cRLSign\nauthorityKeyIdentifier = keyid\nsubjectKeyIdentifier = none\n',
  });
  const text = await opensslOk(dir.path, 'x509', '-in', 'int-noski.pem', '-noout', '-text');
  assert.doesNotMatch(text, /Subject Key Identifier/);
  const facts = checkIssuerCertificate(signer.publicKey, { certificatePem: noSkiPem, chainPem: rootPem });
  assert.deepEqual(facts.subjectKeyIdentifier, withSki.subjectKeyIdentifier);
});

test('CONFLICT: a certificate for another key', async () => {
  await rejectsWith(
    () => checkIssuerCertificate(signer.publicKey, { certificatePem: rootPem }),
    'CONFLICT',
    /^certificatePem: the certificate's public key is not this key version's public key$/,
  );
});

test('CONFLICT: not a CA certificate', async () => {
  const nonCa = await signAsRoot(dir, csrPem, {
    out: 'nonca',
    ext: 'basicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n',
  });
  await rejectsWith(
    () => checkIssuerCertificate(signer.publicKey, { certificatePem: nonCa, chainPem: rootPem }),
    'CONFLICT',
    /^certificatePem: the certificate is not a CA certificate \(basicConstraints cA is not true\)/,
  );
  const noBc = await signAsRoot(dir, csrPem, { out: 'nobc', ext: 'keyUsage = critical,keyCertSign\nsubjectKeyIdentifier = hash\n' });
  await rejectsWith(() => checkIssuerCertificate(signer.publicKey, { certificatePem: noBc }), 'CONFLICT', /not a CA certificate/);
  const noCertSign = await signAsRoot(dir, csrPem, {
    out: 'nocertsign',
    ext: 'basicConstraints = critical,CA:TRUE\nkeyUsage = critical,digitalSignature,cRLSign\nsubjectKeyIdentifier = hash\n',
  });
  await rejectsWith(
    () => checkIssuerCertificate(signer.publicKey, { certificatePem: noCertSign }),
    'CONFLICT',
    /^certificatePem: the certificate is not a CA certificate \(its keyUsage lacks keyCertSign\)/,
  );
});

test('CONFLICT: a chain that does not link', async () => {
  // Another root with the very same name but another key: names match, the signature does not.
  const twin = await makeRoot(dir, { name: 'twin', alg: 'ec-p384' });
  await rejectsWith(
    () => checkIssuerCertificate(signer.publicKey, { certificatePem: intPem, chainPem: twin }),
    'CONFLICT',
    /^chainPem: the chain does not link: the signature of certificatePem does not verify with the key of chainPem\[0\]/,
  );
  const stranger = await makeRoot(dir, { name: 'stranger', alg: 'ec-p256', subject: '/CN=Stranger Root' });
  await rejectsWith(
    () => checkIssuerCertificate(signer.publicKey, { certificatePem: intPem, chainPem: stranger }),
    'CONFLICT',
    /^chainPem: the chain does not link: the issuer of certificatePem \(CN=Example Offline Root,O=Example,C=US\) is not the subject of chainPem\[0\] \(CN=Stranger Root\)/,
  );
  // The right root after a wrong one.
  await rejectsWith(
    () => checkIssuerCertificate(signer.publicKey, { certificatePem: intPem, chainPem: rootPem + stranger }),
    'CONFLICT',
    /^chainPem: the chain does not link: the issuer of chainPem\[0\]/,
  );
});

test('CONFLICT: a root whose pathLenConstraint 0 forbids the intermediate', async () => {
  await makeRoot(dir, { name: 'p0', alg: 'ec-p256', subject: '/CN=Pathlen Zero Root', pathlen: 0 });
  const p0Pem = await dir.read('p0.pem');
  const under = await signAsRoot(dir, csrPem, { root: 'p0', out: 'under-p0', ext: INTERMEDIATE_EXT });
  await rejectsWith(
    () => checkIssuerCertificate(signer.publicKey, { certificatePem: under, chainPem: p0Pem }),
    'CONFLICT',
    /^chainPem: chainPem\[0\] has pathLenConstraint 0/,
  );
});

test('CONFLICT: expired', async () => {
  const later = new Date(Date.now() + 800 * 24 * 3600 * 1000);
  await rejectsWith(
    () => checkIssuerCertificate(signer.publicKey, { certificatePem: intPem, chainPem: rootPem }, { now: later }),
    'CONFLICT',
    /^certificatePem: the certificate expired on \d{4}-\d\d-\d\dT/,
  );
  // A chain certificate expiring first: an intermediate outliving a short-lived root.
  await makeRoot(dir, { name: 'short', alg: 'ec-p256', subject: '/CN=Short Root', days: 10 });
  const shortRoot = await dir.read('short.pem');
  const long = await signAsRoot(dir, csrPem, { root: 'short', out: 'long', days: 100 });
  const facts = checkIssuerCertificate(signer.publicKey, { certificatePem: long, chainPem: shortRoot });
  assert.ok(facts.validUntil.getTime() < facts.notAfter.getTime(), 'validUntil is the chain minimum');
  await rejectsWith(
    () => checkIssuerCertificate(signer.publicKey, { certificatePem: long, chainPem: shortRoot }, { now: new Date(Date.now() + 20 * 86400_000) }),
    'CONFLICT',
    /^chainPem: chainPem\[0\] expired on /,
  );
});

test('INVALID_ARGUMENT: garbage certificate or chain PEM', async () => {
  await rejectsWith(() => checkIssuerCertificate(signer.publicKey, { certificatePem: 'garbage' }), 'INVALID_ARGUMENT', /^certificatePem: /);
  await rejectsWith(() => checkIssuerCertificate(signer.publicKey, { certificatePem: intPem, chainPem: 'garbage' }), 'INVALID_ARGUMENT', /^chainPem: /);
});
