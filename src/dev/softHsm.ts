import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { DEFAULT_HSM_MODULE } from '../config/config.js';
import type { KeySpec } from '../crypto/algorithms.js';
import type { KeyAdmin } from '../hsm/KeyAdmin.js';

/** Local SoftHSMv2 for development and tests: install, a project-local token, demo keys. */
export const SOFTHSM_MODULE = DEFAULT_HSM_MODULE;

const onPath = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;

/** A Debian package the project needs on the machine, and how to tell it is there. */
export interface SystemPackage {
  readonly name: string;
  readonly present: () => boolean;
}

export const SOFTHSM_PACKAGE: SystemPackage = { name: 'softhsm2', present: () => existsSync(SOFTHSM_MODULE) && onPath('softhsm2-util') };

/** Installs missing packages with apt-get (as root), else explains in one line what to install. */
export function ensureSystemPackages(packages: readonly SystemPackage[], log: (line: string) => void = console.error): void {
  const missing = packages.filter((p) => !p.present()).map((p) => p.name);
  if (missing.length === 0) return;
  if (!onPath('apt-get') || process.getuid?.() !== 0) {
    const how = onPath('apt-get') ? `sudo apt-get install ${missing.join(' ')}` : "your system's packages, e.g. brew install softhsm";
    throw new Error(`missing system package(s) ${missing.join(', ')}: install them (${how}), then run this again`);
  }
  log(`installing the Debian package(s) ${missing.join(', ')} with apt-get ...`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
  execFileSync('apt-get', ['install', '-y', '-qq', ...missing], { stdio: 'inherit', env });
}

export function ensureSoftHsmInstalled(log?: (line: string) => void): void {
  ensureSystemPackages([SOFTHSM_PACKAGE], log);
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
