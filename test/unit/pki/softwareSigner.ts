import { constants, generateKeyPair, privateEncrypt, type KeyObject } from 'node:crypto';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { KEY_SPEC_INFO, algorithmInfo, type KeySpec, type SigningAlgorithm } from '../../../src/crypto/algorithms.js';
import { digestInfo } from '../../../src/crypto/digest.js';
import type { PkiSigner } from '../../../src/pki/PkiSigner.js';

/**
 * A PkiSigner backed by a software key, signing a digest the way the HSM does:
 *  - RSASSA-PKCS1-v1_5: raw PKCS#1 type-1 padding over DigestInfo(hash, digest), i.e. what
 *    CKM_RSA_PKCS does, via crypto.privateEncrypt(RSA_PKCS1_PADDING).
 *  - RSASSA-PSS and ECDSA: node:crypto cannot sign an already-computed digest (crypto.sign
 *    always hashes its input, even with a null algorithm), so these go through
 *    `openssl pkeyutl -sign`, which signs its input as the digest (ECDSA output is DER).
 */
export interface SoftwareSigner extends PkiSigner {
  readonly privateKey: KeyObject;
  /** PKCS#8 PEM of the private key, in a temp dir removed by close(). */
  readonly keyFile: string;
  readonly calls: SigningAlgorithm[];
  close(): Promise<void>;
}

const gen = promisify(generateKeyPair);

function run(cmd: string, args: string[], input: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolve(Buffer.concat(out)) : reject(new Error(`${cmd} ${args.join(' ')}: exit ${code}: ${Buffer.concat(err)}`)),
    );
    child.stdin.end(input);
  });
}

export async function createSoftwareSigner(keySpec: KeySpec): Promise<SoftwareSigner> {
  const spec = KEY_SPEC_INFO[keySpec];
  const { privateKey, publicKey } =
    spec.keyType === 'RSA' ? await gen('rsa', { modulusLength: spec.bits }) : await gen('ec', { namedCurve: spec.curve!.nodeName });
  const dir = await mkdtemp(join(tmpdir(), 'pki-signer-'));
  const keyFile = join(dir, 'key.pem');
  await writeFile(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  const calls: SigningAlgorithm[] = [];
  return {
    keySpec,
    publicKey,
    privateKey,
    keyFile,
    calls,
    async sign(algorithm: SigningAlgorithm, digest: Buffer): Promise<Buffer> {
      const info = algorithmInfo(algorithm);
      if (info.keyType !== spec.keyType) throw new Error(`${algorithm} on a ${keySpec} key`);
      if (digest.length !== info.digestLength) throw new Error(`digest of ${digest.length} bytes for ${algorithm}`);
      calls.push(algorithm);
      if (info.padding === 'PKCS1_V1_5') {
        return privateEncrypt({ key: privateKey, padding: constants.RSA_PKCS1_PADDING }, digestInfo(info.hash, digest));
      }
      const opts = ['-pkeyopt', `digest:${info.hash}`];
      if (info.padding === 'PSS') {
        opts.push('-pkeyopt', 'rsa_padding_mode:pss', '-pkeyopt', 'rsa_pss_saltlen:digest', '-pkeyopt', `rsa_mgf1_md:${info.hash}`);
      }
      return run('openssl', ['pkeyutl', '-sign', '-inkey', keyFile, ...opts], digest);
    },
    async close() {
      await rm(dir, { recursive: true, force: true });
    },
  };
}
