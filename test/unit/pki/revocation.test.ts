import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { issueCertificate } from '../../../src/pki/issueCertificate.js';
import { createCrl } from '../../../src/pki/createCrl.js';
import { certIdMatches, certIdSerial, createOcspResponse, ocspErrorResponse, OCSPResponseStatus, parseOcspRequest } from '../../../src/pki/ocsp.js';
import { parseCertificatePem } from '../../../src/pki/parsePem.js';
import { toPem } from '../../../src/pki/pem.js';
import { makeCa, type CaFixture } from './caFixture.js';
import { TempDir, openssl, opensslCsr, opensslOk } from './openssl.js';

/** CRLs and OCSP responses signed through a PkiSigner backed by a real key, checked by openssl. */

let dir: TempDir;
const cas: CaFixture[] = [];

before(async () => {
  dir = await TempDir.create();
  await opensslCsr(dir, { name: 'leaf', subject: '/CN=leaf.example.com', alg: 'ec-p256' });
});
after(async () => {
  await dir.remove();
  for (const ca of cas) await ca.signer.close();
});

async function issueTwo(ca: CaFixture): Promise<{ a: string; b: string; aSerial: string; bSerial: string }> {
  const csrPem = await dir.read('leaf.csr');
  const issuer = { certificatePem: ca.intPem, chainPem: ca.rootPem };
  const req = { csrPem, profile: 'tls-server' as const, validityDays: 30, subjectAltNames: { dns: ['leaf.example.com'] } };
  const [a, b] = await Promise.all([issueCertificate(ca.signer, issuer, req), issueCertificate(ca.signer, issuer, req)]);
  await dir.write(`${ca.name}-a.pem`, a.certificatePem);
  await dir.write(`${ca.name}-b.pem`, b.certificatePem);
  await dir.write(`${ca.name}-chain.pem`, ca.rootPem + ca.intPem);
  return { a: `${ca.name}-a.pem`, b: `${ca.name}-b.pem`, aSerial: a.serialNumber, bSerial: b.serialNumber };
}

for (const spec of ['ECC_NIST_P256', 'RSA_2048'] as const) {
  test(`CRL (${spec} issuer): openssl accepts its signature, rejects the revoked certificate, accepts the other`, async () => {
    const ca = await makeCa(dir, `crl-${spec}`, spec);
    cas.push(ca);
    const { a, b, aSerial } = await issueTwo(ca);
    const now = new Date();
    const der = await createCrl(ca.signer, ca.intPem, {
      crlNumber: 7n,
      thisUpdate: now,
      nextUpdate: new Date(now.getTime() + 24 * 3600_000),
      revoked: [{ serialNumber: aSerial, revokedAt: now, reason: 'keyCompromise' }],
    });
    await dir.write(`${ca.name}.crl.pem`, toPem('X509 CRL', der));
    const v = await openssl(dir.path, 'crl', '-in', `${ca.name}.crl.pem`, '-noout', '-verify', '-CAfile', ca.intFile);
    assert.equal(v.code, 0, v.stderr);
    assert.match(v.stderr + v.stdout, /verify OK/);
    const text = await opensslOk(dir.path, 'crl', '-in', `${ca.name}.crl.pem`, '-noout', '-text');
    assert.match(text, /Version 2/);
    assert.match(text, /X509v3 CRL Number: \n\s+7\n/);
    assert.match(text, /X509v3 Authority Key Identifier: \n/);
    assert.match(text, new RegExp(`Serial Number: 0?${aSerial}\\n[\\s\\S]*Key Compromise`));
    assert.match(text, spec === 'ECC_NIST_P256' ? /Signature Algorithm: ecdsa-with-SHA256/ : /Signature Algorithm: sha256WithRSAEncryption/);
    const issuerLine = (await opensslOk(dir.path, 'x509', '-in', ca.intFile, '-noout', '-subject')).replace(/^subject=/, '').trim();
    assert.ok(text.includes(`Issuer: ${issuerLine}`), text);

    const check = (leaf: string) => openssl(dir.path, 'verify', '-crl_check', '-CRLfile', `${ca.name}.crl.pem`, '-CAfile', `${ca.name}-chain.pem`, leaf);
    const revoked = await check(a);
    assert.notEqual(revoked.code, 0);
    assert.match(revoked.stdout + revoked.stderr, /certificate revoked/);
    const good = await check(b);
    assert.equal(good.code, 0, good.stdout + good.stderr);
  });
}

test('OCSP: openssl reads good, revoked (time, reason) and unknown from a response signed by the issuer key, nonce echoed', async () => {
  const ca = await makeCa(dir, 'ocsp', 'ECC_NIST_P384');
  cas.push(ca);
  const { a, b, aSerial, bSerial } = await issueTwo(ca);
  // One request with three CertIDs (the third a serial this CA never issued), SHA-256 CertIDs for good measure.
  await opensslOk(dir.path, 'ocsp', '-issuer', ca.intFile, '-sha256', '-cert', a, '-cert', b, '-serial', '0x1234ABCD', '-reqout', 'ocsp-req.der');
  const parsed = parseOcspRequest(await readFile(dir.file('ocsp-req.der')));
  assert.equal(parsed.certIds.length, 3);
  assert.ok(parsed.nonce, 'openssl sends a nonce by default');
  const issuer = parseCertificatePem(ca.intPem);
  assert.ok(parsed.certIds.every((id) => certIdMatches(id, issuer)));
  assert.ok(!parsed.certIds.some((id) => certIdMatches(id, parseCertificatePem(ca.rootPem))));
  // Serials as the inventory keeps them: without leading zeros (node:crypto pads to whole bytes).
  const strip = (s: string): string => s.replace(/^0+/, '');
  assert.deepEqual(parsed.certIds.map(certIdSerial), [strip(aSerial), strip(bSerial), '1234ABCD']);

  const revokedAt = new Date(Date.now() - 60_000);
  const now = new Date();
  const der = await createOcspResponse(ca.signer, ca.intPem, {
    responses: parsed.certIds.map((certId) => ({
      certId,
      status:
        certIdSerial(certId) === strip(aSerial)
          ? { status: 'revoked' as const, revokedAt, reason: 'keyCompromise' as const }
          : certIdSerial(certId) === strip(bSerial)
            ? { status: 'good' as const }
            : { status: 'unknown' as const },
    })),
    ...(parsed.nonce ? { nonce: parsed.nonce } : {}),
    producedAt: now,
    thisUpdate: now,
    nextUpdate: new Date(now.getTime() + 3600_000),
  });
  await dir.write('ocsp-resp.der', der);
  // The request as sent: openssl checks the nonce echo and the signature (the issuer certificate comes with the response).
  const n = await openssl(dir.path, 'ocsp', '-respin', 'ocsp-resp.der', '-reqin', 'ocsp-req.der', '-CAfile', ca.rootFile);
  assert.equal(n.code, 0, n.stdout + n.stderr);
  assert.match(n.stdout + n.stderr, /Response verify OK/);
  assert.doesNotMatch(n.stdout + n.stderr, /nonce/i);
  // The statuses (-cert builds a fresh request in openssl, hence -no_nonce here).
  const r = await openssl(
    dir.path,
    'ocsp',
    '-respin',
    'ocsp-resp.der',
    '-no_nonce',
    '-issuer',
    ca.intFile,
    '-sha256',
    '-cert',
    a,
    '-cert',
    b,
    '-serial',
    '0x1234ABCD',
    '-CAfile',
    ca.rootFile,
  );
  const out = r.stdout + r.stderr;
  assert.equal(r.code, 0, out);
  assert.match(out, /Response verify OK/);
  assert.match(out, new RegExp(`${a}: revoked\\n[\\s\\S]*Reason: keyCompromise`));
  assert.match(out, new RegExp(`${b}: good`));
  assert.match(out, /0x1234ABCD: unknown/);

  // Without the nonce in the response openssl warns: the echo above is what it checked.
  const noNonce = await createOcspResponse(ca.signer, ca.intPem, {
    responses: [{ certId: parsed.certIds[1]!, status: { status: 'good' } }],
    producedAt: now,
    thisUpdate: now,
    nextUpdate: new Date(now.getTime() + 3600_000),
  });
  await dir.write('ocsp-resp2.der', noNonce);
  const r2 = await openssl(dir.path, 'ocsp', '-respin', 'ocsp-resp2.der', '-reqin', 'ocsp-req.der', '-CAfile', ca.rootFile);
  assert.match(r2.stdout + r2.stderr, /WARNING: no nonce in response/);
});

test('OCSP: malformed requests are INVALID_ARGUMENT; the error response is a DER OCSPResponse openssl reads', async () => {
  for (const bad of [Buffer.alloc(0), Buffer.from('not der'), Buffer.from([0x30, 0x03, 0x02, 0x01, 0x01]), Buffer.from([0x30, 0x80, 0x00, 0x00])]) {
    assert.throws(() => parseOcspRequest(bad), { code: 'INVALID_ARGUMENT' });
  }
  await dir.write('malformed.der', ocspErrorResponse(OCSPResponseStatus.malformedRequest));
  const r = await openssl(dir.path, 'ocsp', '-respin', 'malformed.der', '-resp_text', '-noverify');
  assert.match(r.stdout + r.stderr, /malformedrequest/i);
});
