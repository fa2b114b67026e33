import { createHash } from 'node:crypto';
import type { GeneralName, Name } from '@peculiar/asn1-x509';
import { formatDistinguishedName } from './distinguishedName.js';
import { sanEntryOf } from './subjectAltNames.js';

/** What the certificate inventory records of an issued certificate. */
export interface IssuedFacts {
  readonly der: Buffer;
  /** SHA-256 of the DER, lower-case hex. */
  readonly sha256: string;
  /** RFC 4514. */
  readonly subject: string;
  /** Each as `dns:`, `ip:`, `email:` or `uri:` followed by the value, in the certificate's order. */
  readonly subjectAltNames: readonly string[];
  readonly notBefore: Date;
  readonly notAfter: Date;
}

/**
 * The facts of a certificate from the parts issueCertificate put into it (its subject, the
 * entries of its subjectAltName extension as decoded from that extension's DER, its whole-second
 * validity) and its DER: no second parse of the whole certificate.
 */
export function issuedFactsOf(parts: {
  readonly der: Buffer;
  readonly subject: Name;
  readonly subjectAltNames: readonly GeneralName[];
  readonly notBefore: Date;
  readonly notAfter: Date;
}): IssuedFacts {
  return {
    der: parts.der,
    sha256: createHash('sha256').update(parts.der).digest('hex'),
    subject: formatDistinguishedName(parts.subject),
    subjectAltNames: parts.subjectAltNames.flatMap((n) => {
      const entry = sanEntryOf(n);
      return entry ? [`${entry.kind}:${entry.value}`] : [];
    }),
    notBefore: parts.notBefore,
    notAfter: parts.notAfter,
  };
}
