/**
 * What the csr, issue and verify scenarios need before the load starts, and how their answers
 * are checked: CSRs by their self-signature and public key; issued certificates by the issuing
 * key's signature; verify requests need good signatures, made by the service first.
 *
 * For issuance the key must be an intermediate CA with its certificate attached. If it has none,
 * the harness makes a throwaway offline root in memory, asks the service for the key's CSR,
 * signs it with the root and attaches it (PUT /v1/keys/{name}/certificate) - on the harness's
 * own token, or on a deployed service only when told to (--pki-setup).
 */
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import type { SigningAlgorithm } from '../src/crypto/algorithms.js';
import type { KeyUnderTest, ScenarioFixtures } from './requests.js';
import type { ScenarioSpec } from './scenarios.js';
import { ServiceCallError, type ServiceClient } from './serviceClient.js';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

const EC_SIGN = { name: 'ECDSA', hash: 'SHA-256' } as const;
const EC_KEY = { name: 'ECDSA', namedCurve: 'P-256' } as const;

function spkiOf(key: KeyUnderTest): Buffer[] {
  return [...key.publicKeys.values()].map((k) => k.export({ type: 'spki', format: 'der' }));
}

export async function verifyCsr(pem: string, key: KeyUnderTest): Promise<string | undefined> {
  const csr = new x509.Pkcs10CertificateRequest(pem);
  if (!(await csr.verify())) return 'its self-signature does not verify';
  const spki = Buffer.from(csr.publicKey.rawData);
  if (!spkiOf(key).some((k) => k.equals(spki))) return "it holds a public key that is not the key's";
  return undefined;
}

async function leafCsrs(n: number): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const keys = (await webcrypto.subtle.generateKey(EC_KEY, true, ['sign', 'verify'])) as CryptoKeyPair;
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: `CN=loadtest-leaf-${i}.example`, keys, signingAlgorithm: EC_SIGN });
    out.push(csr.toString('pem'));
  }
  return out;
}

/** Makes `key` an intermediate CA signed by a fresh in-memory root; returns its certificate. */
async function attachThrowawayCa(api: ServiceClient, key: KeyUnderTest): Promise<x509.X509Certificate> {
  const rootKeys = (await webcrypto.subtle.generateKey(EC_KEY, true, ['sign', 'verify'])) as CryptoKeyPair;
  const now = Date.now();
  const root = await x509.X509CertificateGenerator.createSelfSigned({
    name: 'CN=hsm-signer loadtest throwaway root',
    keys: rootKeys,
    notBefore: new Date(now - 3_600_000),
    notAfter: new Date(now + 2 * 365 * 86_400_000),
    signingAlgorithm: EC_SIGN,
    extensions: [
      new x509.BasicConstraintsExtension(true, 1, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    ],
  });
  const { csrPem } = await api.call<{ csrPem: string }>('POST', `/v1/keys/${encodeURIComponent(key.name)}/csr`, {
    subject: 'CN=hsm-signer loadtest issuing CA,O=Load Test',
    ca: { pathLength: 0 },
  });
  const csr = new x509.Pkcs10CertificateRequest(csrPem);
  const cert = await x509.X509CertificateGenerator.create({
    subject: csr.subject,
    issuer: root.subject,
    publicKey: csr.publicKey,
    signingKey: rootKeys.privateKey,
    notBefore: new Date(now - 3_600_000),
    notAfter: new Date(now + 365 * 86_400_000),
    signingAlgorithm: EC_SIGN,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true),
      await x509.SubjectKeyIdentifierExtension.create(csr.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(root.publicKey),
    ],
  });
  await api.call('PUT', `/v1/keys/${encodeURIComponent(key.name)}/certificate`, { certificatePem: cert.toString('pem'), chainPem: root.toString('pem') });
  return cert;
}

async function issuerCertificate(api: ServiceClient, key: KeyUnderTest, mayAttach: boolean): Promise<x509.X509Certificate> {
  try {
    const r = await api.call<{ certificatePem: string }>('GET', `/v1/keys/${encodeURIComponent(key.name)}/certificate`);
    return new x509.X509Certificate(r.certificatePem);
  } catch (e) {
    if (!(e instanceof ServiceCallError) || e.status !== 404) throw e;
    if (!mayAttach) {
      throw new Error(`issue: key '${key.name}' has no CA certificate; attach one, or pass --pki-setup to let the harness attach a throwaway one`);
    }
    return attachThrowawayCa(api, key);
  }
}

/** The fixtures a scenario needs; throws with a clear message if the service lacks a route. */
export async function fixturesFor(spec: ScenarioSpec, key: KeyUnderTest, api: ServiceClient, o: { mayAttachCa: boolean }): Promise<ScenarioFixtures> {
  const kinds = new Set(spec.ops.map((x) => x.op.kind));
  const fixtures: { -readonly [K in keyof ScenarioFixtures]: ScenarioFixtures[K] } = {};
  if (kinds.has('verify')) {
    fixtures.sign = async (k: KeyUnderTest, algorithm: SigningAlgorithm, message: Buffer) => {
      const r = await api.call<{ signature: string }>('POST', `/v1/keys/${encodeURIComponent(k.name)}/sign`, {
        algorithm,
        message: message.toString('base64'),
      });
      return Buffer.from(r.signature, 'base64');
    };
  }
  if (kinds.has('csr')) fixtures.verifyCsr = verifyCsr;
  if (kinds.has('issue')) {
    const issuer = await issuerCertificate(api, key, o.mayAttachCa).catch((e: unknown) => {
      if (e instanceof ServiceCallError && e.status === 404) {
        throw new Error(`${spec.name}: the service has no PKI routes (${e.method} ${e.path} answered 404)`);
      }
      throw e;
    });
    fixtures.issue = {
      csrPems: await leafCsrs(4),
      profile: 'tls-client',
      validityDays: 30,
      async verifyCertificate(pem: string) {
        const cert = new x509.X509Certificate(pem);
        if (!(await cert.verify({ publicKey: issuer.publicKey, signatureOnly: true }))) return "its signature does not verify with the issuer's key";
        if (cert.issuer !== issuer.subject) return `issuer is '${cert.issuer}', not '${issuer.subject}'`;
        return undefined;
      },
    };
  }
  return fixtures;
}
