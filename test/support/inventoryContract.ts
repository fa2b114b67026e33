import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import {
  type CertificateInventory,
  type CertificateRecord,
  InvalidCursorError,
  type IssuedRecord,
  type StoredCrl,
} from '../../src/inventory/CertificateInventory.js';

export interface InventoryContractOptions {
  /**
   * Another open handle (connection, pool) on the store the latest make() returned: when given, the
   * suite checks that a second instance's migrations are harmless, that it sees the first one's
   * writes, and races saveCrl across the two.
   */
  readonly openSameStore?: () => Promise<CertificateInventory>;
}

const DAY = 86_400_000;

/** A fresh serial as the service writes it: upper-case hex without leading zeros. */
const serial = (): string =>
  BigInt(`0x${randomBytes(16).toString('hex')}`)
    .toString(16)
    .toUpperCase();

function issued(over: Partial<IssuedRecord> = {}): IssuedRecord {
  const der = randomBytes(300);
  return {
    issuerKeyName: 'ca',
    issuerKeyVersion: 1,
    serialNumber: serial(),
    subject: 'CN=example.com,O=Example',
    subjectAltNames: ['dns:example.com', 'ip:10.0.0.1'],
    profile: 'server',
    notBefore: new Date(Date.UTC(2026, 0, 1)),
    notAfter: new Date(Date.UTC(2036, 0, 1)),
    sha256: createHash('sha256').update(der).digest('hex'),
    certificateDer: der,
    ...over,
  };
}

/** The IssuedRecord fields of a CertificateRecord, to compare with what was recorded. */
function issuedPart(r: CertificateRecord): IssuedRecord {
  const { issuedAt: _issuedAt, revocation: _revocation, ...rest } = r;
  return { ...rest, certificateDer: Buffer.from(rest.certificateDer) };
}

function crl(over: Partial<StoredCrl> & Pick<StoredCrl, 'crlNumber'>): StoredCrl {
  return {
    issuerKeyName: 'ca',
    issuerKeyVersion: 1,
    thisUpdate: new Date(Date.UTC(2026, 5, 1)),
    nextUpdate: new Date(Date.UTC(2026, 5, 2)),
    revokedCount: 0,
    der: randomBytes(64),
    ...over,
  };
}

/**
 * The CertificateInventory contract, registered as node:test tests: every adapter runs it.
 * `make` returns a freshly opened, empty store each call; the suite closes what it makes.
 */
export function inventoryContract(name: string, make: () => Promise<CertificateInventory>, options: InventoryContractOptions = {}): void {
  async function withInventory(fn: (inv: CertificateInventory) => Promise<void>): Promise<void> {
    const inv = await make();
    try {
      await fn(inv);
    } finally {
      await inv.close();
    }
  }

  describe(`CertificateInventory contract: ${name}`, () => {
    test('record then get returns every field; issuedAt is set; not revoked', () =>
      withInventory(async (inv) => {
        const before = Date.now();
        const full = issued({ clientId: 'pki-job', requestId: 'req-1', subjectAltNames: ['dns:a.example', 'email:x@example.com'] });
        const bare = issued({ subjectAltNames: [] });
        await inv.record(full);
        await inv.record(bare);
        const got = await inv.get('ca', full.serialNumber);
        assert.ok(got);
        assert.deepEqual(issuedPart(got), full);
        assert.ok(got.issuedAt instanceof Date);
        assert.ok(got.issuedAt.getTime() >= before - 5_000 && got.issuedAt.getTime() <= Date.now() + 5_000, 'issuedAt is the time of recording');
        assert.equal(got.revocation, undefined);
        const gotBare = await inv.get('ca', bare.serialNumber);
        assert.ok(gotBare);
        assert.deepEqual(issuedPart(gotBare), bare);
        assert.equal(gotBare.clientId, undefined);
        assert.equal(gotBare.requestId, undefined);
      }));

    test('a serial recorded twice for one issuer key is rejected; the first record stays; another key may use it', () =>
      withInventory(async (inv) => {
        const first = issued();
        await inv.record(first);
        await assert.rejects(inv.record(issued({ serialNumber: first.serialNumber, subject: 'CN=other' })));
        const got = await inv.get('ca', first.serialNumber);
        assert.equal(got?.subject, first.subject);
        await inv.record(issued({ issuerKeyName: 'other-ca', serialNumber: first.serialNumber }));
        assert.equal((await inv.get('other-ca', first.serialNumber))?.issuerKeyName, 'other-ca');
      }));

    test('an unknown serial, or one another key issued, is undefined', () =>
      withInventory(async (inv) => {
        const r = issued();
        await inv.record(r);
        assert.equal(await inv.get('ca', serial()), undefined);
        assert.equal(await inv.get('other-ca', r.serialNumber), undefined);
      }));

    test('list pages through N records exactly once, in issue order, only the asked key', () =>
      withInventory(async (inv) => {
        const n = 23;
        const mine: string[] = [];
        for (let i = 0; i < n; i++) {
          const r = issued();
          mine.push(r.serialNumber);
          await inv.record(r);
          if (i % 5 === 0) await inv.record(issued({ issuerKeyName: 'other-ca' }));
        }
        const seen: string[] = [];
        let cursor: string | undefined;
        let pages = 0;
        let added: string | undefined;
        do {
          const page = await inv.list({ issuerKeyName: 'ca', limit: 5, now: new Date(), ...(cursor !== undefined ? { cursor } : {}) });
          pages++;
          assert.ok(page.items.length <= 5);
          seen.push(...page.items.map((r) => r.serialNumber));
          cursor = page.nextCursor;
          if (pages === 1) {
            // Recorded while paging: listed once, at the end.
            const late = issued();
            added = late.serialNumber;
            await inv.record(late);
          }
        } while (cursor !== undefined && pages < 100);
        assert.ok(added);
        assert.deepEqual(seen, [...mine, added]);
        assert.equal(pages, 5);
        const all = await inv.list({ issuerKeyName: 'ca', limit: 1000, now: new Date() });
        assert.equal(all.items.length, n + 1);
        assert.equal(all.nextCursor, undefined);
        assert.deepEqual(await inv.list({ issuerKeyName: 'nobody', limit: 10, now: new Date() }), { items: [] });
      }));

    test('list filters by status (valid, expired, revoked) and expiresBefore, across pages', () =>
      withInventory(async (inv) => {
        const now = new Date(Date.UTC(2030, 0, 1));
        const valid = issued({ notAfter: new Date(now.getTime() + 30 * DAY) });
        const validLater = issued({ notAfter: new Date(now.getTime() + 400 * DAY) });
        const expired = issued({ notAfter: new Date(now.getTime() - DAY) });
        const revokedExpired = issued({ notAfter: new Date(now.getTime() - 2 * DAY) });
        const revoked = issued({ notAfter: new Date(now.getTime() + 10 * DAY) });
        for (const r of [valid, expired, revoked, validLater, revokedExpired]) await inv.record(r);
        await inv.revoke('ca', revoked.serialNumber, { revokedAt: new Date(), reason: 'keyCompromise' });
        await inv.revoke('ca', revokedExpired.serialNumber, { revokedAt: new Date(), reason: 'superseded' });
        const serials = async (q: { status?: 'valid' | 'expired' | 'revoked'; expiresBefore?: Date }): Promise<string[]> => {
          const out: string[] = [];
          let cursor: string | undefined;
          do {
            const page = await inv.list({ issuerKeyName: 'ca', limit: 1, now, ...q, ...(cursor !== undefined ? { cursor } : {}) });
            out.push(...page.items.map((r) => r.serialNumber));
            cursor = page.nextCursor;
          } while (cursor !== undefined);
          return out;
        };
        assert.deepEqual(await serials({ status: 'valid' }), [valid.serialNumber, validLater.serialNumber]);
        assert.deepEqual(await serials({ status: 'expired' }), [expired.serialNumber]);
        assert.deepEqual(await serials({ status: 'revoked' }), [revoked.serialNumber, revokedExpired.serialNumber]);
        const in60Days = new Date(now.getTime() + 60 * DAY);
        assert.deepEqual(await serials({ expiresBefore: in60Days }), [
          valid.serialNumber,
          expired.serialNumber,
          revoked.serialNumber,
          revokedExpired.serialNumber,
        ]);
        assert.deepEqual(await serials({ status: 'valid', expiresBefore: in60Days }), [valid.serialNumber]);
      }));

    test('a cursor the inventory did not hand out is InvalidCursorError', () =>
      withInventory(async (inv) => {
        await inv.record(issued());
        await inv.record(issued());
        for (const cursor of ['not-a-cursor', 'AAAA', '%%%', 'x'.repeat(300), '{"seq":1}']) {
          await assert.rejects(inv.list({ issuerKeyName: 'ca', limit: 1, now: new Date(), cursor }), InvalidCursorError, cursor);
        }
        const page = await inv.list({ issuerKeyName: 'ca', limit: 1, now: new Date() });
        assert.ok(page.nextCursor, 'a real cursor works');
        assert.equal((await inv.list({ issuerKeyName: 'ca', limit: 1, now: new Date(), cursor: page.nextCursor })).items.length, 1);
      }));

    test('revoke records time and reason, is idempotent (the first time and reason stay), undefined for a serial the key did not issue', () =>
      withInventory(async (inv) => {
        const r = issued();
        await inv.record(r);
        const first = { revokedAt: new Date(Date.UTC(2026, 6, 1, 12, 0, 0, 123)), reason: 'keyCompromise' as const };
        const a = await inv.revoke('ca', r.serialNumber, first);
        assert.ok(a);
        assert.equal(a.revokedNow, true);
        assert.deepEqual(a.record.revocation, first);
        assert.equal(a.record.serialNumber, r.serialNumber);
        const b = await inv.revoke('ca', r.serialNumber, { revokedAt: new Date(Date.UTC(2026, 7, 1)), reason: 'superseded' });
        assert.ok(b);
        assert.equal(b.revokedNow, false);
        assert.deepEqual(b.record.revocation, first);
        assert.deepEqual((await inv.get('ca', r.serialNumber))?.revocation, first);
        assert.equal(await inv.revoke('ca', serial(), first), undefined);
        assert.equal(await inv.revoke('other-ca', r.serialNumber, first), undefined);
      }));

    test('revoked() lists one key version’s revoked certificates in revocation order', () =>
      withInventory(async (inv) => {
        const v1 = [issued(), issued(), issued(), issued()];
        const v2 = [issued({ issuerKeyVersion: 2 }), issued({ issuerKeyVersion: 2 })];
        for (const r of [...v1, ...v2]) await inv.record(r);
        await inv.record(issued({ issuerKeyName: 'other-ca' }));
        const at = (m: number): Date => new Date(Date.UTC(2026, 6, 1, 0, m));
        // Revoked in an order other than issue order.
        await inv.revoke('ca', (v1[2] as IssuedRecord).serialNumber, { revokedAt: at(1), reason: 'keyCompromise' });
        await inv.revoke('ca', (v2[0] as IssuedRecord).serialNumber, { revokedAt: at(2), reason: 'superseded' });
        await inv.revoke('ca', (v1[0] as IssuedRecord).serialNumber, { revokedAt: at(3), reason: 'cessationOfOperation' });
        const one = await inv.revoked('ca', 1);
        assert.deepEqual(
          one.map((r) => [r.serialNumber, r.revocation?.reason]),
          [
            [(v1[2] as IssuedRecord).serialNumber, 'keyCompromise'],
            [(v1[0] as IssuedRecord).serialNumber, 'cessationOfOperation'],
          ],
        );
        assert.deepEqual(
          (await inv.revoked('ca', 2)).map((r) => r.serialNumber),
          [(v2[0] as IssuedRecord).serialNumber],
        );
        assert.deepEqual(await inv.revoked('ca', 3), []);
        assert.deepEqual(await inv.revoked('other-ca', 1), []);
      }));

    test('issuingVersions: the versions that issued, ascending, per key', () =>
      withInventory(async (inv) => {
        assert.deepEqual(await inv.issuingVersions('ca'), []);
        for (const v of [3, 1, 3, 2, 1]) await inv.record(issued({ issuerKeyVersion: v }));
        await inv.record(issued({ issuerKeyName: 'other-ca', issuerKeyVersion: 7 }));
        assert.deepEqual(await inv.issuingVersions('ca'), [1, 2, 3]);
        assert.deepEqual(await inv.issuingVersions('other-ca'), [7]);
      }));

    test('saveCrl stores only the next number per key version; latestCrl returns the newest with every field', () =>
      withInventory(async (inv) => {
        assert.equal(await inv.latestCrl('ca', 1), undefined);
        assert.equal(await inv.saveCrl(crl({ crlNumber: 2n })), false, 'the first number is 1');
        const c1 = crl({ crlNumber: 1n, revokedCount: 3 });
        assert.equal(await inv.saveCrl(c1), true);
        assert.deepEqual(await inv.latestCrl('ca', 1), c1);
        assert.equal(await inv.saveCrl(crl({ crlNumber: 1n })), false, 'a number is never stored twice');
        assert.equal(await inv.saveCrl(crl({ crlNumber: 3n })), false, 'no gaps');
        const c2 = crl({ crlNumber: 2n, thisUpdate: new Date(Date.UTC(2026, 5, 2)), nextUpdate: new Date(Date.UTC(2026, 5, 3)) });
        assert.equal(await inv.saveCrl(c2), true);
        assert.deepEqual(await inv.latestCrl('ca', 1), c2);
        // Numbering is per key version and per key.
        assert.equal(await inv.latestCrl('ca', 2), undefined);
        const v2 = crl({ issuerKeyVersion: 2, crlNumber: 1n });
        assert.equal(await inv.saveCrl(v2), true);
        assert.deepEqual(await inv.latestCrl('ca', 2), v2);
        assert.equal(await inv.saveCrl(crl({ issuerKeyName: 'other-ca', crlNumber: 1n })), true);
        assert.deepEqual(await inv.latestCrl('ca', 1), c2);
      }));

    test('concurrent saveCrl of one number: exactly one wins, and latestCrl is the winner', () =>
      withInventory(async (inv) => {
        assert.equal(await inv.saveCrl(crl({ crlNumber: 1n })), true);
        const candidates = Array.from({ length: 8 }, () => crl({ crlNumber: 2n }));
        const results = await Promise.all(candidates.map((c) => inv.saveCrl(c)));
        assert.equal(results.filter(Boolean).length, 1, `exactly one of ${results.join(',')}`);
        const winner = candidates[results.indexOf(true)];
        assert.deepEqual(await inv.latestCrl('ca', 1), winner);
      }));

    const openSameStore = options.openSameStore;
    if (openSameStore) {
      test('a second instance on the same store: migrations again are harmless, it sees the writes, a saveCrl race across both has one winner', () =>
        withInventory(async (inv) => {
          const other = await openSameStore();
          try {
            const r = issued();
            await inv.record(r);
            assert.equal((await other.get('ca', r.serialNumber))?.sha256, r.sha256);
            await assert.rejects(other.record(issued({ serialNumber: r.serialNumber })));
            for (let n = 1n; n <= 5n; n++) {
              const a = crl({ crlNumber: n });
              const b = crl({ crlNumber: n });
              const results = await Promise.all([inv.saveCrl(a), other.saveCrl(b)]);
              assert.equal(results.filter(Boolean).length, 1, `CRL number ${n}: exactly one of ${results.join(',')}`);
              assert.deepEqual(await other.latestCrl('ca', 1), results[0] ? a : b);
            }
          } finally {
            await other.close();
          }
        }));
    }
  });
}
