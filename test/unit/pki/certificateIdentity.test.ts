import { X509Certificate } from 'node:crypto';
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { certificateIdentity, normalizeSubject } from '../../../src/pki/certificateIdentity.js';
import { TestPki } from '../../support/tlsPki.js';
import { opensslOk } from './openssl.js';

let pki: TestPki;
before(async () => {
  pki = await TestPki.create();
});
after(() => pki?.remove());

const rfc2253 = async (certFile: string): Promise<string> =>
  (await opensslOk(pki.dir.path, 'x509', '-in', certFile, '-noout', '-subject', '-nameopt', 'RFC2253')).trim().replace(/^subject=/, '');

test("a certificate's subject in RFC 4514 order, as openssl prints it (-nameopt RFC2253)", async () => {
  for (const [name, subj, expected] of [
    ['plain', '/O=Example/CN=payments-api', 'CN=payments-api,O=Example'],
    ['comma', '/C=US/O=Example, Inc./OU=Ops/CN=batch job', 'CN=batch job,OU=Ops,O=Example\\, Inc.,C=US'],
  ] as const) {
    const leaf = await pki.leaf(name, { subject: subj });
    const id = certificateIdentity(new X509Certificate(leaf.cert).raw);
    assert.equal(id.subject, expected);
    assert.equal(id.subject, await rfc2253(leaf.certFile), 'the same string openssl gives');
  }
});

test('configured subjects are normalized: keyword case and spelling, OIDs, spaces; order and value case still count', () => {
  const want = 'CN=payments-api,O=Example';
  for (const s of [
    'CN=payments-api,O=Example',
    'cn=payments-api, o=Example',
    ' CN = payments-api , O = Example ',
    'commonName=payments-api,organizationName=Example',
    '2.5.4.3=payments-api,2.5.4.10=Example',
  ]) {
    assert.equal(normalizeSubject(s, 'subject'), want, s);
  }
  assert.notEqual(normalizeSubject('O=Example,CN=payments-api', 'subject'), want, 'RDN order is significant');
  assert.notEqual(normalizeSubject('CN=Payments-API,O=Example', 'subject'), want, 'values are case-sensitive');
  assert.equal(normalizeSubject('CN=a,C=us', 'subject'), 'CN=a,C=US');
  assert.throws(
    () => normalizeSubject('CN=a,XX=b', 'clients.0.certificate.subject'),
    /^ServiceError: clients\.0\.certificate\.subject: unknown attribute type/,
  );
});

test('URI and DNS subject alternative names, as node:crypto lists them', async () => {
  const leaf = await pki.leaf('sans', {
    subject: '/CN=job',
    san: ['URI:spiffe://example/payments-api', 'DNS:Worker.Example.COM', 'email:ops@example.com', 'IP:10.0.0.1'],
  });
  const x509 = new X509Certificate(leaf.cert);
  assert.equal(x509.subjectAltName, 'URI:spiffe://example/payments-api, DNS:Worker.Example.COM, email:ops@example.com, IP Address:10.0.0.1');
  const id = certificateIdentity(x509.raw);
  assert.deepEqual(id.uris, ['spiffe://example/payments-api']);
  assert.deepEqual(id.dnsNames, ['worker.example.com']);
  assert.deepEqual(certificateIdentity(new X509Certificate(pki.ca).raw).uris, [], 'no SAN extension: none');
});
