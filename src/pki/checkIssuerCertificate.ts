import type { KeyObject } from 'node:crypto';
import type { BasicConstraints, Name } from '@peculiar/asn1-x509';
import { conflict, invalid } from '../errors.js';
import { formatDistinguishedName } from './distinguishedName.js';
import { KeyUsageFlags, keyIdentifierOf, readBasicConstraints, readKeyUsage, readSubjectKeyIdentifier } from './extensions.js';
import { parseCertificatePem, parseChainPem, type ParsedCertificate } from './parsePem.js';

export interface IssuerCertificateInput {
  /** The CA certificate of the key (PEM, one certificate). */
  readonly certificatePem: string;
  /** Its issuer, that one's issuer, ... (PEM, one or more certificates; the root may be left out). */
  readonly chainPem?: string;
}

/** What issuing under this certificate needs to know. */
export interface IssuerFacts {
  readonly certificate: ParsedCertificate;
  readonly chain: readonly ParsedCertificate[];
  /** The certificate's subject: the issuer Name of everything it signs. */
  readonly subject: Name;
  /** Its exact DER, to copy byte for byte into issued certificates. */
  readonly subjectDer: Buffer;
  /** RFC 4514 text of the subject. */
  readonly subjectText: string;
  /** From the certificate's extension, or SHA-1 of its subjectPublicKey (RFC 5280 method 1) if it has none. */
  readonly subjectKeyIdentifier: Buffer;
  readonly pathLenConstraint?: number;
  /**
   * How many more CA certificates the path may have below this certificate, from the
   * pathLenConstraints of the certificate and its chain; undefined when unlimited.
   */
  readonly caLevelsAllowedBelow?: number;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** The earliest notAfter of the certificate and its chain: nothing issued may outlive it. */
  readonly validUntil: Date;
  /** Normalized PEM of the certificate, and of the chain ('' when none). */
  readonly certificatePem: string;
  readonly chainPem: string;
}

function caProblem(c: ParsedCertificate, field: string): string | undefined {
  let bc: BasicConstraints | undefined;
  let ku: number | undefined;
  try {
    bc = readBasicConstraints(c.extensions);
    ku = readKeyUsage(c.extensions);
  } catch {
    throw invalid(`${field}: has a malformed basicConstraints or keyUsage extension`);
  }
  if (!bc?.cA) return 'is not a CA certificate (basicConstraints cA is not true)';
  if (ku !== undefined && (ku & KeyUsageFlags.keyCertSign) === 0) return 'is not a CA certificate (its keyUsage lacks keyCertSign)';
  return undefined;
}

/**
 * Checks a certificate before it is attached to a key version as that key's CA certificate:
 *  - CONFLICT if its SubjectPublicKeyInfo is not `publicKey` (DER comparison),
 *  - CONFLICT if it is not a CA certificate (basicConstraints cA, keyUsage keyCertSign if present),
 *  - CONFLICT if it (or a chain certificate) has expired,
 *  - CONFLICT if the chain does not link: each certificate's issuer is the next one's subject,
 *    its signature verifies with the next one's key, the next one is a CA and its pathLenConstraint allows it.
 * Malformed PEM is INVALID_ARGUMENT naming `certificatePem` / `chainPem`.
 */
export function checkIssuerCertificate(publicKey: KeyObject, input: IssuerCertificateInput, options: { readonly now?: Date } = {}): IssuerFacts {
  const now = options.now ?? new Date();
  const certificate = parseCertificatePem(input.certificatePem, 'certificatePem');
  const chain =
    input.chainPem === undefined || (typeof input.chainPem === 'string' && input.chainPem.trim() === '') ? [] : parseChainPem(input.chainPem, 'chainPem');

  const keySpki = publicKey.export({ type: 'spki', format: 'der' });
  if (!keySpki.equals(certificate.spkiDer)) {
    throw conflict("certificatePem: the certificate's public key is not this key version's public key");
  }
  const notCa = caProblem(certificate, 'certificatePem');
  if (notCa) throw conflict(`certificatePem: the certificate ${notCa}`);
  if (certificate.notAfter.getTime() <= now.getTime()) {
    throw conflict(`certificatePem: the certificate expired on ${certificate.notAfter.toISOString()}`);
  }

  const all = [certificate, ...chain];
  const label = (i: number): string => (i === 0 ? 'certificatePem' : `chainPem[${i - 1}]`);
  let child = certificate;
  for (const [n, parent] of chain.entries()) {
    const i = n + 1; // parent's index in all
    const at = label(i);
    if (!child.issuerDer.equals(parent.subjectDer)) {
      throw conflict(
        `chainPem: the chain does not link: the issuer of ${label(i - 1)} (${formatDistinguishedName(child.asn.tbsCertificate.issuer)}) ` +
          `is not the subject of ${at} (${formatDistinguishedName(parent.asn.tbsCertificate.subject)})`,
      );
    }
    const parentNotCa = caProblem(parent, at);
    if (parentNotCa) throw conflict(`chainPem: ${at} ${parentNotCa}`);
    if (!child.x509.verify(parent.publicKey)) {
      throw conflict(`chainPem: the chain does not link: the signature of ${label(i - 1)} does not verify with the key of ${at}`);
    }
    // OpenSSL's issuer check: names, and the authority key identifier against the parent's key identifier.
    if (!child.x509.checkIssued(parent.x509)) {
      throw conflict(`chainPem: the chain does not link: OpenSSL does not accept ${at} as the issuer of ${label(i - 1)} (authority key identifier mismatch?)`);
    }
    // Below `parent` there are i CA certificates (all[0..i-1]).
    const pathLen = readBasicConstraints(parent.extensions)?.pathLenConstraint;
    if (pathLen !== undefined && pathLen < i) {
      throw conflict(`chainPem: ${at} has pathLenConstraint ${pathLen}, which does not allow the CA certificates below it`);
    }
    if (parent.notAfter.getTime() <= now.getTime()) {
      throw conflict(`chainPem: ${at} expired on ${parent.notAfter.toISOString()}`);
    }
    child = parent;
  }
  const top = child;
  // A self-signed top (a root): its own signature must verify too.
  if (chain.length > 0 && top.x509.checkIssued(top.x509) && !top.x509.verify(top.publicKey)) {
    throw conflict(`chainPem: the self-signed ${label(chain.length)} has a signature that does not verify`);
  }

  let ski: Buffer | undefined;
  try {
    ski = readSubjectKeyIdentifier(certificate.extensions);
  } catch {
    throw invalid('certificatePem: has a malformed subjectKeyIdentifier extension');
  }
  const tbs = certificate.asn.tbsCertificate;
  const pathLenConstraint = readBasicConstraints(certificate.extensions)?.pathLenConstraint;
  // all[i] has i CA certificates below it already; its pathLenConstraint p leaves p - i.
  const allowances = all.flatMap((c, i) => {
    const p = readBasicConstraints(c.extensions)?.pathLenConstraint;
    return p === undefined ? [] : [p - i];
  });
  const caLevelsAllowedBelow = allowances.length > 0 ? Math.min(...allowances) : undefined;
  return {
    certificate,
    chain,
    subject: tbs.subject,
    subjectDer: certificate.subjectDer,
    subjectText: formatDistinguishedName(tbs.subject),
    subjectKeyIdentifier: ski ?? keyIdentifierOf(tbs.subjectPublicKeyInfo),
    ...(pathLenConstraint !== undefined ? { pathLenConstraint } : {}),
    ...(caLevelsAllowedBelow !== undefined ? { caLevelsAllowedBelow } : {}),
    notBefore: certificate.notBefore,
    notAfter: certificate.notAfter,
    validUntil: new Date(Math.min(...all.map((c) => c.notAfter.getTime()))),
    certificatePem: certificate.pem,
    chainPem: chain.map((c) => c.pem).join(''),
  };
}
