import { createHash } from 'node:crypto';
import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import {
  AccessDescription,
  AuthorityInfoAccessSyntax,
  AuthorityKeyIdentifier,
  CRLDistributionPoints,
  DistributionPoint,
  DistributionPointName,
  GeneralName,
  BasicConstraints,
  ExtendedKeyUsage,
  Extension,
  type GeneralNames,
  KeyIdentifier,
  KeyUsage,
  KeyUsageFlags,
  SubjectAlternativeName,
  SubjectKeyIdentifier,
  id_ad_ocsp,
  id_ce_authorityKeyIdentifier,
  id_ce_cRLDistributionPoints,
  id_pe_authorityInfoAccess,
  id_ce_basicConstraints,
  id_ce_extKeyUsage,
  id_ce_keyUsage,
  id_ce_subjectAltName,
  id_ce_subjectKeyIdentifier,
  type SubjectPublicKeyInfo,
} from '@peculiar/asn1-x509';

/** Building and reading the X.509 v3 extensions the CA uses. */

/** PKCS#9 extensionRequest, the CSR attribute that carries requested extensions. */
export const id_pkcs9_at_extensionRequest = '1.2.840.113549.1.9.14';

function extension(extnID: string, critical: boolean, value: object): Extension {
  return new Extension({ extnID, critical, extnValue: new OctetString(AsnConvert.serialize(value)) });
}

export function basicConstraintsExtension(ca: boolean, pathLenConstraint?: number): Extension {
  return extension(id_ce_basicConstraints, true, new BasicConstraints({ cA: ca, pathLenConstraint }));
}

export function keyUsageExtension(flags: number): Extension {
  return extension(id_ce_keyUsage, true, new KeyUsage(flags));
}

export function extendedKeyUsageExtension(purposes: string[]): Extension {
  return extension(id_ce_extKeyUsage, false, new ExtendedKeyUsage(purposes));
}

/** RFC 5280 §4.2.1.6: critical when the subject is empty. */
export function subjectAltNameExtension(names: GeneralNames, critical: boolean): Extension {
  return extension(id_ce_subjectAltName, critical, new SubjectAlternativeName(names));
}

export function subjectKeyIdentifierExtension(keyId: Uint8Array): Extension {
  return extension(id_ce_subjectKeyIdentifier, false, new SubjectKeyIdentifier(keyId));
}

export function authorityKeyIdentifierExtension(keyId: Uint8Array): Extension {
  return extension(id_ce_authorityKeyIdentifier, false, new AuthorityKeyIdentifier({ keyIdentifier: new KeyIdentifier(keyId) }));
}

/** RFC 5280 §4.2.1.13: one distribution point, a URI where the issuer's CRL is published. */
export function crlDistributionPointsExtension(url: string): Extension {
  return extension(
    id_ce_cRLDistributionPoints,
    false,
    new CRLDistributionPoints([
      new DistributionPoint({ distributionPoint: new DistributionPointName({ fullName: [new GeneralName({ uniformResourceIdentifier: url })] }) }),
    ]),
  );
}

/** RFC 5280 §4.2.2.1: the issuer's OCSP responder. */
export function ocspAccessExtension(url: string): Extension {
  return extension(
    id_pe_authorityInfoAccess,
    false,
    new AuthorityInfoAccessSyntax([new AccessDescription({ accessMethod: id_ad_ocsp, accessLocation: new GeneralName({ uniformResourceIdentifier: url }) })]),
  );
}

/** RFC 5280 §4.2.1.2 method (1): SHA-1 of the subjectPublicKey BIT STRING's value. */
export function keyIdentifierOf(spki: SubjectPublicKeyInfo): Buffer {
  return createHash('sha1').update(Buffer.from(spki.subjectPublicKey)).digest();
}

export function findExtension(extensions: readonly Extension[] | undefined, oid: string): Extension | undefined {
  return extensions?.find((e) => e.extnID === oid);
}

/** Undefined when the extension is absent. Throws (the ASN.1 library's error) when malformed. */
export function readBasicConstraints(extensions: readonly Extension[] | undefined): BasicConstraints | undefined {
  const e = findExtension(extensions, id_ce_basicConstraints);
  return e && AsnConvert.parse(e.extnValue.buffer, BasicConstraints);
}

/** KeyUsageFlags bits, or undefined when the extension is absent. */
export function readKeyUsage(extensions: readonly Extension[] | undefined): number | undefined {
  const e = findExtension(extensions, id_ce_keyUsage);
  return e && AsnConvert.parse(e.extnValue.buffer, KeyUsage).toNumber();
}

export function readSubjectKeyIdentifier(extensions: readonly Extension[] | undefined): Buffer | undefined {
  const e = findExtension(extensions, id_ce_subjectKeyIdentifier);
  return e && Buffer.from(AsnConvert.parse(e.extnValue.buffer, SubjectKeyIdentifier).buffer);
}

export function readSubjectAltNames(extensions: readonly Extension[] | undefined): SubjectAlternativeName | undefined {
  const e = findExtension(extensions, id_ce_subjectAltName);
  return e && AsnConvert.parse(e.extnValue.buffer, SubjectAlternativeName);
}

export { KeyUsageFlags };
