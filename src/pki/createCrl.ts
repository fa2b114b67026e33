import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import {
  AuthorityKeyIdentifier,
  CRLNumber,
  CRLReason,
  CertificateList,
  Extension,
  KeyIdentifier,
  RevokedCertificate,
  TBSCertList,
  Time,
  Version,
  id_ce_authorityKeyIdentifier,
  id_ce_cRLNumber,
  id_ce_cRLReasons,
} from '@peculiar/asn1-x509';
import { REVOCATION_REASONS, type RevocationReason } from '../inventory/CertificateInventory.js';
import { ServiceError } from '../errors.js';
import { RawName, toArrayBuffer } from './der.js';
import { canonicalSerial } from './serialNumber.js';
import { keyIdentifierOf, readSubjectKeyIdentifier } from './extensions.js';
import { parseCertificatePem, type ParsedCertificate } from './parsePem.js';
import type { PkiSigner } from './PkiSigner.js';
import { defaultPkiAlgorithm, signatureAlgorithmIdentifier } from './signatureAlgorithm.js';
import { signWithPkiSigner } from './signWithPkiSigner.js';
import { wholeSeconds } from './wholeSeconds.js';

export interface CrlEntry {
  /** Upper-case hex, as IssuedCertificate.serialNumber. */
  readonly serialNumber: string;
  readonly revokedAt: Date;
  readonly reason: RevocationReason;
}

export interface CrlInput {
  /** Positive; the CRL number extension (RFC 5280 §5.2.3). */
  readonly crlNumber: bigint;
  readonly thisUpdate: Date;
  readonly nextUpdate: Date;
  readonly revoked: readonly CrlEntry[];
}

/** The DER content octets of a positive INTEGER written as hex (as an ArrayBuffer for the ASN.1 library). */
export function serialToInteger(hex: string): ArrayBuffer {
  if (!/^[0-9A-Fa-f]+$/.test(hex)) throw new ServiceError('INTERNAL', 'a serial number is not hex');
  let bytes = Buffer.from(hex.length % 2 ? `0${hex}` : hex, 'hex');
  let start = 0;
  while (start < bytes.length - 1 && bytes[start] === 0) start++;
  bytes = bytes.subarray(start);
  return toArrayBuffer((bytes[0] ?? 0) & 0x80 ? Buffer.concat([Buffer.from([0]), bytes]) : bytes);
}

/** Upper-case hex without leading zeros of a DER INTEGER's content octets, as the inventory stores serials. */
export function integerToSerial(content: ArrayBuffer): string {
  return canonicalSerial(Buffer.from(content).toString('hex') || '0');
}

function extension(extnID: string, value: object): Extension {
  return new Extension({ extnID, critical: false, extnValue: new OctetString(AsnConvert.serialize(value)) });
}

/** The issuer certificate's subject key identifier, or (without one) the RFC 5280 method (1) hash of its key. */
export function issuerKeyId(issuer: ParsedCertificate): Buffer {
  return readSubjectKeyIdentifier(issuer.extensions) ?? keyIdentifierOf(issuer.asn.tbsCertificate.subjectPublicKeyInfo);
}

/** The parsed issuer certificate, checked to hold the signer's public key (INTERNAL otherwise: the caller picked the wrong pair). */
export function issuerFor(signer: PkiSigner, issuerCertificatePem: string): ParsedCertificate {
  const issuer = parseCertificatePem(issuerCertificatePem, 'issuer certificate');
  if (!issuer.spkiDer.equals(signer.publicKey.export({ type: 'spki', format: 'der' }))) {
    throw new ServiceError('INTERNAL', 'the issuer certificate does not hold the signing key');
  }
  return issuer;
}

/**
 * An X.509 v2 CRL (RFC 5280 §5) for the issuer certificate, signed through the signer with the
 * algorithm its certificates are signed with (defaultPkiAlgorithm): the issuer's subject as
 * issuer name (byte-identical), CRL number, authority key identifier, one entry per revoked
 * certificate with its reason code (absent for `unspecified`, as §5.3.1 recommends). Returns DER.
 */
export async function createCrl(signer: PkiSigner, issuerCertificatePem: string, input: CrlInput): Promise<Buffer> {
  const issuer = issuerFor(signer, issuerCertificatePem);
  if (input.crlNumber < 1n || input.crlNumber > BigInt(Number.MAX_SAFE_INTEGER)) throw new ServiceError('INTERNAL', 'crlNumber out of range');
  const algorithm = defaultPkiAlgorithm(signer.keySpec);
  const revoked = input.revoked.map(
    (r) =>
      new RevokedCertificate({
        userCertificate: serialToInteger(r.serialNumber),
        revocationDate: new Time(wholeSeconds(r.revokedAt)),
        ...(r.reason === 'unspecified' ? {} : { crlEntryExtensions: [extension(id_ce_cRLReasons, new CRLReason(REVOCATION_REASONS[r.reason]))] }),
      }),
  );
  const tbs = new TBSCertList({
    version: Version.v2,
    signature: signatureAlgorithmIdentifier(algorithm),
    issuer: new RawName(issuer.subjectDer),
    thisUpdate: new Time(wholeSeconds(input.thisUpdate)),
    nextUpdate: new Time(wholeSeconds(input.nextUpdate)),
    ...(revoked.length > 0 ? { revokedCertificates: revoked } : {}),
    crlExtensions: [
      extension(id_ce_authorityKeyIdentifier, new AuthorityKeyIdentifier({ keyIdentifier: new KeyIdentifier(issuerKeyId(issuer)) })),
      extension(id_ce_cRLNumber, new CRLNumber(Number(input.crlNumber))),
    ],
  });
  const tbsDer = Buffer.from(AsnConvert.serialize(tbs));
  const signature = await signWithPkiSigner(signer, algorithm, tbsDer);
  return Buffer.from(
    AsnConvert.serialize(
      new CertificateList({ tbsCertList: tbs, signatureAlgorithm: signatureAlgorithmIdentifier(algorithm), signature: toArrayBuffer(signature) }),
    ),
  );
}
