import { serialForDisplay } from '../pki/serialNumber.js';
import { REVOCATION_REASONS, type CertificateInventory, type RevocationReason, type StoredCrl } from '../inventory/CertificateInventory.js';
import { invalid, notFound } from '../errors.js';
import { createCrl } from '../pki/createCrl.js';
import { certIdMatches, certIdSerial, createOcspResponse, ocspErrorResponse, OCSPResponseStatus, parseOcspRequest, type OcspCertStatus } from '../pki/ocsp.js';
import { parseCertificatePem, type ParsedCertificate } from '../pki/parsePem.js';
import type { PkiFacts, PkiObserver, PkiService } from './PkiService.js';
import { wholeSeconds } from '../pki/wholeSeconds.js';

/**
 * The inventory as the service reaches it: each operation through run(), which turns a database
 * failure into a 503 (InventoryAccess does; it also reopens a database that was down).
 */
export interface InventoryRunner {
  run<T>(what: string, op: (inventory: CertificateInventory) => Promise<T>): Promise<T>;
}

export interface RevocationSettings {
  /** CRL_VALIDITY_HOURS: nextUpdate - thisUpdate of every CRL. */
  readonly crlValidityHours: number;
  /** For tests: the clock. */
  readonly now?: () => Date;
}

export interface RevokeOutput {
  readonly serialNumber: string;
  readonly issuerKeyVersion: number;
  readonly revokedAt: string;
  readonly reason: RevocationReason;
  /** False when the certificate was already revoked (the first time and reason stand). */
  readonly revokedNow: boolean;
}

export interface CrlOutput {
  readonly keyVersion: number;
  readonly crlNumber: bigint;
  readonly thisUpdate: Date;
  readonly nextUpdate: Date;
  readonly der: Buffer;
}

/**
 * How long a worker serves a CRL from memory before asking the database whether a newer one was
 * stored (one small query: the latest CRL of that key version). A revocation on this worker drops
 * its copy at once; other workers and instances see the CRL the revoking one stored within this.
 */
export const CRL_RECHECK_MS = 1000;
/**
 * How long before counting the revoked certificates again (a larger query): this catches a
 * revocation whose CRL the revoking instance could not sign (the HSM was down, say).
 */
export const CRL_FULL_CHECK_MS = 30_000;
/** How long an OCSP answer may be cached by a relying party (its nextUpdate); answers are made on each request. */
export const OCSP_VALIDITY_MS = 60 * 60 * 1000;
/** A key version's CA certificates are read from the token at most this often for OCSP. */
const CA_CERTIFICATES_TTL_MS = 60_000;
const CA_CERTIFICATES_MISS_MS = 1000;

interface CachedCrl {
  readonly crl: StoredCrl;
  checkedAt: number;
  fullyCheckedAt: number;
}

export function isRevocationReason(v: unknown): v is RevocationReason {
  return typeof v === 'string' && Object.hasOwn(REVOCATION_REASONS, v);
}

/**
 * Revocation for the certificates a key issued: revoking (recorded in the inventory), CRLs per
 * key version (signed on the HSM, stored so that every instance serves the same numbered CRL,
 * cached in memory), and OCSP answers from the inventory, signed by the issuing key version.
 */
export class RevocationService {
  private readonly crls = new Map<string, CachedCrl>();
  /** The newest key version that issued, per key name, and when the database said so. */
  private readonly newestIssuing = new Map<string, { version: number; at: number }>();
  private readonly versionLookups = new Map<string, Promise<readonly number[]>>();
  private readonly building = new Map<string, Promise<CachedCrl>>();
  private readonly caCertificates = new Map<string, { at: number; certs: { keyVersion: number; cert: ParsedCertificate }[] }>();
  private readonly now: () => Date;

  constructor(
    private readonly pki: PkiService,
    private readonly inventory: InventoryRunner,
    private readonly settings: RevocationSettings,
  ) {
    this.now = settings.now ?? (() => new Date());
  }

  /** Idempotent; NOT_FOUND when the key did not issue the serial. Then a fresh CRL is stored (best effort: a failure leaves it to the next fetch). */
  /** `serialNumber`: upper-case hex without leading zeros (validation.ts parseSerial), as the inventory keeps it. */
  async revoke(name: string, serialNumber: string, reason: unknown, deadline: number, observe: PkiObserver = () => undefined): Promise<RevokeOutput> {
    observe({ serialNumber: serialForDisplay(serialNumber) });
    if (!isRevocationReason(reason)) throw invalid(`reason: must be one of ${Object.keys(REVOCATION_REASONS).join(', ')}`);
    const out = await this.inventory.run('revoke', (inv) => inv.revoke(name, serialNumber, { revokedAt: this.now(), reason }));
    if (!out) throw notFound(`key '${name}' did not issue a certificate with serial number ${serialNumber}`);
    const { record, revokedNow } = out;
    observe({ keyVersion: record.issuerKeyVersion, subject: record.subject } satisfies PkiFacts);
    // revoke() returns the record with its revocation; the contract keeps the first one on a repeat.
    const revocation = record.revocation ?? { revokedAt: this.now(), reason };
    if (revokedNow) {
      const key = cacheKey(name, record.issuerKeyVersion);
      // A build that started before the revocation may not list it: let it finish, then check again.
      await this.building.get(key)?.catch(() => undefined);
      this.crls.delete(key);
      await this.currentCrl(name, record.issuerKeyVersion, deadline).catch(() => undefined);
    }
    return {
      serialNumber: serialForDisplay(record.serialNumber),
      issuerKeyVersion: record.issuerKeyVersion,
      revokedAt: revocation.revokedAt.toISOString(),
      reason: revocation.reason,
      revokedNow,
    };
  }

  /** The current CRL of a key version (default: the newest version that issued). NOT_FOUND when it never issued. */
  async crl(name: string, keyVersion: number | undefined, deadline: number): Promise<CrlOutput> {
    const now = this.now().getTime();
    const latest = this.newestIssuing.get(name);
    const version = keyVersion ?? (latest && now - latest.at < CRL_RECHECK_MS ? latest.version : undefined);
    const cached = version !== undefined ? this.crls.get(cacheKey(name, version)) : undefined;
    // The common case, a burst of fetches: no database query and no HSM call.
    if (cached && this.fresh(cached.crl) && now - cached.checkedAt < CRL_RECHECK_MS) return output(cached.crl);
    if (version !== undefined && cached) return output((await this.currentCrl(name, version, deadline)).crl);
    const versions = await this.issuingVersions(name);
    if (versions.length === 0) throw notFound(`key '${name}' has not issued any certificate: it has no CRL`);
    const newest = versions[versions.length - 1] as number;
    this.newestIssuing.set(name, { version: newest, at: now });
    if (keyVersion !== undefined && !versions.includes(keyVersion)) {
      throw notFound(`key '${name}' version ${keyVersion} has not issued any certificate: it has no CRL`);
    }
    return output((await this.currentCrl(name, keyVersion ?? newest, deadline)).crl);
  }

  /** One lookup per key name at a time: a cold burst of fetches shares it. */
  private issuingVersions(name: string): Promise<readonly number[]> {
    let p = this.versionLookups.get(name);
    if (!p) {
      p = this.inventory.run('issuingVersions', (inv) => inv.issuingVersions(name)).finally(() => this.versionLookups.delete(name));
      this.versionLookups.set(name, p);
    }
    return p;
  }

  /** Whether the CRL can still be served: before nextUpdate minus a margin (a quarter of the validity, at most an hour). */
  private fresh(crl: StoredCrl): boolean {
    const validity = crl.nextUpdate.getTime() - crl.thisUpdate.getTime();
    return this.now().getTime() < crl.nextUpdate.getTime() - Math.min(validity / 4, 3_600_000);
  }

  /** One check (and at most one build) per key version at a time: concurrent fetches wait for it. */
  private currentCrl(name: string, version: number, deadline: number): Promise<CachedCrl> {
    const key = cacheKey(name, version);
    let p = this.building.get(key);
    if (!p) {
      p = this.checkOrBuild(name, version, deadline).finally(() => this.building.delete(key));
      this.building.set(key, p);
    }
    return p;
  }

  private async checkOrBuild(name: string, version: number, deadline: number): Promise<CachedCrl> {
    const key = cacheKey(name, version);
    const now = this.now().getTime();
    const cached = this.crls.get(key);
    const stored = await this.inventory.run('latestCrl', (inv) => inv.latestCrl(name, version));
    const sameAsCached = cached && stored && stored.crlNumber === cached.crl.crlNumber;
    if (stored && this.fresh(stored) && sameAsCached && now - cached.fullyCheckedAt < CRL_FULL_CHECK_MS) {
      cached.checkedAt = now;
      return cached;
    }
    const revoked = await this.inventory.run('revoked', (inv) => inv.revoked(name, version));
    if (stored && this.fresh(stored) && stored.revokedCount === revoked.length) return this.remember(key, stored, now);

    const { signer, certificatePem } = await this.pki.caSigner(name, version, deadline);
    const thisUpdate = wholeSeconds(now);
    const nextUpdate = new Date(thisUpdate.getTime() + this.settings.crlValidityHours * 3_600_000);
    const crlNumber = (stored?.crlNumber ?? 0n) + 1n;
    const der = await createCrl(signer, certificatePem, {
      crlNumber,
      thisUpdate,
      nextUpdate,
      revoked: revoked.map((r) => ({
        serialNumber: r.serialNumber,
        // revoked() lists only revoked records.
        revokedAt: r.revocation?.revokedAt ?? thisUpdate,
        reason: r.revocation?.reason ?? 'unspecified',
      })),
    });
    const crl: StoredCrl = { issuerKeyName: name, issuerKeyVersion: version, crlNumber, thisUpdate, nextUpdate, revokedCount: revoked.length, der };
    if (await this.inventory.run('saveCrl', (inv) => inv.saveCrl(crl))) return this.remember(key, crl, now);
    // Another instance stored this number first: serve theirs, so that every instance serves the same CRL.
    const theirs = await this.inventory.run('latestCrl', (inv) => inv.latestCrl(name, version));
    return this.remember(key, theirs ?? crl, now);
  }

  private remember(key: string, crl: StoredCrl, now: number): CachedCrl {
    const entry = { crl, checkedAt: now, fullyCheckedAt: now };
    this.crls.set(key, entry);
    return entry;
  }

  /**
   * An OCSP answer (DER OCSPResponse) for a DER OCSPRequest. A request that is not one throws
   * INVALID_ARGUMENT (the route answers 400 with a `malformedRequest` OCSPResponse); a request
   * about certificates of another CA gets `unauthorized` (RFC 5019 §2.2.3).
   */
  async ocsp(name: string, requestDer: Buffer, deadline: number): Promise<Buffer> {
    const request = parseOcspRequest(requestDer);
    // The first CertID naming one of the key's CA certificates picks the version that signs.
    const find = (cas: readonly { keyVersion: number; cert: ParsedCertificate }[]) => {
      for (const id of request.certIds) {
        const m = cas.find((c) => certIdMatches(id, c.cert));
        if (m) return m;
      }
      return undefined;
    };
    // No match in the cached list: a certificate attached since may be the one (read the token again, at most once a second).
    const match = find(await this.caCertificatesOf(name, deadline)) ?? find(await this.caCertificatesOf(name, deadline, CA_CERTIFICATES_MISS_MS));
    if (!match) return ocspErrorResponse(OCSPResponseStatus.unauthorized);
    const { keyVersion, cert } = match;
    const responses: { certId: (typeof request.certIds)[number]; status: OcspCertStatus }[] = [];
    for (const certId of request.certIds) {
      let status: OcspCertStatus = { status: 'unknown' };
      if (certIdMatches(certId, cert)) {
        const record = await this.inventory.run('get', (inv) => inv.get(name, certIdSerial(certId)));
        if (record && record.issuerKeyVersion === keyVersion) {
          status = record.revocation ? { status: 'revoked', revokedAt: record.revocation.revokedAt, reason: record.revocation.reason } : { status: 'good' };
        }
      }
      responses.push({ certId, status });
    }
    const { signer, certificatePem } = await this.pki.caSigner(name, keyVersion, deadline);
    const now = this.now();
    return createOcspResponse(signer, certificatePem, {
      responses,
      ...(request.nonce ? { nonce: request.nonce } : {}),
      producedAt: now,
      thisUpdate: now,
      nextUpdate: new Date(now.getTime() + OCSP_VALIDITY_MS),
    });
  }

  private async caCertificatesOf(
    name: string,
    deadline: number,
    maxAgeMs = CA_CERTIFICATES_TTL_MS,
  ): Promise<{ keyVersion: number; cert: ParsedCertificate }[]> {
    const hit = this.caCertificates.get(name);
    if (hit && this.now().getTime() - hit.at < maxAgeMs) return hit.certs;
    const certs = (await this.pki.caCertificates(name, deadline)).map((c) => ({ keyVersion: c.keyVersion, cert: parseCertificatePem(c.certificatePem) }));
    this.caCertificates.set(name, { at: this.now().getTime(), certs });
    return certs;
  }
}

const cacheKey = (name: string, version: number): string => `${name}\u0000${version}`;

const output = (crl: StoredCrl): CrlOutput => ({
  keyVersion: crl.issuerKeyVersion,
  crlNumber: crl.crlNumber,
  thisUpdate: crl.thisUpdate,
  nextUpdate: crl.nextUpdate,
  der: crl.der,
});
