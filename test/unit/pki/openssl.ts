import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

/** Test helpers around the openssl CLI: the "offline root" and an independent verifier. */

const exec = promisify(execFile);

export interface OpensslResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs openssl in `cwd`; never throws on a non-zero exit (the result has the code). */
export async function openssl(cwd: string, ...args: string[]): Promise<OpensslResult> {
  try {
    const { stdout, stderr } = await exec('openssl', args, { cwd, encoding: 'utf8' });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof err.code === 'number' ? err.code : 1, stdout: err.stdout ?? '', stderr: err.stderr ?? String(e) };
  }
}

/** Like openssl() but throws unless it exits 0; returns stdout. */
export async function opensslOk(cwd: string, ...args: string[]): Promise<string> {
  const r = await openssl(cwd, ...args);
  if (r.code !== 0) throw new Error(`openssl ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

export class TempDir {
  private constructor(readonly path: string) {}

  static async create(): Promise<TempDir> {
    return new TempDir(await mkdtemp(join(tmpdir(), 'pki-test-')));
  }

  file(name: string): string {
    return join(this.path, name);
  }

  async write(name: string, content: string | Buffer): Promise<string> {
    await writeFile(this.file(name), content);
    return this.file(name);
  }

  read(name: string): Promise<string> {
    return readFile(this.file(name), 'utf8');
  }

  async remove(): Promise<void> {
    await rm(this.path, { recursive: true, force: true });
  }
}

/** A minimal config so nothing depends on the machine's openssl.cnf. */
const REQ_CONFIG = `[req]
distinguished_name = dn
prompt = no
[dn]
`;

export type OpensslKeyAlg = 'ec-p256' | 'ec-p384' | 'rsa2048' | 'ed25519' | 'rsa1024' | 'ec-secp256k1';

function newKeyArgs(alg: OpensslKeyAlg): string[] {
  switch (alg) {
    case 'ec-p256':
      return ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256'];
    case 'ec-p384':
      return ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-384'];
    case 'rsa2048':
      return ['-newkey', 'rsa:2048'];
    case 'ed25519':
      return ['-newkey', 'ed25519'];
    case 'rsa1024':
      return ['-newkey', 'rsa:1024'];
    case 'ec-secp256k1':
      return ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:secp256k1'];
  }
}

/**
 * An offline root made by openssl: self-signed, CA:TRUE (critical), keyCertSign+cRLSign,
 * SKI. Writes `${name}.key` and `${name}.pem`; returns the PEM.
 */
export async function makeRoot(
  dir: TempDir,
  opts: { name?: string; subject?: string; alg?: OpensslKeyAlg; days?: number; pathlen?: number } = {},
): Promise<string> {
  const name = opts.name ?? 'root';
  const pathlen = opts.pathlen === undefined ? '' : `,pathlen:${opts.pathlen}`;
  await dir.write(
    `${name}.cnf`,
    `${REQ_CONFIG}[v3_root]
basicConstraints = critical,CA:TRUE${pathlen}
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
`,
  );
  await opensslOk(
    dir.path,
    'req',
    '-x509',
    '-config',
    `${name}.cnf`,
    '-extensions',
    'v3_root',
    ...newKeyArgs(opts.alg ?? 'ec-p384'),
    '-nodes',
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.pem`,
    '-subj',
    opts.subject ?? '/C=US/O=Example/CN=Example Offline Root',
    '-days',
    String(opts.days ?? 3650),
  );
  return dir.read(`${name}.pem`);
}

export const INTERMEDIATE_EXT = `basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
`;

/** The root (`${root}.pem` / `${root}.key`) signs `csrPem` with the given extfile content; returns the certificate PEM. */
export async function signAsRoot(
  dir: TempDir,
  csrPem: string,
  opts: { root?: string; out: string; ext?: string; days?: number; digest?: string },
): Promise<string> {
  const root = opts.root ?? 'root';
  await dir.write(`${opts.out}.csr`, csrPem);
  await dir.write(`${opts.out}.ext`, opts.ext ?? INTERMEDIATE_EXT);
  await opensslOk(
    dir.path,
    'x509',
    '-req',
    '-in',
    `${opts.out}.csr`,
    '-CA',
    `${root}.pem`,
    '-CAkey',
    `${root}.key`,
    '-set_serial',
    `0x${Date.now().toString(16)}${Math.floor(Math.random() * 1e6).toString(16)}`,
    '-days',
    String(opts.days ?? 730),
    `-${opts.digest ?? 'sha384'}`,
    '-extfile',
    `${opts.out}.ext`,
    '-out',
    `${opts.out}.pem`,
  );
  return dir.read(`${opts.out}.pem`);
}

/** A CSR made entirely by openssl (new key); writes `${name}.key` and `${name}.csr`; returns the CSR PEM. */
export async function opensslCsr(
  dir: TempDir,
  opts: { name: string; subject: string; alg?: OpensslKeyAlg; addext?: string[]; sigopts?: string[]; digest?: string },
): Promise<string> {
  await dir.write(`${opts.name}.cnf`, REQ_CONFIG);
  await opensslOk(
    dir.path,
    'req',
    '-new',
    '-config',
    `${opts.name}.cnf`,
    ...newKeyArgs(opts.alg ?? 'ec-p256'),
    '-nodes',
    '-keyout',
    `${opts.name}.key`,
    '-subj',
    opts.subject,
    '-out',
    `${opts.name}.csr`,
    ...(opts.addext ?? []).flatMap((e) => ['-addext', e]),
    ...(opts.sigopts ?? []).flatMap((o) => ['-sigopt', o]),
    ...(opts.digest ? [`-${opts.digest}`] : []),
  );
  return dir.read(`${opts.name}.csr`);
}
