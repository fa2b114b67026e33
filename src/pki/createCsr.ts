import { AsnConvert } from '@peculiar/asn1-schema';
import { Attribute, Extensions, SubjectPublicKeyInfo, type Extension } from '@peculiar/asn1-x509';
import { Attributes, CertificationRequest, CertificationRequestInfo } from '@peculiar/asn1-csr';
import type { SigningAlgorithm } from '../crypto/algorithms.js';
import { ServiceError, invalid } from '../errors.js';
import { toArrayBuffer } from './der.js';
import { parseDistinguishedName } from './distinguishedName.js';
import { KeyUsageFlags, basicConstraintsExtension, id_pkcs9_at_extensionRequest, keyUsageExtension, subjectAltNameExtension } from './extensions.js';
import type { PkiSigner } from './PkiSigner.js';
import { toPem } from './pem.js';
import { signatureAlgorithmIdentifier, pkiSigningAlgorithm } from './signatureAlgorithm.js';
import { signWithPkiSigner } from './signWithPkiSigner.js';
import { parseSubjectAltNames, type SubjectAltNamesInput } from './subjectAltNames.js';

export interface CreateCsrOptions {
  /** RFC 4514, e.g. "CN=Issuing CA 2027,O=Example,C=US". */
  readonly subject: string;
  readonly subjectAltNames?: SubjectAltNamesInput;
  /** Request a CA certificate: basicConstraints CA:TRUE (critical) and keyUsage keyCertSign+cRLSign (critical). */
  readonly ca?: { readonly pathLength?: number };
  /** Default: per key spec (RSA: RSASSA_PKCS1_V1_5_SHA_256, P-256: ECDSA_SHA_256, P-384: ECDSA_SHA_384). */
  readonly algorithm?: SigningAlgorithm;
}

export const MAX_PATH_LENGTH = 10;

/**
 * A PKCS#10 certification request for the signer's key, signed through the signer.
 * Returns PEM. Bad options are INVALID_ARGUMENT naming the field (`subject`,
 * `subjectAltNames.dns[0]`, `ca.pathLength`, `algorithm`).
 */
export async function createCsr(signer: PkiSigner, options: CreateCsrOptions): Promise<string> {
  const algorithm = pkiSigningAlgorithm(signer.keySpec, options.algorithm);
  const subject = parseDistinguishedName(options.subject, 'subject');
  const extensions: Extension[] = [];
  if (options.ca !== undefined) {
    if (typeof options.ca !== 'object' || options.ca === null) throw invalid('ca: must be an object');
    const { pathLength } = options.ca;
    if (pathLength !== undefined && (!Number.isInteger(pathLength) || pathLength < 0 || pathLength > MAX_PATH_LENGTH)) {
      throw invalid(`ca.pathLength: must be an integer from 0 to ${MAX_PATH_LENGTH}`);
    }
    extensions.push(basicConstraintsExtension(true, pathLength));
    extensions.push(keyUsageExtension(KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign));
  }
  if (options.subjectAltNames !== undefined) {
    const sans = parseSubjectAltNames(options.subjectAltNames, 'subjectAltNames');
    if (sans.count > 0) extensions.push(subjectAltNameExtension(sans.generalNames, false));
  }

  const spkiDer = signer.publicKey.export({ type: 'spki', format: 'der' });
  const subjectPKInfo = AsnConvert.parse(spkiDer, SubjectPublicKeyInfo);
  if (!Buffer.from(AsnConvert.serialize(subjectPKInfo)).equals(spkiDer)) {
    throw new ServiceError('INTERNAL', "the key's SubjectPublicKeyInfo does not re-encode identically");
  }
  const attributes = new Attributes();
  if (extensions.length > 0) {
    attributes.push(new Attribute({ type: id_pkcs9_at_extensionRequest, values: [AsnConvert.serialize(new Extensions(extensions))] }));
  }
  const info = new CertificationRequestInfo({
    version: 0,
    subject,
    subjectPKInfo,
    attributes,
  });
  const infoDer = Buffer.from(AsnConvert.serialize(info));
  const signature = await signWithPkiSigner(signer, algorithm, infoDer);
  const csr = new CertificationRequest({
    certificationRequestInfo: info,
    signatureAlgorithm: signatureAlgorithmIdentifier(algorithm),
    signature: toArrayBuffer(signature),
  });
  const der = Buffer.from(AsnConvert.serialize(csr));
  return toPem('CERTIFICATE REQUEST', der);
}
