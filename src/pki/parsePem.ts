import { X509Certificate, createPublicKey, type KeyObject } from 'node:crypto';
import { AsnConvert } from '@peculiar/asn1-schema';
import { Certificate, Extensions, type Extension, type Name } from '@peculiar/asn1-x509';
import { CertificationRequest } from '@peculiar/asn1-csr';
import { invalid } from '../errors.js';
import { isSingleDerSequence, sequenceElements } from './der.js';
import { id_pkcs9_at_extensionRequest } from './extensions.js';
import { pemBlocks, toPem } from './pem.js';
import { verifySchemeFor, verifySignature } from './signatureAlgorithm.js';

/** Parsing (and for CSRs, verifying) the PEM the API receives. Every problem is INVALID_ARGUMENT naming the field. */

export const MAX_CHAIN_CERTIFICATES = 10;

export interface ParsedCertificate {
  readonly der: Buffer;
  /** Normalized PEM (64-column base64, trailing newline). */
  readonly pem: string;
  readonly asn: Certificate;
  readonly x509: X509Certificate;
  readonly publicKey: KeyObject;
  /** Exact DER of the issuer and subject Names and of the SubjectPublicKeyInfo, as in the certificate. */
  readonly issuerDer: Buffer;
  readonly subjectDer: Buffer;
  readonly spkiDer: Buffer;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly extensions: readonly Extension[];
}

export interface ParsedCsr {
  readonly der: Buffer;
  readonly pem: string;
  readonly asn: CertificationRequest;
  readonly subject: Name;
  readonly subjectDer: Buffer;
  readonly spkiDer: Buffer;
  readonly publicKey: KeyObject;
  /** The extensions of the PKCS#9 extensionRequest attribute (empty when there is none). */
  readonly requestedExtensions: readonly Extension[];
}

function certificateFromDer(der: Buffer, field: string): ParsedCertificate {
  let asn: Certificate;
  let x509: X509Certificate;
  let elements: Buffer[];
  try {
    if (!isSingleDerSequence(der)) throw new Error('not a single DER value');
    asn = AsnConvert.parse(der, Certificate);
    x509 = new X509Certificate(der);
    if (!asn.tbsCertificateRaw) throw new Error('the parser kept no raw TBSCertificate');
    elements = sequenceElements(Buffer.from(asn.tbsCertificateRaw));
  } catch {
    throw invalid(`${field}: is not a valid DER X.509 certificate`);
  }
  // TBSCertificate: [0] version (absent for v1), serialNumber, signature, issuer, validity, subject, spki, ...
  // 0xa0 is the tag of the context-specific, constructed [0] that carries the version.
  const base = elements[0]?.[0] === 0xa0 ? 1 : 0;
  const [issuerDer, , subjectDer, spkiDer] = elements.slice(base + 2, base + 6);
  if (!issuerDer || !subjectDer || !spkiDer) throw invalid(`${field}: is not a valid DER X.509 certificate`);
  let publicKey: KeyObject;
  try {
    publicKey = x509.publicKey;
  } catch {
    throw invalid(`${field}: the certificate's public key is of an unsupported type`);
  }
  const tbs = asn.tbsCertificate;
  return {
    der,
    pem: toPem('CERTIFICATE', der),
    asn,
    x509,
    publicKey,
    issuerDer,
    subjectDer,
    spkiDer,
    notBefore: tbs.validity.notBefore.getTime(),
    notAfter: tbs.validity.notAfter.getTime(),
    extensions: tbs.extensions ? [...tbs.extensions] : [],
  };
}

/** Exactly one CERTIFICATE block. */
export function parseCertificatePem(pem: unknown, field = 'certificatePem'): ParsedCertificate {
  const blocks = pemBlocks(pem, field);
  const block = blocks.length === 1 ? blocks[0] : undefined;
  if (!block) throw invalid(`${field}: must hold exactly one certificate, found ${blocks.length} PEM blocks`);
  if (block.label !== 'CERTIFICATE') throw invalid(`${field}: expected a CERTIFICATE PEM block, found "${block.label}"`);
  return certificateFromDer(block.der, field);
}

/** One or more CERTIFICATE blocks, in the order given (each one issued by the next). */
export function parseChainPem(pem: unknown, field = 'chainPem'): ParsedCertificate[] {
  const blocks = pemBlocks(pem, field);
  if (blocks.length > MAX_CHAIN_CERTIFICATES) throw invalid(`${field}: more than ${MAX_CHAIN_CERTIFICATES} certificates`);
  return blocks.map((b, i) => {
    const at = `${field}[${i}]`;
    if (b.label !== 'CERTIFICATE') throw invalid(`${at}: expected a CERTIFICATE PEM block, found "${b.label}"`);
    return certificateFromDer(b.der, at);
  });
}

/**
 * One CERTIFICATE REQUEST (or NEW CERTIFICATE REQUEST) block, with its self-signature
 * verified: INVALID_ARGUMENT "csrPem: the CSR's signature does not verify" when broken.
 */
export function parseCsrPem(pem: unknown, field = 'csrPem'): ParsedCsr {
  const blocks = pemBlocks(pem, field);
  const block = blocks.length === 1 ? blocks[0] : undefined;
  if (!block) throw invalid(`${field}: must hold exactly one CSR, found ${blocks.length} PEM blocks`);
  const { label, der } = block;
  if (label !== 'CERTIFICATE REQUEST' && label !== 'NEW CERTIFICATE REQUEST') {
    throw invalid(`${field}: expected a CERTIFICATE REQUEST PEM block, found "${label}"`);
  }
  let asn: CertificationRequest;
  let infoDer: Buffer;
  let elements: Buffer[];
  try {
    if (!isSingleDerSequence(der)) throw new Error('not a single DER value');
    asn = AsnConvert.parse(der, CertificationRequest);
    if (!asn.certificationRequestInfoRaw) throw new Error('the parser kept no raw CertificationRequestInfo');
    infoDer = Buffer.from(asn.certificationRequestInfoRaw);
    elements = sequenceElements(infoDer);
  } catch {
    throw invalid(`${field}: is not a valid DER PKCS#10 certification request`);
  }
  const info = asn.certificationRequestInfo;
  if (info.version !== 0) throw invalid(`${field}: unsupported CSR version ${info.version}`);
  // CertificationRequestInfo: version, subject, subjectPKInfo, [0] attributes
  const [, subjectDer, spkiDer] = elements;
  if (!subjectDer || !spkiDer) throw invalid(`${field}: is not a valid DER PKCS#10 certification request`);
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey({ key: spkiDer, format: 'der', type: 'spki' });
  } catch {
    throw invalid(`${field}: the CSR's public key is malformed or of an unsupported type`);
  }
  const scheme = verifySchemeFor(asn.signatureAlgorithm);
  if (!scheme) throw invalid(`${field}: the CSR is signed with an unsupported algorithm (${asn.signatureAlgorithm.algorithm})`);
  if (!verifySignature(scheme, infoDer, publicKey, Buffer.from(asn.signature))) {
    throw invalid(`${field}: the CSR's signature does not verify`);
  }
  const requests = (info.attributes ?? []).filter((a) => a.type === id_pkcs9_at_extensionRequest);
  let requestedExtensions: Extension[] = [];
  const [request, ...more] = requests;
  if (more.length > 0 || (request && request.values.length !== 1)) {
    throw invalid(`${field}: has more than one extensionRequest`);
  }
  const requestValue = request?.values[0];
  if (requestValue) {
    try {
      requestedExtensions = [...AsnConvert.parse(requestValue, Extensions)];
    } catch {
      throw invalid(`${field}: its extensionRequest attribute is malformed`);
    }
  }
  return {
    der,
    pem: toPem('CERTIFICATE REQUEST', der),
    asn,
    subject: info.subject,
    subjectDer,
    spkiDer,
    publicKey,
    requestedExtensions,
  };
}
