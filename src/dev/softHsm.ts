import { execFileSync, spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
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
  /** Installed with --no-install-recommends (docker-compose recommends the whole Docker engine). */
  readonly withoutRecommends?: boolean;
}

export const SOFTHSM_PACKAGE: SystemPackage = { name: 'softhsm2', present: () => existsSync(SOFTHSM_MODULE) && onPath('softhsm2-util') };

/** Installs missing packages with apt-get (as root), else explains in one line what to install. */
export function ensureSystemPackages(packages: readonly SystemPackage[], log: (line: string) => void = console.error): void {
  const absent = packages.filter((p) => !p.present());
  const missing = absent.map((p) => p.name);
  if (missing.length === 0) return;
  // One apt-get install per kind: with and without the packages' recommendations.
  const lean = absent.filter((p) => p.withoutRecommends).map((p) => p.name);
  const installs = [absent.filter((p) => !p.withoutRecommends).map((p) => p.name), lean.length ? ['--no-install-recommends', ...lean] : []].filter(
    (args) => args.length > 0,
  );
  if (!onPath('apt-get') || process.getuid?.() !== 0) {
    const how = onPath('apt-get')
      ? installs.map((args) => `sudo apt-get install ${args.join(' ')}`).join('; ')
      : "your system's packages, e.g. brew install softhsm";
    throw new Error(`missing system package(s) ${missing.join(', ')}: install them (${how}), then run this again`);
  }
  log(`installing the Debian package(s) ${missing.join(', ')} with apt-get ...`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
  for (const args of installs) execFileSync('apt-get', ['install', '-y', '-qq', ...args], { stdio: 'inherit', env });
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
    initToken(env, label, readFileSync(soPinFile, 'utf8'), pin, tokens);
  }
  return { dir: abs, conf, label, pinFile, pin, modulePath: SOFTHSM_MODULE };
}

/**
 * The child process that initializes a token (CommonJS, run with `node -e`). Its arguments are
 * the pkcs11js path, the module and the label; the PINs come on stdin, as JSON. What it prints on
 * failure is a PKCS#11 error's name or a fixed text, never anything read from stdin.
 */
const INIT_TOKEN_SCRIPT = `
const [pkcs11jsPath, modulePath, label] = process.argv.slice(1);
const fail = (message) => {
  process.stderr.write(message);
  process.exitCode = 1;
};
let pins;
try {
  pins = JSON.parse(require('node:fs').readFileSync(0, 'utf8'));
} catch {
  pins = undefined;
}
if (!pins || typeof pins.soPin !== 'string' || typeof pins.pin !== 'string') {
  fail('the PINs did not arrive on stdin');
} else {
  const p = require(pkcs11jsPath);
  const lib = new p.PKCS11();
  try {
    lib.load(modulePath);
    lib.C_Initialize();
    try {
      const free = lib.C_GetSlotList(true).find((s) => (lib.C_GetTokenInfo(s).flags & p.CKF_TOKEN_INITIALIZED) === 0);
      if (!free) throw Object.assign(new Error('the module has no free slot'), { code: 0 });
      lib.C_InitToken(free, pins.soPin, label.padEnd(32, ' '));
      const session = lib.C_OpenSession(free, p.CKF_SERIAL_SESSION | p.CKF_RW_SESSION);
      lib.C_Login(session, p.CKU_SO, pins.soPin);
      lib.C_InitPIN(session, pins.pin);
      lib.C_Logout(session);
      lib.C_CloseSession(session);
    } finally {
      try {
        lib.C_Finalize();
      } catch {
        // the error that brought us here is the one to report
      }
    }
  } catch (e) {
    // pkcs11js errors name the function and the CKR only; anything else gets a fixed text.
    fail(e && typeof e.code === 'number' ? (e.method ? e.method + ' failed: ' : '') + String(e.message) : 'unexpected ' + ((e && e.name) || 'error'));
  }
}
`;

/**
 * Initializes a free SoftHSMv2 slot as token `label` with the two PINs, through PKCS#11 in a child
 * process that reads the PINs from its stdin. softhsm2-util takes them only as arguments (which
 * every user of the machine can read in `ps`) or from a terminal. A child, because PKCS#11 state
 * is per process: a C_Finalize here would end the sessions of a service already running in it.
 */
function initToken(env: NodeJS.ProcessEnv, label: string, soPin: string, pin: string, tokens: string): void {
  if (Buffer.byteLength(label) > 32) throw new Error(`token label ${label}: at most 32 bytes`);
  const pkcs11js = createRequire(import.meta.url).resolve('pkcs11js');
  const r = spawnSync(process.execPath, ['--input-type=commonjs', '-e', INIT_TOKEN_SCRIPT, pkcs11js, SOFTHSM_MODULE, label], {
    // NODE_OPTIONS is the parent's business (e.g. a loader); the child needs none of it.
    env: { ...env, NODE_OPTIONS: '' },
    input: JSON.stringify({ soPin, pin }),
    encoding: 'utf8',
    stdio: ['pipe', 'ignore', 'pipe'],
    timeout: 60_000,
  });
  if (r.status !== 0) {
    const why = r.stderr?.trim() || r.error?.message || (r.signal ? `killed by ${r.signal}` : `exit ${r.status}`);
    // A token initialized without its user PIN would be found by its label next time and never log in.
    throw new Error(`could not initialize the SoftHSMv2 token ${label}: ${why} (if a token with that label now exists, remove ${tokens} and run this again)`);
  }
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
