import type { SigningAlgorithm } from '../crypto/algorithms.js';
import type { CancelSignal, KeyVersion } from '../hsm/KeyManager.js';
import type { CertificateObject, CertificateStore, StoredCertificates } from '../hsm/CertificateStore.js';
import { ServiceError, conflict, notFound } from '../errors.js';
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
  type ParsedCertificate,
  type PkiSigner,
  type SubjectAltNamesInput,
} from '../pki/index.js';
import { sequenceElements } from '../pki/der.js';
import { toPem } from '../pki/pem.js';
import { Cancellation, withDeadline } from './deadline.js';
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

export interface KeyCertificate {
  readonly keyVersion: number;
  readonly certificatePem: string;
  readonly chainPem: string;
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
 * The intermediate CA on the HSM: CSRs for a key version, its CA certificate kept on the token,
 * and certificates issued under it. Every signature is a SigningService.sign of a digest, so
 * the retries, circuit breaker and deadline of /sign apply to PKI work too.
 */
export class PkiService {
  constructor(
    private readonly signing: SigningService,
    private readonly store: CertificateStore,
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

  async getCertificate(name: string, keyVersion: number | undefined, deadline: number): Promise<KeyCertificate> {
    const v = await this.version(name, keyVersion, deadline);
    const stored = await this.bounded((signal) => this.store.getCertificates(name, v.version, { signal }), deadline);
    if (!stored) throw notFound(`key '${name}' version ${v.version} has no certificate; attach one with PUT /v1/keys/${name}/certificate`);
    return { keyVersion: v.version, ...pemOf(stored) };
  }

  /** Issued by the newest version of the key that has a certificate. */
  async issue(name: string, input: IssueInput, deadline: number, observe: PkiObserver = ignore): Promise<IssueOutput> {
    // The caller's input first: a bad CSR or SAN is a 400 whatever the state of the CA.
    const csr = parseCsrPem(input.csrPem, 'csrPem');
    observe({ subject: formatDistinguishedName(csr.subject) });
    if (input.subjectAltNames !== undefined) parseSubjectAltNames(input.subjectAltNames, 'subjectAltNames');
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
    const issuerInput = pemOf(stored);
    try {
      checkIssuerCertificate(v.publicKey, issuerInput);
    } catch (e) {
      // The stored certificate no longer fits (it expired, say): the caller's request is not at fault.
      if (e instanceof ServiceError) throw conflict(`the certificate attached to '${name}' version ${v.version} cannot issue: ${e.message}`);
      throw e;
    }
    const issued = await issueCertificate(this.signer(name, v, deadline, observe), issuerInput, {
      csrPem: input.csrPem,
      profile: input.profile,
      validityDays: input.validityDays,
      ...(input.subjectAltNames !== undefined ? { subjectAltNames: input.subjectAltNames } : {}),
    });
    observe({ serialNumber: issued.serialNumber });
    return { ...issued, issuerKeyVersion: v.version };
  }
}
