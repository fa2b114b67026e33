import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { CertificateObject } from '../../../src/hsm/CertificateStore.js';
import { CKR } from '../../../src/hsm/errors.js';
import type { AsyncPkcs11, Attribute, Handle } from '../../../src/hsm/pkcs11/AsyncPkcs11.js';
import { P11 } from '../../../src/hsm/pkcs11/constants.js';
import type { KeyEntry } from '../../../src/hsm/pkcs11/KeyCache.js';
import { Pkcs11CertificateStore, type CertificateKeys } from '../../../src/hsm/pkcs11/Pkcs11CertificateStore.js';
import { ReadWriteLock } from '../../../src/hsm/pkcs11/ReadWriteLock.js';
import type { Sessions } from '../../../src/hsm/pkcs11/TokenConnection.js';
import { issueCertificate } from '../../../src/pki/issueCertificate.js';
import { parseCertificatePem } from '../../../src/pki/parsePem.js';
import { makeCa, type CaFixture } from '../pki/caFixture.js';
import { TempDir, opensslCsr } from '../pki/openssl.js';

/** An in-memory token: objects are attribute lists; every call is logged. */
class FakeToken {
  readonly objects = new Map<string, Attribute[]>();
  readonly log: string[] = [];
  private next = 1;
  failCreateAt: number | undefined;
  private creates = 0;

  readonly p11 = {
    findObjects: async (_s: Handle, template: readonly Attribute[]): Promise<Handle[]> =>
      [...this.objects.entries()]
        .filter(([, attrs]) => template.every((t) => attrs.some((a) => a.type === t.type && sameValue(a.value, t.value))))
        .map(([h]) => Buffer.from(h, 'hex')),
    getAttributes: async (_s: Handle, o: Handle, types: readonly number[]): Promise<Attribute[]> => {
      const attrs = this.objects.get(o.toString('hex')) ?? [];
      return types.map((type) => ({ type, value: attrs.find((a) => a.type === type)?.value as Buffer | undefined }));
    },
    createObject: async (_s: Handle, template: readonly Attribute[]): Promise<Handle> => {
      if (++this.creates === this.failCreateAt) throw Object.assign(new Error('C_CreateObject failed'), { code: CKR.DEVICE_MEMORY, method: 'C_CreateObject' });
      const h = Buffer.alloc(4);
      h.writeUInt32BE(this.next++);
      this.objects.set(
        h.toString('hex'),
        template.map((a) => ({ type: a.type, value: typeof a.value === 'string' ? Buffer.from(a.value) : a.value })),
      );
      this.log.push(`create ${label(template)}`);
      return h;
    },
    destroyObject: async (_s: Handle, o: Handle): Promise<void> => {
      this.log.push(`destroy ${label(this.objects.get(o.toString('hex'))!)}`);
      this.objects.delete(o.toString('hex'));
    },
  } as unknown as AsyncPkcs11;
}

function sameValue(a: Attribute['value'], b: Attribute['value']): boolean {
  if (Buffer.isBuffer(a) || Buffer.isBuffer(b))
    return Buffer.isBuffer(a) && Buffer.isBuffer(b) ? a.equals(b) : Buffer.from(String(a ?? '')).equals(Buffer.from(String(b ?? '')));
  return a === b;
}
const label = (attrs: readonly Attribute[]): string => {
  const v = attrs.find((a) => a.type === P11.CKA_LABEL)?.value;
  return Buffer.isBuffer(v) ? v.toString() : String(v);
};

const entry = { name: 'ca', version: 2, label: 'ca/v2', id: Buffer.from('0a0b0c', 'hex') } as KeyEntry;
let refreshes = 0;
const sessions: Sessions = { withSession: <T>(fn: (s: Handle) => Promise<T>) => fn(Buffer.from('01', 'hex')) };
const keys: CertificateKeys = { resolve: async () => entry, refresh: async () => void refreshes++, info: () => undefined, objectLock: new ReadWriteLock() };

let dir: TempDir;
let ca: CaFixture;
let older: CertificateObject;
let newer: CertificateObject;
let intermediate: CertificateObject;
let root: CertificateObject;

const objectOf = (pem: string, serial: number): CertificateObject => {
  const c = parseCertificatePem(pem);
  return { der: c.der, subject: c.subjectDer, issuer: c.issuerDer, serialNumber: Buffer.from([0x02, 0x01, serial]) };
};

before(async () => {
  dir = await TempDir.create();
  ca = await makeCa(dir, 'store', 'ECC_NIST_P256');
  const csrPem = await opensslCsr(dir, { name: 'leaf', subject: '/CN=leaf.example.com', addext: ['subjectAltName=DNS:leaf.example.com'] });
  const issue = (daysAgo: number) =>
    issueCertificate(
      ca.signer,
      { certificatePem: ca.intPem, chainPem: ca.rootPem },
      { csrPem, profile: 'tls-server', validityDays: 30, now: new Date(Date.now() - daysAgo * 86_400_000) },
    );
  older = objectOf((await issue(2)).certificatePem, 1);
  newer = objectOf((await issue(1)).certificatePem, 2);
  intermediate = objectOf(ca.intPem, 3);
  root = objectOf(ca.rootPem, 4);
});
after(async () => {
  await ca?.signer.close();
  await dir?.remove();
});

test("put stores the certificate and its chain as public token certificate objects with the key's CKA_ID; get reads them back in order", async () => {
  const token = new FakeToken();
  const store = new Pkcs11CertificateStore(sessions, keys, token.p11);
  assert.equal(await store.getCertificates('ca', 2), undefined);
  refreshes = 0;
  await store.putCertificates('ca', 2, newer, [intermediate, root]);
  assert.ok(refreshes >= 1, 'the key cache is refreshed so hasCertificate turns true');
  assert.deepEqual(token.log, ['create ca/v2', 'create ca/v2/chain/1', 'create ca/v2/chain/2']);
  for (const attrs of token.objects.values()) {
    const get = (t: number) => attrs.find((a) => a.type === t)?.value;
    assert.equal(get(P11.CKA_CLASS), P11.CKO_CERTIFICATE);
    assert.equal(get(P11.CKA_CERTIFICATE_TYPE), P11.CKC_X_509);
    assert.equal(get(P11.CKA_TOKEN), true);
    assert.equal(get(P11.CKA_PRIVATE), false);
    assert.deepEqual(get(P11.CKA_ID), entry.id);
  }
  const first = [...token.objects.values()][0]!;
  assert.deepEqual(first.find((a) => a.type === P11.CKA_SUBJECT)?.value, newer.subject);
  assert.deepEqual(first.find((a) => a.type === P11.CKA_ISSUER)?.value, newer.issuer);
  assert.deepEqual(first.find((a) => a.type === P11.CKA_SERIAL_NUMBER)?.value, newer.serialNumber);
  const got = await store.getCertificates('ca', 2);
  assert.deepEqual(got, { certificate: newer.der, chain: [intermediate.der, root.der] });
});

test('a new put creates the new objects before destroying the old ones', async () => {
  const token = new FakeToken();
  const store = new Pkcs11CertificateStore(sessions, keys, token.p11);
  await store.putCertificates('ca', 2, older, [intermediate]);
  token.log.length = 0;
  await store.putCertificates('ca', 2, newer, [intermediate, root]);
  assert.deepEqual(token.log, ['create ca/v2', 'create ca/v2/chain/1', 'create ca/v2/chain/2', 'destroy ca/v2', 'destroy ca/v2/chain/1']);
  assert.equal(token.objects.size, 3);
  assert.deepEqual(await store.getCertificates('ca', 2), { certificate: newer.der, chain: [intermediate.der, root.der] });
});

test('a put that fails half way removes what it created and leaves the old certificate', async () => {
  const token = new FakeToken();
  const store = new Pkcs11CertificateStore(sessions, keys, token.p11);
  await store.putCertificates('ca', 2, older, [intermediate]);
  token.failCreateAt = 4; // the new set's second object
  await assert.rejects(store.putCertificates('ca', 2, newer, [intermediate, root]), /C_CreateObject failed/);
  assert.deepEqual(await store.getCertificates('ca', 2), { certificate: older.der, chain: [intermediate.der] });
  assert.equal(token.objects.size, 2);
});

test('after a replacement interrupted before the old objects were destroyed, get returns the newer certificate', async () => {
  const token = new FakeToken();
  const store = new Pkcs11CertificateStore(sessions, keys, token.p11);
  // Both sets on the token, as a crash between creating and destroying would leave them.
  await store.putCertificates('ca', 2, newer, [intermediate]);
  const kept = new Map(token.objects);
  await store.putCertificates('ca', 2, older, [intermediate]);
  for (const [h, a] of kept) token.objects.set(h, a);
  assert.equal(token.objects.size, 4);
  assert.deepEqual(await store.getCertificates('ca', 2), { certificate: newer.der, chain: [intermediate.der] });
});

test("a certificate another tool stored with the key's CKA_ID and its own label is found when there is none of ours", async () => {
  const token = new FakeToken();
  await token.p11.createObject(Buffer.alloc(0), [
    { type: P11.CKA_CLASS, value: P11.CKO_CERTIFICATE },
    { type: P11.CKA_TOKEN, value: true },
    { type: P11.CKA_ID, value: entry.id },
    { type: P11.CKA_LABEL, value: 'imported by p11tool' },
    { type: P11.CKA_VALUE, value: older.der },
  ]);
  const store = new Pkcs11CertificateStore(sessions, keys, token.p11);
  assert.deepEqual(await store.getCertificates('ca', 2), { certificate: older.der, chain: [] });
});
