/**
 * Certificate storage next to the keys: an optional capability of an HSM (SoftHSMv2 and CloudHSM
 * both store certificate objects), so the token holds the intermediate CA's key and its
 * certificates together. The store does not judge certificates: callers check them first.
 */
import type { CancelSignal } from './KeyManager.js';

export interface CertificateObject {
  /** The certificate, DER. */
  readonly der: Buffer;
  /** Exact DER of its subject and issuer Names and of its serialNumber INTEGER, which tokens index certificates by. */
  readonly subject: Buffer;
  readonly issuer: Buffer;
  readonly serialNumber: Buffer;
}

export interface StoredCertificates {
  /** The key version's own certificate (DER). */
  readonly certificate: Buffer;
  /** Its issuer, that one's issuer, ... (DER, in order). */
  readonly chain: readonly Buffer[];
}

export interface CertificateStoreOptions {
  /** Aborted when the caller stops waiting: no HSM call is started after that. */
  readonly signal?: CancelSignal;
}

export interface CertificateStore {
  /** Undefined when the version has no certificate. NOT_FOUND when the key or version does not exist. */
  getCertificates(name: string, version: number, o?: CertificateStoreOptions): Promise<StoredCertificates | undefined>;
  /** Replaces the version's certificate and chain; afterwards the key reports hasCertificate. */
  putCertificates(
    name: string,
    version: number,
    certificate: CertificateObject,
    chain: readonly CertificateObject[],
    o?: CertificateStoreOptions,
  ): Promise<void>;
}
