/**
 * hsm-signer-admin: key administration in its own process, with the key-manager credential
 * (HSM_ADMIN_PIN / HSM_ADMIN_PIN_FILE), which the serving process never holds.
 *
 *   keys create --name N --spec SPEC
 *   keys rotate --name N
 *   keys list
 *   keys retire --name N --version V --confirm
 *
 * Commands on one host run one at a time (AdminLock): key generation is serialized on the HSM
 * anyway, and interleaved commands could give two keys one version number.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { isKeySpec, KEY_SPECS } from '../crypto/algorithms.js';
import { ServiceError } from '../errors.js';
import { isKeyName } from '../hsm/keyLabel.js';
import { Pkcs11KeyAdmin } from '../hsm/pkcs11/Pkcs11KeyAdmin.js';
import { isMainModule } from '../isMainModule.js';
import { AuditOpenError } from '../audit/AuditLog.js';
import { AdminAudit, type AdminOperation } from './adminAudit.js';
import { AdminLock } from './AdminLock.js';
import { DEFAULT_HSM_MODULE } from '../config/config.js';

const USAGE = `usage: hsm-signer-admin keys <create|rotate|list|retire> [options]
  keys create --name N --spec ${KEY_SPECS.join('|')}
  keys rotate --name N
  keys list [--json]
  keys retire --name N --version V --confirm
environment: HSM_MODULE, HSM_TOKEN_LABEL or HSM_SLOT, HSM_ADMIN_PIN or HSM_ADMIN_PIN_FILE,
  AUDIT_LOG (a file, or stdout: one record per create, rotate and retire)`;

class UsageError extends Error {}

function readPin(variable: string, file: string): string {
  try {
    return readFileSync(file, 'utf8').replace(/\r?\n$/, '');
  } catch (e) {
    throw new UsageError(`${variable}: cannot read the file (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

function adminPin(env: NodeJS.ProcessEnv): string {
  if (env.HSM_ADMIN_PIN) return env.HSM_ADMIN_PIN;
  if (env.HSM_ADMIN_PIN_FILE) return readPin('HSM_ADMIN_PIN_FILE', env.HSM_ADMIN_PIN_FILE);
  // SoftHSMv2 has one user per token: in development the admin falls back to the user PIN.
  const module = env.HSM_MODULE ?? DEFAULT_HSM_MODULE;
  if (module.includes('softhsm')) {
    const userPin = env.HSM_PIN || (env.HSM_PIN_FILE ? readPin('HSM_PIN_FILE', env.HSM_PIN_FILE) : undefined);
    if (userPin !== undefined) {
      console.error('notice: HSM_ADMIN_PIN is not set; using the token user PIN (SoftHSMv2 development only)');
      return userPin;
    }
  }
  throw new UsageError('set HSM_ADMIN_PIN or HSM_ADMIN_PIN_FILE (the key-manager credential)');
}

function parseCommandLine(argv: string[]) {
  try {
    return parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        name: { type: 'string' },
        spec: { type: 'string' },
        version: { type: 'string' },
        confirm: { type: 'boolean', default: false },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (e) {
    throw new UsageError(`${(e as Error).message}\n${USAGE}`);
  }
}

export async function run(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const { values, positionals } = parseCommandLine(argv);
  const [group, command] = positionals;
  if (values.help || group !== 'keys' || !command) {
    console.log(USAGE);
    return values.help ? 0 : 2;
  }
  const name = (): string => {
    if (!isKeyName(values.name)) throw new UsageError('--name: must be 1 to 64 characters of A-Z a-z 0-9 . _ - starting with a letter or digit');
    return values.name;
  };
  const validate: Record<string, () => void> = {
    create: () => {
      name();
      if (!isKeySpec(values.spec)) throw new UsageError(`--spec: must be one of ${KEY_SPECS.join(', ')}`);
    },
    rotate: () => void name(),
    list: () => undefined,
    retire: () => {
      name();
      if (!/^[1-9][0-9]{0,8}$/.test(values.version ?? '')) throw new UsageError('--version: must be a positive integer');
    },
  };
  const check = validate[command];
  if (!check) throw new UsageError(`unknown command 'keys ${command}'\n${USAGE}`);
  check();
  const slot = env.HSM_SLOT !== undefined ? { slotIndex: Number(env.HSM_SLOT) } : { tokenLabel: env.HSM_TOKEN_LABEL ?? 'hsm-signer' };
  const modulePath = env.HSM_MODULE ?? DEFAULT_HSM_MODULE;
  const pin = adminPin(env);
  // Before the HSM is touched: a command that changes keys does not run if its record cannot be written.
  const audit = env.AUDIT_LOG && command !== 'list' ? openAdminAudit(env.AUDIT_LOG, env) : undefined;
  const audited = async <T extends { version: number; keySpec: string }>(
    operation: AdminOperation,
    facts: { keyName: string; keyVersion?: number; keySpec?: string },
    work: () => Promise<T>,
  ): Promise<T> => {
    if (!audit) return work();
    let r: T;
    try {
      r = await work();
    } catch (e) {
      // The command's own failure is what the operator must see first; a record that cannot be written is said too.
      try {
        audit.write(operation, facts, e instanceof ServiceError ? e.code : 'INTERNAL');
      } catch (w) {
        console.error(`hsm-signer-admin: ${(w as Error).message}`);
      }
      throw e;
    }
    try {
      audit.write(operation, { ...facts, keyVersion: r.version, keySpec: r.keySpec }, 'ok');
    } catch (e) {
      throw new Error(`${operation} of '${facts.keyName}' version ${r.version} is done, but ${(e as Error).message}`);
    }
    return r;
  };
  const lock = await AdminLock.acquire(AdminLock.fileFor({ modulePath, ...slot, ...(env.SOFTHSM2_CONF ? { softhsmConf: env.SOFTHSM2_CONF } : {}) }), {
    onWait: (pid) => console.error(`waiting for another hsm-signer-admin (pid ${pid}) to finish: admin commands run one at a time`),
  });
  let admin: Pkcs11KeyAdmin;
  try {
    admin = await Pkcs11KeyAdmin.open({ modulePath, ...slot, pin });
  } catch (e) {
    lock.release();
    audit?.close();
    throw e;
  }
  try {
    switch (command) {
      case 'create': {
        const spec = values.spec as (typeof KEY_SPECS)[number];
        const k = await audited('create', { keyName: name(), keySpec: spec }, () => admin.createKey(name(), spec));
        console.log(`created ${k.name} version ${k.version} (${k.keySpec}), CKA_ID ${k.id}`);
        break;
      }
      case 'rotate': {
        const k = await audited('rotate', { keyName: name() }, () => admin.rotateKey(name()));
        console.log(`rotated ${k.name}: version ${k.version} (${k.keySpec}) is now current, CKA_ID ${k.id}`);
        break;
      }
      case 'list': {
        const keys = await admin.listKeys();
        if (values.json) console.log(JSON.stringify({ keys }, null, 2));
        else if (keys.length === 0) console.log('no keys');
        else for (const k of keys) console.log(`${k.name}\tv${k.version}\t${k.keySpec}\t${k.hasCertificate ? 'certificate' : 'no certificate'}`);
        break;
      }
      case 'retire': {
        const version = Number(values.version);
        // Refusals (unknown version, the only version) come before the --confirm question.
        const target = await admin.retirable(name(), version);
        const what = `${target.name} version ${target.version} (${target.keySpec}, CKA_ID ${target.id}, ${target.hasCertificate ? 'with' : 'without'} certificate)`;
        if (!values.confirm) {
          console.error(
            `would retire ${what}: its key pair${target.hasCertificate ? ' and certificates' : ''} would be destroyed, and signatures by it could no longer be made; add --confirm to do it`,
          );
          return 2;
        }
        const r = await audited('retire', { keyName: target.name, keyVersion: version, keySpec: target.keySpec }, async () => {
          const done = await admin.retireKey(target.name, version);
          return { ...done, version, keySpec: target.keySpec };
        });
        console.log(`retired ${what}; destroyed ${r.objects.length} object(s):`);
        for (const o of r.objects) console.log(`  ${o.kind}\t${o.label}`);
        break;
      }
    }
    return 0;
  } finally {
    await admin.close();
    lock.release();
    audit?.close();
  }
}

function openAdminAudit(target: string, env: NodeJS.ProcessEnv): AdminAudit {
  try {
    return AdminAudit.open(target, env);
  } catch (e) {
    if (e instanceof AuditOpenError) throw new UsageError(e.message);
    throw e;
  }
}

if (isMainModule(import.meta.url)) {
  run(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e: unknown) => {
      const message = e instanceof UsageError || e instanceof ServiceError ? e.message : `failed: ${(e as Error).message}`;
      console.error(`hsm-signer-admin: ${message}`);
      process.exit(e instanceof UsageError ? 2 : 1);
    },
  );
}
