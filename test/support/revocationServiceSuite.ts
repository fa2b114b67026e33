import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import type { CertificateInventory } from '../../src/inventory/CertificateInventory.js';
import { issueCertificate } from '../../src/pki/issueCertificate.js';
import type { PkiService } from '../../src/service/PkiService.js';
import { CRL_RECHECK_MS, type InventoryRunner, RevocationService } from '../../src/service/RevocationService.js';
import { makeCa, type CaFixture } from '../unit/pki/caFixture.js';
import { openssl, opensslCsr, TempDir } from '../unit/pki/openssl.js';
import { toPem } from '../../src/pki/pem.js';

/**
 * RevocationService on a real inventory (SQLite or PostgreSQL) and a real (software) CA key, with the HSM and the
 * database counted: a burst of CRL fetches costs one signature and no query beyond the periodic
 * check; two services on one database serve the same numbered CRL.
 */

/** `open(dir)`: a new connection to the suite's one database (the same database on every call; `dir` a scratch directory). */
export function revocationServiceSuite(name: string, open: (dir: string) => Promise<CertificateInventory>): void {
  describe(`RevocationService on ${name}`, () => {
    let dir: TempDir;
    let ca: CaFixture;
    let inventory: CertificateInventory;
    let second: CertificateInventory;
    const KEY = 'int';
    let signatures = 0;
    let queries = 0;
    let clock = Date.parse('2027-03-01T12:00:00Z');

    const runner = (inv: CertificateInventory): InventoryRunner => ({
      run: (_what, op) => {
        queries++;
        return op(inv);
      },
    });

    /** The two PkiService methods revocation uses, on the software CA key (version 1), counting signatures. */
    const pki = (): PkiService =>
      ({
        caSigner: async () => ({
          keyVersion: 1,
          certificatePem: ca.intPem,
          signer: {
            ...ca.signer,
            keySpec: ca.signer.keySpec,
            publicKey: ca.signer.publicKey,
            sign: (alg: Parameters<CaFixture['signer']['sign']>[0], digest: Buffer) => {
              signatures++;
              return ca.signer.sign(alg, digest);
            },
          },
        }),
        caCertificates: async () => [{ keyVersion: 1, certificatePem: ca.intPem }],
      }) as unknown as PkiService;

    const service = (inv: CertificateInventory = inventory): RevocationService =>
      new RevocationService(pki(), runner(inv), { crlValidityHours: 24, now: () => new Date(clock) });

    async function issueAndRecord(leaf: string): Promise<string> {
      const issued = await issueCertificate(
        ca.signer,
        { certificatePem: ca.intPem, chainPem: ca.rootPem },
        { csrPem: await dir.read('leaf.csr'), profile: 'tls-client', validityDays: 30, now: new Date(clock) },
      );
      await dir.write(`${leaf}.pem`, issued.certificatePem);
      const der = new X509Certificate(issued.certificatePem).raw;
      const serialNumber = issued.serialNumber.replace(/^0+(?=.)/, '');
      await inventory.record({
        issuerKeyName: KEY,
        issuerKeyVersion: 1,
        serialNumber,
        subject: 'CN=leaf',
        subjectAltNames: [],
        profile: 'tls-client',
        notBefore: new Date(issued.notBefore),
        notAfter: new Date(issued.notAfter),
        sha256: 'ab'.repeat(32),
        certificateDer: der,
      });
      return serialNumber;
    }

    before(async () => {
      dir = await TempDir.create();
      ca = await makeCa(dir, 'svc', 'ECC_NIST_P256');
      await opensslCsr(dir, { name: 'leaf', subject: '/CN=leaf' });
      inventory = await open(dir.path);
      second = await open(dir.path);
    });
    after(async () => {
      await inventory?.close();
      await second?.close();
      await ca?.signer.close();
      await dir?.remove();
    });

    test('a burst of CRL fetches: one HSM signature, and the database only on the periodic check', async () => {
      const svc = service();
      await assert.rejects(svc.crl(KEY, undefined, Infinity), { code: 'NOT_FOUND' });
      const serial = await issueAndRecord('a');
      signatures = 0;
      queries = 0;
      const burst = await Promise.all(Array.from({ length: 50 }, () => svc.crl(KEY, undefined, Infinity)));
      assert.equal(signatures, 1, 'one CRL signed for 50 concurrent fetches');
      assert.ok(burst.every((c) => c.der.equals(burst[0]!.der) && c.crlNumber === 1n));
      const afterBurst = queries;
      assert.ok(afterBurst <= 6, `${afterBurst} inventory calls for the burst`);
      for (let i = 0; i < 100; i++) await svc.crl(KEY, undefined, Infinity);
      assert.equal(queries, afterBurst, 'within CRL_RECHECK_MS: no query');
      assert.equal(signatures, 1);
      clock += CRL_RECHECK_MS;
      await svc.crl(KEY, undefined, Infinity);
      assert.equal(signatures, 1, 'the periodic check finds the stored CRL current: no new signature');
      assert.ok(queries > afterBurst);

      // A revocation on this service: the next CRL at once, number 2, listing it (openssl reads it).
      const out = await svc.revoke(KEY, serial, 'keyCompromise', Infinity);
      assert.equal(out.revokedNow, true);
      const crl = await svc.crl(KEY, 1, Infinity);
      assert.equal(crl.crlNumber, 2n);
      await dir.write('svc.crl.pem', toPem('X509 CRL', crl.der));
      const v = await openssl(dir.path, 'crl', '-in', 'svc.crl.pem', '-noout', '-verify', '-CAfile', ca.intFile);
      assert.match(v.stdout + v.stderr, /verify OK/);
      await dir.write('svc-chain.pem', ca.rootPem + ca.intPem);
      const check = await openssl(dir.path, 'verify', '-crl_check', '-CRLfile', 'svc.crl.pem', '-CAfile', 'svc-chain.pem', 'a.pem');
      assert.match(check.stdout + check.stderr, /certificate revoked/);
    });

    test('two services on one database: a revocation on one is served by the other within the recheck, same number and bytes', async () => {
      const one = service();
      // Another instance: its own connection (pool) to the same database.
      const other = service(second);
      const before1 = await one.crl(KEY, undefined, Infinity);
      const before2 = await other.crl(KEY, undefined, Infinity);
      assert.equal(before1.crlNumber, before2.crlNumber);
      const serial = await issueAndRecord('b');
      await one.revoke(KEY, serial, 'superseded', Infinity);
      const fromOne = await one.crl(KEY, undefined, Infinity);
      assert.equal(fromOne.crlNumber, before1.crlNumber + 1n);
      // The other still serves its copy until its recheck, then exactly the stored CRL (it signs nothing).
      assert.equal((await other.crl(KEY, undefined, Infinity)).crlNumber, before2.crlNumber);
      clock += CRL_RECHECK_MS;
      signatures = 0;
      const fromOther = await other.crl(KEY, undefined, Infinity);
      assert.equal(fromOther.crlNumber, fromOne.crlNumber);
      assert.ok(fromOther.der.equals(fromOne.der));
      assert.equal(signatures, 0);

      // Near nextUpdate both regenerate; the number is stored once (one wins saveCrl, the other serves its CRL).
      clock += 23 * 3_600_000;
      const [x, y] = await Promise.all([one.crl(KEY, undefined, Infinity), other.crl(KEY, undefined, Infinity)]);
      assert.equal(x.crlNumber, fromOne.crlNumber + 1n);
      assert.equal(y.crlNumber, x.crlNumber);
      assert.ok(x.der.equals(y.der));
      assert.equal((await inventory.latestCrl(KEY, 1))?.crlNumber, x.crlNumber);
    });

    test('revoke: idempotent, NOT_FOUND for a serial the key did not issue, INVALID_ARGUMENT for an unknown reason', async () => {
      const svc = service();
      const serial = await issueAndRecord('c');
      const first = await svc.revoke(KEY, serial, 'cessationOfOperation', Infinity);
      clock += 1000;
      const again = await svc.revoke(KEY, serial, 'keyCompromise', Infinity);
      assert.deepEqual(again, { ...first, revokedNow: false });
      await assert.rejects(svc.revoke(KEY, 'ABCDEF', 'keyCompromise', Infinity), { code: 'NOT_FOUND' });
      await assert.rejects(svc.revoke('other', serial, 'keyCompromise', Infinity), { code: 'NOT_FOUND' });
      await assert.rejects(svc.revoke(KEY, serial, 'lost', Infinity), { code: 'INVALID_ARGUMENT' });
      await assert.rejects(svc.crl(KEY, 2, Infinity), { code: 'NOT_FOUND' });
    });
  });
}
