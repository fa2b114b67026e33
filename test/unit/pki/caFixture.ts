import assert from 'node:assert/strict';
import type { KeySpec, SigningAlgorithm } from '../../../src/crypto/algorithms.js';
import { createCsr } from '../../../src/pki/createCsr.js';
import { createSoftwareSigner, type SoftwareSigner } from './softwareSigner.js';
import { INTERMEDIATE_EXT, type TempDir, makeRoot, openssl, signAsRoot, type OpensslKeyAlg } from './openssl.js';

/**
 * The offline-root flow up to a usable intermediate: openssl makes a root, our createCsr makes
 * the intermediate's CSR for an HSM-like (software) key, openssl checks it and signs it as the root.
 * Files in `dir`: `${name}-root.pem/.key`, `${name}-int.pem`.
 */
export interface CaFixture {
  readonly name: string;
  readonly signer: SoftwareSigner;
  readonly rootPem: string;
  readonly intPem: string;
  readonly rootFile: string;
  readonly intFile: string;
}

export async function makeCa(
  dir: TempDir,
  name: string,
  spec: KeySpec,
  opts: { csrAlgorithm?: SigningAlgorithm; rootAlg?: OpensslKeyAlg; intExt?: string; days?: number } = {},
): Promise<CaFixture> {
  const [signer] = await Promise.all([
    createSoftwareSigner(spec),
    makeRoot(dir, { name: `${name}-root`, alg: opts.rootAlg ?? 'ec-p384', subject: `/C=US/O=Example/CN=Root for ${name}` }),
  ]);
  const csrPem = await createCsr(signer, {
    subject: `CN=Issuing CA ${name},O=Example,C=US`,
    ca: { pathLength: 0 },
    ...(opts.csrAlgorithm ? { algorithm: opts.csrAlgorithm } : {}),
  });
  await dir.write(`${name}-int.csr`, csrPem);
  const v = await openssl(dir.path, 'req', '-verify', '-in', `${name}-int.csr`, '-noout');
  assert.equal(v.code, 0, v.stderr);
  assert.match(v.stderr, /verify OK/);
  const intPem = await signAsRoot(dir, csrPem, {
    root: `${name}-root`,
    out: `${name}-int`,
    ext: opts.intExt ?? INTERMEDIATE_EXT,
    days: opts.days ?? 730,
  });
  return {
    name,
    signer,
    rootPem: await dir.read(`${name}-root.pem`),
    intPem,
    rootFile: `${name}-root.pem`,
    intFile: `${name}-int.pem`,
  };
}

/** `openssl verify -x509_strict` of a leaf against the fixture's root and intermediate. */
export async function opensslVerify(dir: TempDir, ca: CaFixture, leafFile: string, opts: { purpose?: string; untrusted?: string[] } = {}): Promise<void> {
  const untrusted = opts.untrusted ?? [ca.intFile];
  const r = await openssl(
    dir.path,
    'verify',
    '-x509_strict',
    ...(opts.purpose ? ['-purpose', opts.purpose] : []),
    '-CAfile',
    ca.rootFile,
    ...untrusted.flatMap((u) => ['-untrusted', u]),
    leafFile,
  );
  assert.equal(r.code, 0, `openssl verify ${leafFile}: ${r.stdout}${r.stderr}`);
  assert.equal(r.stdout.trim(), `${leafFile}: OK`);
}
