import { createHash } from 'node:crypto';
import {
  BasicOCSPResponse,
  type CertID,
  CertStatus,
  KeyHash,
  OCSPRequest,
  OCSPResponse,
  OCSPResponseStatus,
  ResponderID,
  ResponseBytes,
  ResponseData,
  RevokedInfo,
  SingleResponse,
  id_pkix_ocsp_basic,
  id_pkix_ocsp_nonce,
} from '@peculiar/asn1-ocsp';
import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import { CRLReason, Certificate, type Extension } from '@peculiar/asn1-x509';
import { id_sha256 } from '@peculiar/asn1-rsa';
import { REVOCATION_REASONS, type RevocationReason } from '../inventory/CertificateInventory.js';
import { invalid } from '../errors.js';
import { integerToSerial, issuerFor } from './createCrl.js';
import { isSingleDerSequence, toArrayBuffer } from './der.js';
import { keyIdentifierOf } from './extensions.js';
import type { ParsedCertificate } from './parsePem.js';
import type { PkiSigner } from './PkiSigner.js';
import { defaultPkiAlgorithm, signatureAlgorithmIdentifier } from './signatureAlgorithm.js';
import { signWithPkiSigner } from './signWithPkiSigner.js';
import { wholeSeconds } from './wholeSeconds.js';

/** RFC 6960 OCSP: reading requests, matching their CertIDs to a CA certificate, building signed responses. */

const ID_SHA1 = '1.3.14.3.2.26';
const CERT_ID_HASHES: Readonly<Record<string, 'sha1' | 'sha256'>> = { [ID_SHA1]: 'sha1', [id_sha256]: 'sha256' };

/** More CertIDs than this in one request is a malformed request (no client sends more than a handful). */
export const MAX_OCSP_REQUESTS = 20;
export const MAX_OCSP_REQUEST_BYTES = 16 * 1024;

export interface ParsedOcspRequest {
  readonly certIds: readonly CertID[];
  /** The request's nonce extension, echoed in the response. */
  readonly nonce?: Extension;
}

/** A DER OCSPRequest. INVALID_ARGUMENT (the caller answers `malformedRequest`) for anything else. */
export function parseOcspRequest(der: Buffer): ParsedOcspRequest {
  if (der.length === 0) throw invalid('OCSP request: empty');
  if (der.length > MAX_OCSP_REQUEST_BYTES) throw invalid(`OCSP request: longer than ${MAX_OCSP_REQUEST_BYTES} bytes`);
  if (!isSingleDerSequence(der)) throw invalid('OCSP request: not a DER SEQUENCE');
  let req: OCSPRequest;
  try {
    req = AsnConvert.parse(der, OCSPRequest);
  } catch {
    throw invalid('OCSP request: not a DER OCSPRequest');
  }
  const list = req.tbsRequest.requestList;
  if (list.length === 0) throw invalid('OCSP request: requestList is empty');
  if (list.length > MAX_OCSP_REQUESTS) throw invalid(`OCSP request: more than ${MAX_OCSP_REQUESTS} certificates`);
  const nonce = req.tbsRequest.requestExtensions?.find((e) => e.extnID === id_pkix_ocsp_nonce);
  // RFC 8954: a nonce is 1 to 32 octets (its OCTET STRING wrapped in the extension's).
  if (nonce && (nonce.extnValue.byteLength < 3 || nonce.extnValue.byteLength > 34)) throw invalid('OCSP request: the nonce must be 1 to 32 octets');
  return { certIds: list.map((r) => r.reqCert), ...(nonce ? { nonce } : {}) };
}

/** The CertID's serial number as the inventory stores it (upper-case hex, no leading zeros). */
export function certIdSerial(id: CertID): string {
  return integerToSerial(id.serialNumber);
}

/** True when the CertID names `issuer` (SHA-1 or SHA-256 hashes of its subject and of its public key). */
export function certIdMatches(id: CertID, issuer: ParsedCertificate): boolean {
  const hash = CERT_ID_HASHES[id.hashAlgorithm.algorithm];
  if (!hash) return false;
  const nameHash = createHash(hash).update(issuer.subjectDer).digest();
  const keyHash = createHash(hash).update(Buffer.from(issuer.asn.tbsCertificate.subjectPublicKeyInfo.subjectPublicKey)).digest();
  return nameHash.equals(Buffer.from(id.issuerNameHash.buffer)) && keyHash.equals(Buffer.from(id.issuerKeyHash.buffer));
}

export type OcspCertStatus =
  | { readonly status: 'good' }
  | { readonly status: 'revoked'; readonly revokedAt: Date; readonly reason: RevocationReason }
  | { readonly status: 'unknown' };

export interface OcspResponseInput {
  readonly responses: readonly { readonly certId: CertID; readonly status: OcspCertStatus }[];
  readonly nonce?: Extension;
  readonly producedAt: Date;
  readonly thisUpdate: Date;
  readonly nextUpdate: Date;
}

function certStatus(s: OcspCertStatus): CertStatus {
  switch (s.status) {
    case 'good':
      return new CertStatus({ good: null });
    case 'unknown':
      return new CertStatus({ unknown: null });
    case 'revoked':
      return new CertStatus({
        revoked: new RevokedInfo({ revocationTime: wholeSeconds(s.revokedAt), revocationReason: new CRLReason(REVOCATION_REASONS[s.reason]) }),
      });
  }
}

/**
 * A successful OCSPResponse (DER) with a BasicOCSPResponse signed by the issuing CA key itself
 * (no delegated responder): responderID by key hash, the issuer certificate included so that a
 * client holding only the root (`openssl ocsp -CAfile root.pem`) can build the signer's chain.
 */
export async function createOcspResponse(signer: PkiSigner, issuerCertificatePem: string, input: OcspResponseInput): Promise<Buffer> {
  const issuer = issuerFor(signer, issuerCertificatePem);
  const algorithm = defaultPkiAlgorithm(signer.keySpec);
  const data = new ResponseData({
    responderID: new ResponderID({ byKey: new KeyHash(keyIdentifierOf(issuer.asn.tbsCertificate.subjectPublicKeyInfo)) }),
    producedAt: wholeSeconds(input.producedAt),
    responses: input.responses.map(
      (r) =>
        new SingleResponse({
          certID: r.certId,
          certStatus: certStatus(r.status),
          thisUpdate: wholeSeconds(input.thisUpdate),
          nextUpdate: wholeSeconds(input.nextUpdate),
        }),
    ),
    ...(input.nonce ? { responseExtensions: [input.nonce] } : {}),
  });
  const tbsDer = Buffer.from(AsnConvert.serialize(data));
  const signature = await signWithPkiSigner(signer, algorithm, tbsDer);
  const basic = new BasicOCSPResponse({
    tbsResponseData: data,
    signatureAlgorithm: signatureAlgorithmIdentifier(algorithm),
    signature: toArrayBuffer(signature),
    certs: [AsnConvert.parse(issuer.der, Certificate)],
  });
  return Buffer.from(
    AsnConvert.serialize(
      new OCSPResponse({
        responseStatus: OCSPResponseStatus.successful,
        responseBytes: new ResponseBytes({ responseType: id_pkix_ocsp_basic, response: new OctetString(AsnConvert.serialize(basic)) }),
      }),
    ),
  );
}

/** An unsigned error OCSPResponse (malformedRequest, unauthorized, tryLater, internalError). */
export function ocspErrorResponse(status: Exclude<OCSPResponseStatus, OCSPResponseStatus.successful>): Buffer {
  return Buffer.from(AsnConvert.serialize(new OCSPResponse({ responseStatus: status })));
}

export { OCSPResponseStatus };
