import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import type { KeySpec, SigningAlgorithm } from '../../../src/crypto/algorithms.js';
import { createCsr } from '../../../src/pki/createCsr.js';
import { parseCsrPem } from '../../../src/pki/parsePem.js';
import { defaultPkiAlgorithm } from '../../../src/pki/signatureAlgorithm.js';
import type { PkiSigner } from '../../../src/pki/PkiSigner.js';
import { rejectsWith } from './assertions.js';
import { createSoftwareSigner, type SoftwareSigner } from './softwareSigner.js';
import { TempDir, openssl, opensslOk } from './openssl.js';

const dirP = TempDir.create();
const signers = new Map<KeySpec, Promise<SoftwareSigner>>();
function signer(spec: KeySpec): Promise<SoftwareSigner> {
  if (!signers.has(spec)) signers.set(spec, createSoftwareSigner(spec));
  return signers.get(spec)!;
}
after(async () => {
  await (await dirP).remove();
  for (const s of signers.values()) await (await s).close();
});

/** openssl req -verify, and the -text dump. */
async function opensslReadsCsr(name: string, pem: string): Promise<string> {
  const dir = await dirP;
  await dir.write(`${name}.csr`, pem);
  const r = await openssl(dir.path, 'req', '-verify', '-in', `${name}.csr`, '-noout', '-text');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /self-signature verify OK/);
  return r.stdout;
}

const cases: Array<[KeySpec, SigningAlgorithm | undefined, RegExp]> = [
  ['RSA_2048', undefined, /Signature Algorithm: sha256WithRSAEncryption/],
  ['RSA_3072', undefined, /Signature Algorithm: sha256WithRSAEncryption/],
  ['RSA_4096', undefined, /Signature Algorithm: sha256WithRSAEncryption/],
  ['ECC_NIST_P256', undefined, /Signature Algorithm: ecdsa-with-SHA256/],
  ['ECC_NIST_P384', undefined, /Signature Algorithm: ecdsa-with-SHA384/],
  ['RSA_2048', 'RSASSA_PKCS1_V1_5_SHA_512', /Signature Algorithm: sha512WithRSAEncryption/],
  ['RSA_2048', 'RSASSA_PSS_SHA_256', /rsassaPss[\s\S]*Hash Algorithm: sha256[\s\S]*Mask Algorithm: mgf1 with sha256[\s\S]*Salt Length: 0x20/],
  ['RSA_3072', 'RSASSA_PSS_SHA_384', /rsassaPss[\s\S]*Hash Algorithm: sha384[\s\S]*Mask Algorithm: mgf1 with sha384[\s\S]*Salt Length: 0x30/],
  ['ECC_NIST_P256', 'ECDSA_SHA_512', /Signature Algorithm: ecdsa-with-SHA512/],
];

for (const [spec, algorithm, sigAlg] of cases) {
  test(`a CA CSR for ${spec}${algorithm ? ` signed ${algorithm}` : ''} verifies with openssl`, async () => {
    const s = await signer(spec);
    const pem = await createCsr(s, {
      subject: 'CN=Issuing CA 2027,O=Example,C=US',
      ca: { pathLength: 0 },
      subjectAltNames: { dns: ['ca.example.com'], uri: ['https://pki.example.com/ca'] },
      ...(algorithm ? { algorithm } : {}),
    });
    const text = await opensslReadsCsr(`${spec}-${algorithm}`, pem);
    assert.match(text, sigAlg);
    assert.match(text, /Subject: C ?= ?US, O ?= ?Example, CN ?= ?Issuing CA 2027/);
    assert.match(text, /Requested Extensions:/);
    assert.match(text, /X509v3 Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
    assert.match(text, /X509v3 Key Usage: critical\s+Certificate Sign, CRL Sign/);
    assert.match(text, /DNS:ca\.example\.com, URI:https:\/\/pki\.example\.com\/ca/);
    // The CSR carries the signer's public key.
    const dir = await dirP;
    const pub = await opensslOk(dir.path, 'req', '-in', `${spec}-${algorithm}.csr`, '-noout', '-pubkey');
    assert.equal(pub, s.publicKey.export({ type: 'spki', format: 'pem' }));
    // And our own parser accepts it (self-signature included).
    const parsed = parseCsrPem(pem);
    assert.equal(parsed.requestedExtensions.length, 3);
    assert.equal(s.calls.at(-1), algorithm ?? defaultPkiAlgorithm(spec));
  });
}

test('a plain CSR (no ca, no SANs) has an empty attribute set and no pathlen when none is asked', async () => {
  const s = await signer('ECC_NIST_P256');
  const plainPem = await createCsr(s, { subject: 'CN=plain' });
  const plain = await opensslReadsCsr('plain', plainPem);
  assert.match(plain, /Attributes:\s+\(none\)/);
  assert.doesNotMatch(plain, /X509v3/);
  assert.equal(parseCsrPem(plainPem).asn.certificationRequestInfo.attributes.length, 0);
  const ca = await opensslReadsCsr('ca-nopathlen', await createCsr(s, { subject: 'CN=ca', ca: {} }));
  assert.match(ca, /CA:TRUE\n/);
  assert.doesNotMatch(ca, /pathlen/);
});

test('bad options are INVALID_ARGUMENT naming the field, and nothing is signed', async () => {
  const s = await signer('ECC_NIST_P256');
  const before = s.calls.length;
  await rejectsWith(() => createCsr(s, { subject: 'XX=foo,O=Example' }), 'INVALID_ARGUMENT', /^subject: unknown attribute type "XX"/);
  await rejectsWith(() => createCsr(s, { subject: '' }), 'INVALID_ARGUMENT', /^subject: must not be empty/);
  await rejectsWith(() => createCsr(s, { subject: 'CN=x', ca: { pathLength: -1 } }), 'INVALID_ARGUMENT', /^ca\.pathLength: /);
  await rejectsWith(() => createCsr(s, { subject: 'CN=x', ca: { pathLength: 1.5 } }), 'INVALID_ARGUMENT', /^ca\.pathLength: /);
  await rejectsWith(
    () => createCsr(s, { subject: 'CN=x', subjectAltNames: { dns: ['ok.example', '-bad-.example'] } }),
    'INVALID_ARGUMENT',
    /^subjectAltNames\.dns\[1\]: /,
  );
  await rejectsWith(
    () => createCsr(s, { subject: 'CN=x', algorithm: 'RSASSA_PSS_SHA_256' }),
    'INVALID_ARGUMENT',
    /^algorithm: RSASSA_PSS_SHA_256 cannot be used with a ECC_NIST_P256 key/,
  );
  await rejectsWith(
    () => createCsr(s, { subject: 'CN=x', algorithm: 'SHA1' as SigningAlgorithm }),
    'INVALID_ARGUMENT',
    /^algorithm: unknown signing algorithm/,
  );
  assert.equal(s.calls.length, before);
});

test('a signer whose signature does not verify is an INTERNAL error, not a CSR', async () => {
  const s = await signer('ECC_NIST_P256');
  const broken: PkiSigner = {
    keySpec: s.keySpec,
    publicKey: s.publicKey,
    async sign(algorithm, digest) {
      const sig = await s.sign(algorithm, digest);
      sig[sig.length - 1]! ^= 1;
      return sig;
    },
  };
  await rejectsWith(() => createCsr(broken, { subject: 'CN=x' }), 'INTERNAL', /does not verify/);
  // A raw r||s ECDSA signature (not DER) is caught the same way.
  const raw: PkiSigner = { ...broken, sign: async () => Buffer.alloc(64, 1) };
  await rejectsWith(() => createCsr(raw, { subject: 'CN=x' }), 'INTERNAL', /does not verify/);
});
