import type { KeyObject } from 'node:crypto';
import type { SigningAlgorithm } from '../crypto/algorithms.js';
import type { CancelSignal, KeyVersion } from '../hsm/KeyManager.js';
import type { CertificateObject, CertificateStore, StoredCertificates } from '../hsm/CertificateStore.js';
import { ServiceError, conflict, notFound } from '../errors.js';
import type { CertificateRecord, CertificateStatus, ListPage } from '../inventory/CertificateInventory.js';
import {
  checkIssuerCertificate,
  createCsr,
  formatDistinguishedName,
  issueCertificate,
  parseCsrPem,
  parseSubjectAltNames,
  type CertificateProfile,
  type IssuedCertificate,
  type IssuerCertificateInput,
  type IssuerFacts,
  type ParsedCertificate,
  type PkiSigner,
  type SubjectAltNamesInput,
} from '../pki/index.js';
import { sequenceElements } from '../pki/der.js';
import { canonicalSerial } from '../pki/serialNumber.js';
import { toPem } from '../pki/pem.js';
import { Cancellation, withDeadline } from './deadline.js';
import { InventoryAccess } from './InventoryAccess.js';
import { pickVersion, type SigningService } from './SigningService.js';

export interface CsrInput {
  readonly subject: string;
  readonly keyVersion?: number;
  readonly ca?: { readonly pathLength?: number };
  readonly subjectAltNames?: SubjectAltNamesInput;
}

export interface AttachInput {
  readonly certificatePem: string;
  readonly chainPem?: string;
  readonly keyVersion?: number;
}

export interface IssueInput {
  readonly csrPem: string;
  readonly profile: CertificateProfile;
  readonly validityDays: number;
  readonly subjectAltNames?: SubjectAltNamesInput;
}

/** Who asked, for the inventory's record. */
export interface IssueContext {
  /** The authenticated client (absent when auth is off). */
  readonly clientId?: string;
  readonly requestId?: string;
}

export interface ListIssuedInput {
  readonly status?: CertificateStatus;
  readonly expiresBefore?: Date;
  readonly limit: number;
  readonly cursor?: string;
}

export interface KeyCertificate {
  readonly keyVersion: number;
  readonly certificatePem: string;
  readonly chainPem: string;
}

/** CRL_URL_BASE / OCSP_URL_BASE: where relying parties find revocation, written into every issued certificate. */
export interface RevocationUrlBases {
  readonly crlUrlBase?: string;
  readonly ocspUrlBase?: string;
}

/** A key version that can sign as a CA: its signer and the CA certificate attached to it. */
export interface CaSigner {
  readonly keyVersion: number;
  readonly signer: PkiSigner;
  readonly certificatePem: string;
}

export interface IssueOutput extends IssuedCertificate {
  /** The version of the CA key that signed. */
  readonly issuerKeyVersion: number;
}

/**
 * What a PKI operation learns for the audit trail, reported as it becomes known (an operation that
 * fails half-way has reported what it knew): the key version, what the HSM signed, the certificate.
 */
export interface PkiFacts {
  readonly keyVersion?: number;
  readonly algorithm?: SigningAlgorithm;
  readonly digest?: Buffer;
  readonly serialNumber?: string;
  readonly subject?: string;
}
export type PkiObserver = (facts: PkiFacts) => void;
const ignore: PkiObserver = () => undefined;

/** The token attributes of a certificate, cut out of its DER by the ASN.1 library. */
function certificateObject(c: ParsedCertificate): CertificateObject {
  // The ASN.1 library keeps the raw bytes of what it parsed; a ParsedCertificate is always parsed from DER.
  const raw = c.asn.tbsCertificateRaw;
  if (raw === undefined) throw new Error('certificateObject: the certificate has no raw TBSCertificate (not parsed from DER)');
  const tbs = sequenceElements(Buffer.from(raw));
  // TBSCertificate: [0] version (absent for v1), serialNumber, ...; 0xa0 is the [0] tag.
  const serialNumber = tbs[tbs[0]?.[0] === 0xa0 ? 1 : 0];
  // parsePem accepted the certificate, so its TBSCertificate has a serial number.
  if (serialNumber === undefined) throw new Error('certificateObject: the TBSCertificate has no serialNumber element');
  return { der: c.der, subject: c.subjectDer, issuer: c.issuerDer, serialNumber };
}

const pemOf = (stored: StoredCertificates): IssuerCertificateInput & { chainPem: string } => ({
  certificatePem: toPem('CERTIFICATE', stored.certificate),
  chainPem: stored.chain.map((d) => toPem('CERTIFICATE', d)).join(''),
});

/**
 * The CRL distribution point and OCSP URL of certificates issued by version `keyVersion` of `name`.
 * The CRL URL names the version: each version has its own CRL (signed by that version's key), and
 * the default one is the newest issuing version's, which does not cover certificates of older ones.
 */
export function revocationUrls(name: string, keyVersion: number, urls: RevocationUrlBases): { crlUrl?: string; ocspUrl?: string } {
  const key = encodeURIComponent(name);
  return {
    ...(urls.crlUrlBase !== undefined ? { crlUrl: `${urls.crlUrlBase.replace(/\/+$/, '')}/v1/keys/${key}/crl?keyVersion=${keyVersion}` } : {}),
    ...(urls.ocspUrlBase !== undefined ? { ocspUrl: `${urls.ocspUrlBase.replace(/\/+$/, '')}/ocsp/${key}` } : {}),
  };
}

/** A key version's stored issuer certificate as checked once: reused while the key, the certificate and the chain are these and none has expired. */
interface CheckedIssuer {
  readonly publicKey: KeyObject;
  readonly certificate: Buffer;
  readonly chain: readonly Buffer[];
  readonly facts: IssuerFacts;
}

const sameDers = (a: readonly Buffer[], b: readonly Buffer[]): boolean => a.length === b.length && a.every((d, i) => b[i]?.equals(d) === true);

/**
 * The intermediate CA on the HSM: CSRs for a key version, its CA certificate kept on the token,
 * and certificates issued under it. Every signature is a SigningService.sign of a digest, so
 * the retries, circuit breaker and deadline of /sign apply to PKI work too.
 */
export class PkiService {
  /** By key name and version: parsing the issuer certificate and verifying its chain is most of an issuance's CPU otherwise. */
  private readonly checkedIssuers = new Map<string, CheckedIssuer>();

  constructor(
    private readonly signing: SigningService,
    private readonly store: CertificateStore,
    /** ISSUANCE_DB: every issued certificate is recorded there before it is returned. */
    private readonly inventory: InventoryAccess = new InventoryAccess({}),
    private readonly urls: RevocationUrlBases = {},
  ) {}

  private async version(name: string, keyVersion: number | undefined, deadline: number): Promise<KeyVersion> {
    return pickVersion(await this.signing.getKey(name, deadline, keyVersion), keyVersion);
  }

  private signer(name: string, v: KeyVersion, deadline: number, observe: PkiObserver): PkiSigner {
    return {
      keySpec: v.keySpec,
      publicKey: v.publicKey,
      sign: async (algorithm, digest) => {
        observe({ algorithm, digest });
        return (await this.signing.sign({ keyName: name, keyVersion: v.version, algorithm, digest }, deadline)).signature;
      },
    };
  }

  /** checkIssuerCertificate for the version's stored certificates, done again only when they (or the key) changed or one expired. */
  private issuerFacts(name: string, v: KeyVersion, stored: StoredCertificates): IssuerFacts {
    const key = `${name}\n${v.version}`;
    const hit = this.checkedIssuers.get(key);
    if (
      hit &&
      hit.facts.validUntil.getTime() > Date.now() &&
      hit.publicKey.equals(v.publicKey) &&
      hit.certificate.equals(stored.certificate) &&
      sameDers(hit.chain, stored.chain)
    ) {
      return hit.facts;
    }
    const facts = checkIssuerCertificate(v.publicKey, pemOf(stored));
    this.checkedIssuers.set(key, {
      publicKey: v.publicKey,
      certificate: Buffer.from(stored.certificate),
      chain: stored.chain.map((d) => Buffer.from(d)),
      facts,
    });
    return facts;
  }

  /** A store call bounded by the request's deadline: nothing is started at the HSM after it. */
  private bounded<T>(op: (signal: CancelSignal) => Promise<T>, deadline: number): Promise<T> {
    const cancel = new Cancellation();
    return withDeadline(op(cancel), deadline, { cancel });
  }

  async csr(name: string, input: CsrInput, deadline: number, observe: PkiObserver = ignore): Promise<{ keyVersion: number; csrPem: string }> {
    const v = await this.version(name, input.keyVersion, deadline);
    observe({ keyVersion: v.version });
    const csrPem = await createCsr(this.signer(name, v, deadline, observe), {
      subject: input.subject,
      ...(input.ca !== undefined ? { ca: input.ca } : {}),
      ...(input.subjectAltNames !== undefined ? { subjectAltNames: input.subjectAltNames } : {}),
    });
    return { keyVersion: v.version, csrPem };
  }

  /** Checks the certificate against the key version (409 if it does not fit) and stores it with its chain on the token. */
  async attach(name: string, input: AttachInput, deadline: number, observe: PkiObserver = ignore): Promise<{ keyVersion: number }> {
    const v = await this.version(name, input.keyVersion, deadline);
    observe({ keyVersion: v.version });
    const facts = checkIssuerCertificate(v.publicKey, {
      certificatePem: input.certificatePem,
      ...(input.chainPem !== undefined ? { chainPem: input.chainPem } : {}),
    });
    observe({ serialNumber: facts.certificate.x509.serialNumber, subject: facts.subjectText });
    await this.bounded(
      (signal) => this.store.putCertificates(name, v.version, certificateObject(facts.certificate), facts.chain.map(certificateObject), { signal }),
      deadline,
    );
    return { keyVersion: v.version };
  }

  /** The signer of a key version and its attached CA certificate; NOT_FOUND when it has none. */
  async caSigner(name: string, keyVersion: number, deadline: number): Promise<CaSigner> {
    const v = await this.version(name, keyVersion, deadline);
    const stored = await this.bounded((signal) => this.store.getCertificates(name, v.version, { signal }), deadline);
    if (!stored) throw notFound(`key '${name}' version ${v.version} has no certificate; attach one with PUT /v1/keys/${name}/certificate`);
    return { keyVersion: v.version, signer: this.signer(name, v, deadline, ignore), certificatePem: toPem('CERTIFICATE', stored.certificate) };
  }

  /** The CA certificate of each version of the key that has one (newest first), for matching OCSP CertIDs. */
  async caCertificates(name: string, deadline: number): Promise<{ keyVersion: number; certificatePem: string }[]> {
    const key = await this.signing.getKey(name, deadline);
    const out: { keyVersion: number; certificatePem: string }[] = [];
    for (const v of [...key.versions].reverse()) {
      const stored = await this.bounded((signal) => this.store.getCertificates(name, v.version, { signal }), deadline);
      if (stored) out.push({ keyVersion: v.version, certificatePem: toPem('CERTIFICATE', stored.certificate) });
    }
    return out;
  }

  async getCertificate(name: string, keyVersion: number | undefined, deadline: number): Promise<KeyCertificate> {
    const v = await this.version(name, keyVersion, deadline);
    const stored = await this.bounded((signal) => this.store.getCertificates(name, v.version, { signal }), deadline);
    if (!stored) throw notFound(`key '${name}' version ${v.version} has no certificate; attach one with PUT /v1/keys/${name}/certificate`);
    return { keyVersion: v.version, ...pemOf(stored) };
  }

  /**
   * Issued by the newest version of the key that has a certificate, and recorded in the inventory
   * before it is returned: if the record cannot be written, nothing is returned (503).
   */
  async issue(name: string, input: IssueInput, deadline: number, observe: PkiObserver = ignore, context: IssueContext = {}): Promise<IssueOutput> {
    // The caller's input first: a bad CSR or SAN is a 400 whatever the state of the CA.
    const csr = parseCsrPem(input.csrPem, 'csrPem');
    observe({ subject: formatDistinguishedName(csr.subject) });
    if (input.subjectAltNames !== undefined) parseSubjectAltNames(input.subjectAltNames, 'subjectAltNames');
    // No inventory to record in: refused before the HSM signs anything.
    await this.inventory.get();
    const key = await this.signing.getKey(name, deadline);
    // The token, not this process's key cache, says which versions have a certificate: another
    // worker may have attached one a moment ago.
    let issuer: { v: KeyVersion; stored: StoredCertificates } | undefined;
    for (const v of [...key.versions].reverse()) {
      const stored = await this.bounded((signal) => this.store.getCertificates(name, v.version, { signal }), deadline);
      if (stored) {
        issuer = { v, stored };
        break;
      }
    }
    if (!issuer) throw conflict(`key '${name}' has no version with a CA certificate attached; attach one first (PUT /v1/keys/${name}/certificate)`);
    const { v, stored } = issuer;
    observe({ keyVersion: v.version });
    let issuerFacts: IssuerFacts;
    try {
      issuerFacts = this.issuerFacts(name, v, stored);
    } catch (e) {
      // The stored certificate no longer fits (it expired, say): the caller's request is not at fault.
      if (e instanceof ServiceError) throw conflict(`the certificate attached to '${name}' version ${v.version} cannot issue: ${e.message}`);
      throw e;
    }
    const { facts, ...issued } = await issueCertificate(this.signer(name, v, deadline, observe), issuerFacts, {
      csrPem: input.csrPem,
      csr,
      profile: input.profile,
      validityDays: input.validityDays,
      ...(input.subjectAltNames !== undefined ? { subjectAltNames: input.subjectAltNames } : {}),
      ...revocationUrls(name, v.version, this.urls),
    });
    observe({ serialNumber: issued.serialNumber });
    await this.inventory.run('record', (inv) =>
      inv.record({
        issuerKeyName: name,
        issuerKeyVersion: v.version,
        serialNumber: canonicalSerial(issued.serialNumber),
        subject: facts.subject,
        subjectAltNames: facts.subjectAltNames,
        profile: input.profile,
        notBefore: facts.notBefore,
        notAfter: facts.notAfter,
        sha256: facts.sha256,
        certificateDer: facts.der,
        ...(context.clientId !== undefined ? { clientId: context.clientId } : {}),
        ...(context.requestId !== undefined ? { requestId: context.requestId } : {}),
      }),
    );
    return { ...issued, issuerKeyVersion: v.version };
  }

  /** What the key issued, in issue order, a page at a time. 404 for a key that does not exist. */
  async listIssued(name: string, input: ListIssuedInput, deadline: number): Promise<ListPage> {
    await this.signing.getKey(name, deadline);
    return this.inventory.run('list', (inv) =>
      inv.list({
        issuerKeyName: name,
        limit: input.limit,
        now: new Date(),
        ...(input.status !== undefined ? { status: input.status } : {}),
        ...(input.expiresBefore !== undefined ? { expiresBefore: input.expiresBefore } : {}),
        ...(input.cursor !== undefined ? { cursor: input.cursor } : {}),
      }),
    );
  }

  /** One certificate the key issued; 404 when the key did not issue this serial. */
  async getIssued(name: string, serialNumber: string, deadline: number): Promise<CertificateRecord> {
    await this.signing.getKey(name, deadline);
    const record = await this.inventory.run('get', (inv) => inv.get(name, serialNumber));
    if (!record) throw notFound(`key '${name}' issued no certificate with serial number ${serialNumber}`);
    return record;
  }
}

/** `expired` once notAfter has passed (and not revoked). */
export function certificateStatus(r: CertificateRecord, now: Date): CertificateStatus {
  if (r.revocation) return 'revoked';
  return r.notAfter.getTime() < now.getTime() ? 'expired' : 'valid';
}
