import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { KeySpec } from '../crypto/algorithms.js';
import type { KeyAdmin } from '../hsm/KeyAdmin.js';

/** Local SoftHSMv2 for development and tests: install, a project-local token, demo keys. */
export const SOFTHSM_MODULE = '/usr/lib/softhsm/libsofthsm2.so';

const onPath = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;

/** Installs the softhsm2 package with apt-get when it is missing (as root), else explains in one line. */
export function ensureSoftHsmInstalled(log: (line: string) => void = console.error): void {
  if (existsSync(SOFTHSM_MODULE) && onPath('softhsm2-util')) return;
  const root = process.getuid?.() === 0;
  if (!onPath('apt-get') || !root) {
    throw new Error(`SoftHSMv2 is not installed: install the package 'softhsm2' (${onPath('apt-get') ? 'sudo apt-get install softhsm2' : 'e.g. brew install softhsm, or your distribution\'s softhsm2 package'}), then run this again`);
  }
  log('SoftHSMv2 is missing: installing the Debian package softhsm2 with apt-get ...');
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
  execFileSync('apt-get', ['install', '-y', '-qq', 'softhsm2'], { stdio: 'inherit', env });
}

export interface LocalToken {
  readonly dir: string;
  readonly conf: string;
  readonly label: string;
  readonly pinFile: string;
  readonly pin: string;
  readonly modulePath: string;
}

/**
 * A token whose files live under `dir` (git-ignored), with its own SOFTHSM2_CONF. The PINs are
 * random, made on first use and kept in files readable by the owner only.
 */
export function ensureLocalToken(dir: string, label = 'hsm-signer'): LocalToken {
  const abs = resolve(dir);
  const tokens = join(abs, 'tokens');
  mkdirSync(tokens, { recursive: true, mode: 0o700 });
  const conf = join(abs, 'softhsm2.conf');
  writeFileSync(conf, `directories.tokendir = ${tokens}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`);
  const pinFile = join(abs, 'user.pin');
  const soPinFile = join(abs, 'so.pin');
  for (const f of [pinFile, soPinFile]) {
    if (!existsSync(f)) {
      writeFileSync(f, randomBytes(12).toString('hex'), { mode: 0o600 });
      chmodSync(f, 0o600);
    }
  }
  const pin = readFileSync(pinFile, 'utf8');
  const env = { ...process.env, SOFTHSM2_CONF: conf };
  const slots = execFileSync('softhsm2-util', ['--show-slots'], { env, encoding: 'utf8' });
  if (!new RegExp(`Label:\\s+${label.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\s*$`, 'm').test(slots)) {
    execFileSync('softhsm2-util', ['--init-token', '--free', '--label', label, '--pin', pin, '--so-pin', readFileSync(soPinFile, 'utf8')], { env, stdio: 'ignore' });
  }
  return { dir: abs, conf, label, pinFile, pin, modulePath: SOFTHSM_MODULE };
}

export const DEMO_KEYS: readonly { name: string; spec: KeySpec }[] = [
  { name: 'demo-rsa-2048', spec: 'RSA_2048' },
  { name: 'demo-ec-p256', spec: 'ECC_NIST_P256' },
  { name: 'demo-ec-p384', spec: 'ECC_NIST_P384' },
];

/** Creates the demo keys that are not on the token yet; returns the names created. */
export async function ensureDemoKeys(admin: KeyAdmin, keys = DEMO_KEYS): Promise<string[]> {
  const existing = new Set((await admin.listKeys()).map((k) => k.name));
  const created: string[] = [];
  for (const k of keys) {
    if (existing.has(k.name)) continue;
    await admin.createKey(k.name, k.spec);
    created.push(k.name);
  }
  return created;
}
