import { AsnConvert } from '@peculiar/asn1-schema';
import { Certificate } from '@peculiar/asn1-x509';
import { formatDistinguishedName, parseDistinguishedName } from './distinguishedName.js';
import { readSubjectAltNames } from './extensions.js';

/**
 * Who a (verified) client certificate names, in the forms CLIENTS_FILE entries are compared with.
 *
 * Subjects are compared as RFC 4514 strings in one normal form: both the certificate's subject
 * and the configured one are parsed into X.501 Names and formatted again by
 * formatDistinguishedName (attribute keywords CN, O, OU, C, L, ST, serialNumber, DC,
 * emailAddress, UID whatever the spelling, case or OID given; no spaces around separators;
 * RFC 4514 escaping; the AVAs of a multi-valued RDN sorted). RDN order is significant, most
 * specific first as RFC 4514 writes it (`openssl -subj /O=Example/CN=x` is "CN=x,O=Example"), and
 * values are compared exactly (case-sensitive), except C, which is upper-cased.
 */
export interface CertificateIdentity {
  readonly subject: string;
  /** URI subject alternative names, exactly as in the certificate. */
  readonly uris: readonly string[];
  /** DNS subject alternative names, lower-cased. */
  readonly dnsNames: readonly string[];
}

/** The identity in a DER certificate; throws when it cannot be parsed. */
export function certificateIdentity(der: Uint8Array): CertificateIdentity {
  const tbs = AsnConvert.parse(der, Certificate).tbsCertificate;
  const names = [...(readSubjectAltNames(tbs.extensions) ?? [])];
  return {
    subject: formatDistinguishedName(tbs.subject),
    uris: names.flatMap((n) => (n.uniformResourceIdentifier !== undefined ? [n.uniformResourceIdentifier] : [])),
    dnsNames: names.flatMap((n) => (n.dNSName !== undefined ? [n.dNSName.toLowerCase()] : [])),
  };
}

/** A configured subject in the normal form certificateIdentity gives; a ServiceError naming `field` when it does not parse. */
export function normalizeSubject(subject: string, field: string): string {
  return formatDistinguishedName(parseDistinguishedName(subject, field));
}
