/** The PKI domain layer: CSRs for HSM keys, CA certificate checks, certificate issuance. */
export type { PkiSigner } from './PkiSigner.js';
export { createCsr, type CreateCsrOptions } from './createCsr.js';
export { checkIssuerCertificate, type IssuerCertificateInput, type IssuerFacts } from './checkIssuerCertificate.js';
export {
  issueCertificate,
  CERTIFICATE_PROFILES,
  MAX_VALIDITY_DAYS,
  type CertificateProfile,
  type IssueCertificateRequest,
  type IssuedCertificate,
  type IssuedCertificateWithFacts,
} from './issueCertificate.js';
export { parseCertificatePem, parseChainPem, parseCsrPem, type ParsedCertificate, type ParsedCsr } from './parsePem.js';
export { parseDistinguishedName, formatDistinguishedName } from './distinguishedName.js';
export { parseSubjectAltNames, type SubjectAltNames, type SubjectAltNamesInput } from './subjectAltNames.js';
export { defaultPkiAlgorithm, pkiSigningAlgorithm } from './signatureAlgorithm.js';
export type { IssuedFacts } from './issuedFacts.js';
