import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import { type PemBlock, pemBlocks } from '../pki/pem.js';
import { ConfigError, type TlsConfig } from './config.js';

/** The PEM the API's TLS uses, read from the files TlsConfig names. */
export interface TlsMaterial {
  readonly cert: Buffer;
  readonly key: Buffer;
  readonly ca?: Buffer;
}

function read(variable: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (e) {
    throw new ConfigError(`${variable}: cannot read the file (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

/** Every block of the file must be a certificate. */
function checkCertificates(variable: string, pem: Buffer): void {
  let blocks: PemBlock[];
  try {
    blocks = pemBlocks(pem.toString('latin1'), variable);
  } catch (e) {
    throw new ConfigError((e as Error).message);
  }
  if (blocks.length === 0) throw new ConfigError(`${variable}: no PEM certificate in the file`);
  blocks.forEach((b, i) => {
    try {
      if (b.label !== 'CERTIFICATE') throw new Error();
      new X509Certificate(b.der);
    } catch {
      throw new ConfigError(`${variable}: PEM block ${i + 1} is not an X.509 certificate`);
    }
  });
}

/**
 * Reads and checks the files: certificates parse, the key is an unencrypted private key that
 * matches the certificate. Errors name the variable and the problem (an OpenSSL error code at
 * most), never the file's content.
 */
export function readTlsFiles(tls: TlsConfig): TlsMaterial {
  const cert = read('TLS_CERT_FILE', tls.certFile);
  const key = read('TLS_KEY_FILE', tls.keyFile);
  const ca = tls.clientCaFile !== undefined ? read('TLS_CLIENT_CA_FILE', tls.clientCaFile) : undefined;
  checkCertificates('TLS_CERT_FILE', cert);
  if (ca) checkCertificates('TLS_CLIENT_CA_FILE', ca);
  try {
    createPrivateKey(key);
  } catch (e) {
    throw new ConfigError(`TLS_KEY_FILE: not an unencrypted PEM private key (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  try {
    createSecureContext({ cert, key });
  } catch (e) {
    throw new ConfigError(`TLS_KEY_FILE: does not match the certificate in TLS_CERT_FILE (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  return { cert, key, ...(ca ? { ca } : {}) };
}
