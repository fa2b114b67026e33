import { X509Certificate, randomBytes, type KeyObject } from 'node:crypto';
import { AsnConvert } from '@peculiar/asn1-schema';
import {
  Certificate,
  Extensions,
  TBSCertificate,
  Validity,
  Version,
  id_kp_clientAuth,
  id_kp_codeSigning,
  id_kp_serverAuth,
  type Extension,
  type SubjectAlternativeName,
} from '@peculiar/asn1-x509';
import type { SigningAlgorithm } from '../crypto/algorithms.js';
import { ServiceError, invalid } from '../errors.js';
import { checkIssuerCertificate, type IssuerCertificateInput, type IssuerFacts } from './checkIssuerCertificate.js';
import { RawName, toArrayBuffer } from './der.js';
import {
  KeyUsageFlags,
  authorityKeyIdentifierExtension,
  basicConstraintsExtension,
  crlDistributionPointsExtension,
  extendedKeyUsageExtension,
  keyIdentifierOf,
  keyUsageExtension,
  ocspAccessExtension,
  readSubjectAltNames,
  subjectAltNameExtension,
  subjectKeyIdentifierExtension,
} from './extensions.js';
import { type IssuedFacts, issuedFactsOf } from './issuedFacts.js';
import { type ParsedCsr, parseCsrPem } from './parsePem.js';
import type { PkiSigner } from './PkiSigner.js';
import { toPem } from './pem.js';
import { pkiSigningAlgorithm, signatureAlgorithmIdentifier } from './signatureAlgorithm.js';
import { signWithPkiSigner } from './signWithPkiSigner.js';
import { parseSubjectAltNames, subjectAltNamesInputOf, type SubjectAltNames, type SubjectAltNamesInput } from './subjectAltNames.js';
import { wholeSeconds } from './wholeSeconds.js';

export const CERTIFICATE_PROFILES = ['tls-server', 'tls-client', 'code-signing', 'sub-ca'] as const;
export type CertificateProfile = (typeof CERTIFICATE_PROFILES)[number];

export interface IssueCertificateRequest {
  readonly csrPem: string;
  /** csrPem as parseCsrPem (field `csrPem`) returned it, when the caller parsed it already. */
  readonly csr?: ParsedCsr;
  readonly profile: CertificateProfile;
  /** Integer 1..3650; the certificate must not outlive the issuer (nor its chain). */
  readonly validityDays: number;
  /** When given (even empty) these are the SANs; when absent, the CSR's requested SANs are used. */
  readonly subjectAltNames?: SubjectAltNamesInput;
  /** Default: per the issuer key spec (see defaultPkiAlgorithm). */
  readonly algorithm?: SigningAlgorithm;
  /** CRL_URL_BASE: the CRL distribution point written into the certificate. */
  readonly crlUrl?: string;
  /** OCSP_URL_BASE: the OCSP responder written into the certificate's authority information access. */
  readonly ocspUrl?: string;
  /** For tests: the issuance time (default: the clock). */
  readonly now?: Date;
  /** For tests: the random source for the serial number (default: crypto.randomBytes). */
  readonly random?: (n: number) => Buffer;
}

export interface IssuedCertificate {
  readonly certificatePem: string;
  /** The issuer certificate followed by the issuer's chain. */
  readonly chainPem: string;
  /** Upper-case hex, as node:crypto's X509Certificate.serialNumber and openssl print it. */
  readonly serialNumber: string;
  readonly notBefore: string;
  readonly notAfter: string;
}

/** The certificate, and what the inventory records of it (kept out of the caller's answer). */
export interface IssuedCertificateWithFacts extends IssuedCertificate {
  readonly facts: IssuedFacts;
}

/** An issuer certificate already checked by checkIssuerCertificate (its facts), rather than its PEM. */
const isChecked = (issuer: IssuerCertificateInput | IssuerFacts): issuer is IssuerFacts => 'subjectDer' in issuer;

export const MAX_VALIDITY_DAYS = 3650;
const CLOCK_SKEW_MS = 5 * 60 * 1000;
const DAY_MS = 24 * 60 * 60 * 1000;

interface Profile {
  readonly ca: boolean;
  readonly pathLen?: number;
  readonly keyUsage: (subjectKey: KeyObject) => number;
  readonly extendedKeyUsage?: readonly string[];
  readonly requiresDnsOrIp?: boolean;
}

const PROFILES: Readonly<Record<CertificateProfile, Profile>> = {
  'tls-server': {
    ca: false,
    // keyEncipherment only for RSA (TLS 1.2 RSA key transport); never for EC/EdDSA or RSA-PSS-only keys.
    keyUsage: (k) => KeyUsageFlags.digitalSignature | (k.asymmetricKeyType === 'rsa' ? KeyUsageFlags.keyEncipherment : 0),
    extendedKeyUsage: [id_kp_serverAuth],
    requiresDnsOrIp: true,
  },
  'tls-client': { ca: false, keyUsage: () => KeyUsageFlags.digitalSignature, extendedKeyUsage: [id_kp_clientAuth] },
  'code-signing': { ca: false, keyUsage: () => KeyUsageFlags.digitalSignature, extendedKeyUsage: [id_kp_codeSigning] },
  'sub-ca': { ca: true, pathLen: 0, keyUsage: () => KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign },
};

const EC_CURVES = ['prime256v1', 'secp384r1', 'secp521r1'];

/** Why this CA will not certify the subject key, or undefined. */
function subjectKeyProblem(key: KeyObject): string | undefined {
  const type = key.asymmetricKeyType;
  const details = key.asymmetricKeyDetails ?? {};
  if (type === 'rsa' || type === 'rsa-pss') {
    const bits = details.modulusLength ?? 0;
    return bits >= 2048 && bits <= 16384 ? undefined : `an RSA key of ${bits} bits is not accepted (2048 to 16384)`;
  }
  if (type === 'ec') {
    return EC_CURVES.includes(details.namedCurve ?? '') ? undefined : `the EC curve ${details.namedCurve ?? '(unnamed)'} is not accepted (P-256, P-384, P-521)`;
  }
  if (type === 'ed25519' || type === 'ed448') return undefined;
  return `a ${type ?? 'unknown'} key is not accepted`;
}

/** A positive, non-zero INTEGER of ~127 random bits, as the DER content octets (minimal). */
function randomSerial(random: (n: number) => Buffer): Buffer {
  for (let attempt = 0; attempt < 16; attempt++) {
    const bytes = Buffer.from(random(16));
    if (bytes.length !== 16) throw new ServiceError('INTERNAL', 'the random source returned the wrong number of bytes');
    bytes.writeUInt8(bytes.readUInt8(0) & 0x7f, 0);
    let start = 0;
    while (start < bytes.length - 1 && bytes[start] === 0) start++;
    const value = bytes.subarray(start);
    if (value.length === 1 && value[0] === 0) continue;
    return value.readUInt8(0) & 0x80 ? Buffer.concat([Buffer.from([0]), value]) : value;
  }
  throw new ServiceError('INTERNAL', 'the random source keeps returning zero');
}

function checkValidityDays(v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > MAX_VALIDITY_DAYS) {
    throw invalid(`validityDays: must be an integer from 1 to ${MAX_VALIDITY_DAYS}`);
  }
  return v;
}

/**
 * Issues a certificate for a CSR under the signer's CA certificate: its PEM (checked here with
 * checkIssuerCertificate), or the facts checkIssuerCertificate returned for the signer's key.
 *
 * Errors: INVALID_ARGUMENT naming the field (`csrPem` malformed / signature does not verify /
 * key not accepted, `profile`, `validityDays` out of range or beyond the issuer's validity,
 * `subjectAltNames.*`, `algorithm`); CONFLICT when the issuer certificate does not fit the key
 * (see checkIssuerCertificate) or the issuer's pathLenConstraint forbids a sub-ca.
 */
export async function issueCertificate(
  signer: PkiSigner,
  issuerInput: IssuerCertificateInput | IssuerFacts,
  request: IssueCertificateRequest,
): Promise<IssuedCertificateWithFacts> {
  if (!(CERTIFICATE_PROFILES as readonly string[]).includes(request.profile)) {
    throw invalid(`profile: must be one of ${CERTIFICATE_PROFILES.join(', ')}`);
  }
  const profile = PROFILES[request.profile];
  const validityDays = checkValidityDays(request.validityDays);
  const algorithm = pkiSigningAlgorithm(signer.keySpec, request.algorithm);
  // X.509 times have whole seconds; work in whole seconds so the reported times are the certificate's.
  const now = wholeSeconds(request.now ?? new Date());

  // Facts checked by the caller a moment ago are not checked again (the issuer's validity still bounds validityDays below).
  const issuer = isChecked(issuerInput) ? issuerInput : checkIssuerCertificate(signer.publicKey, issuerInput, { now });
  const csr = request.csr ?? parseCsrPem(request.csrPem, 'csrPem');
  const keyProblem = subjectKeyProblem(csr.publicKey);
  if (keyProblem) throw invalid(`csrPem: ${keyProblem}`);

  if (profile.ca && issuer.caLevelsAllowedBelow !== undefined && issuer.caLevelsAllowedBelow < 1) {
    throw new ServiceError(
      'CONFLICT',
      issuer.pathLenConstraint === 0
        ? 'profile: sub-ca cannot be issued: the issuer certificate has pathLenConstraint 0'
        : "profile: sub-ca cannot be issued: a pathLenConstraint in the issuer's chain allows no further CA",
    );
  }

  let sans: SubjectAltNames;
  if (request.subjectAltNames !== undefined) {
    sans = parseSubjectAltNames(request.subjectAltNames, 'subjectAltNames');
  } else {
    let requested: SubjectAlternativeName | undefined;
    try {
      requested = readSubjectAltNames(csr.requestedExtensions);
    } catch {
      throw invalid("csrPem: the CSR's requested subjectAltName extension is malformed");
    }
    sans = parseSubjectAltNames(requested ? subjectAltNamesInputOf(requested, 'csrPem') : {}, 'csrPem.subjectAltNames');
  }
  if (profile.requiresDnsOrIp && sans.dns.length + sans.ip.length === 0) {
    throw invalid(`subjectAltNames: a ${request.profile} certificate needs at least one dns or ip name (none given, none in the CSR)`);
  }
  const emptySubject = csr.subject.length === 0;
  if (emptySubject && sans.count === 0) throw invalid('csrPem: the CSR has an empty subject and there are no subjectAltNames');

  const notBefore = new Date(now.getTime() - CLOCK_SKEW_MS);
  const notAfter = new Date(now.getTime() + validityDays * DAY_MS);
  if (notAfter.getTime() > issuer.validUntil.getTime()) {
    const maxDays = Math.floor((issuer.validUntil.getTime() - now.getTime()) / DAY_MS);
    throw invalid(
      `validityDays: ${validityDays} days would end on ${notAfter.toISOString()}, but the issuer certificate` +
        `${issuer.validUntil.getTime() < issuer.notAfter.getTime() ? ' chain' : ''} is only valid until ${issuer.validUntil.toISOString()}` +
        (maxDays >= 1 ? ` (at most ${maxDays} days)` : ' (less than a day from now)'),
    );
  }

  const subjectPKInfo = csr.asn.certificationRequestInfo.subjectPKInfo;
  if (!Buffer.from(AsnConvert.serialize(subjectPKInfo)).equals(csr.spkiDer)) {
    throw invalid("csrPem: the CSR's public key is not DER-encoded");
  }
  const extensions: Extension[] = [basicConstraintsExtension(profile.ca, profile.pathLen), keyUsageExtension(profile.keyUsage(csr.publicKey))];
  if (profile.extendedKeyUsage) extensions.push(extendedKeyUsageExtension([...profile.extendedKeyUsage]));
  extensions.push(subjectKeyIdentifierExtension(keyIdentifierOf(subjectPKInfo)));
  extensions.push(authorityKeyIdentifierExtension(issuer.subjectKeyIdentifier));
  if (sans.count > 0) extensions.push(subjectAltNameExtension(sans.generalNames, emptySubject));
  if (request.crlUrl !== undefined) extensions.push(crlDistributionPointsExtension(request.crlUrl));
  if (request.ocspUrl !== undefined) extensions.push(ocspAccessExtension(request.ocspUrl));

  const serial = randomSerial(request.random ?? randomBytes);
  const tbs = new TBSCertificate({
    version: Version.v3,
    serialNumber: toArrayBuffer(serial),
    signature: signatureAlgorithmIdentifier(algorithm),
    issuer: new RawName(issuer.subjectDer),
    validity: new Validity({ notBefore, notAfter }),
    subject: new RawName(csr.subjectDer),
    subjectPublicKeyInfo: subjectPKInfo,
    extensions: new Extensions(extensions),
  });
  const tbsDer = Buffer.from(AsnConvert.serialize(tbs));
  const signature = await signWithPkiSigner(signer, algorithm, tbsDer);
  const der = Buffer.from(
    AsnConvert.serialize(
      new Certificate({
        tbsCertificate: tbs,
        signatureAlgorithm: signatureAlgorithmIdentifier(algorithm),
        signatureValue: toArrayBuffer(signature),
      }),
    ),
  );

  // Belt and braces: node:crypto (OpenSSL) must accept the result as issued by the issuer certificate.
  const issued = new X509Certificate(der);
  if (!issued.checkIssued(issuer.certificate.x509) || !issued.verify(issuer.certificate.publicKey)) {
    throw new ServiceError('INTERNAL', 'the issued certificate does not chain to the issuer certificate');
  }
  return {
    certificatePem: toPem('CERTIFICATE', der),
    chainPem: issuer.certificatePem + issuer.chainPem,
    serialNumber: issued.serialNumber,
    notBefore: notBefore.toISOString(),
    notAfter: notAfter.toISOString(),
    // The SANs as any reader of the certificate decodes them (an IPv6 address in its short form, say).
    facts: issuedFactsOf({ der, subject: csr.subject, subjectAltNames: [...(readSubjectAltNames(extensions) ?? [])], notBefore, notAfter }),
  };
}
