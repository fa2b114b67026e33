/**
 * hsm-signer-admin: key administration in its own process, with the key-manager credential
 * (HSM_ADMIN_PIN / HSM_ADMIN_PIN_FILE), which the serving process never holds.
 *
 *   keys create --name N --spec SPEC
 *   keys rotate --name N
 *   keys list [--json] [--service-url URL]
 *   keys retire --name N --version V --confirm [--request R --approvals A...]
 *   approve --key my.pem request.json   (./quorumCli.ts: M-of-N approval, HSM_APPROVERS_FILE)
 *   backups prune ...   (./backupsCommand.ts: CloudHSM backups through the AWS API, no HSM login)
 *
 * Commands on one host run one at a time (AdminLock): key generation is serialized on the HSM
 * anyway, and interleaved commands could give two keys one version number.
 */
import { parseArgs } from 'node:util';
import { isKeySpec, KEY_SPECS } from '../crypto/algorithms.js';
import { ServiceError } from '../errors.js';
import { isKeyName, keyLabel } from '../hsm/keyLabel.js';
import { Pkcs11KeyAdmin } from '../hsm/pkcs11/Pkcs11KeyAdmin.js';
import { isMainModule } from '../isMainModule.js';
import { AuditOpenError } from '../audit/AuditLog.js';
import { AdminAudit, type AdminOperation } from './adminAudit.js';
import { AdminLock } from './AdminLock.js';
import { BACKUPS_USAGE, runBackups } from './backupsCommand.js';
import { ConfigError, DEFAULT_HSM_MODULE, readSecretFile } from '../config/config.js';
import { keySharingAdvice, moduleVendor, type ModuleVendor } from './moduleVendor.js';
import { serviceUsability, usabilityColumn, type ServiceUsability } from './serviceUsability.js';
import { QuorumError } from './quorum.js';
import { approveCommand, QuorumGate, type QuorumOperation } from './quorumCli.js';

const USAGE = `usage: hsm-signer-admin keys <create|rotate|list|retire> [options]
       hsm-signer-admin approve --key my.pem request.json
       hsm-signer-admin backups prune [options]
  keys create --name N --spec ${KEY_SPECS.join('|')}
  keys rotate --name N
  keys list [--json] [--service-url URL]
  keys retire --name N --version V --confirm [--request R --approvals A...]
  with HSM_APPROVERS_FILE, retire (and what HSM_QUORUM_OPERATIONS lists: create, rotate) first prints an
  approval request; then: --request request.json --approvals a1.json --approvals a2.json ...
  [--expires-in SECONDS] [--allow-small-quorum]
  approve --key my.pem request.json   signs an approval request with one approver's key (prints the approval)
${BACKUPS_USAGE}
environment (keys): HSM_MODULE, HSM_TOKEN_LABEL or HSM_SLOT, HSM_ADMIN_PIN or HSM_ADMIN_PIN_FILE,
  AUDIT_LOG (a file, or stdout: one record per create, rotate and retire),
  HSM_SIGNER_USER (the service's HSM user: create and rotate print the command that shares a new key
  with it, on a module that needs one), HSM_MODULE_VENDOR (cloudhsm or none: when the module's file name
  does not tell), HSM_SIGNER_URL (= --service-url: list shows whether the service can sign with each
  version) and HSM_SIGNER_TOKEN (its bearer token, if it needs one), HSM_APPROVERS_FILE (quorum approval),
  HSM_QUORUM_OPERATIONS (create,rotate: quorum for those too), HSM_APPROVALS_STATE (used requests; default
  approvals-state.json next to HSM_APPROVERS_FILE)`;

class UsageError extends Error {}

/** The service's reading of a secret file (final newline dropped, empty refused), its refusal as a usage error. */
function readPin(variable: string, file: string): string {
  try {
    return readSecretFile(variable, file);
  } catch (e) {
    throw e instanceof ConfigError ? new UsageError(e.message) : e;
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
        'service-url': { type: 'string' },
        request: { type: 'string' },
        approvals: { type: 'string', multiple: true },
        'expires-in': { type: 'string' },
        'allow-small-quorum': { type: 'boolean', default: false },
        key: { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (e) {
    throw new UsageError(`${(e as Error).message}\n${USAGE}`);
  }
}

export async function run(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  if (argv[0] === 'backups') return runBackups(argv.slice(1), console, env);
  const { values, positionals } = parseCommandLine(argv);
  const [group, command] = positionals;
  if (group === 'approve' && !values.help) return approveCommand(values.key, positionals[1]);
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
  const vendor = vendorOf(modulePath, env);
  const signingUser = env.HSM_SIGNER_USER;
  if (signingUser !== undefined && signingUser !== '' && !/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(signingUser)) {
    throw new UsageError('HSM_SIGNER_USER: must be 1 to 64 characters of A-Z a-z 0-9 . _ - starting with a letter or digit');
  }
  const serviceUrl = values['service-url'] ?? env.HSM_SIGNER_URL;
  if (serviceUrl !== undefined && serviceUrl !== '' && !URL.canParse(serviceUrl))
    throw new UsageError('--service-url (or HSM_SIGNER_URL): must be a URL such as https://signer.example:8443');
  const quorum = command !== 'list' ? QuorumGate.fromEnv(env, values['allow-small-quorum']) : undefined;
  if (values.approvals && !quorum?.needs(command as QuorumOperation))
    throw new UsageError(`--approvals: 'keys ${command}' needs no approvals here (HSM_APPROVERS_FILE unset, or the operation not in HSM_QUORUM_OPERATIONS)`);
  const tokenLabel = slot.tokenLabel ?? `slot ${env.HSM_SLOT}`;
  /** undefined: no quorum for it; null: the request was printed, stop; else the approvers' names. */
  // `--approvals a.json b.json` as well as `--approvals a.json --approvals b.json`.
  const approvals = values.approvals ? [...values.approvals, ...positionals.slice(2)] : undefined;
  const approvedBy = (operation: QuorumOperation, keyName: string, keyVersion: number | null, keySpec: string | null = null): string[] | undefined | null =>
    quorum?.needs(operation)
      ? (quorum.authorize(
          { operation, keyName, keyVersion, keySpec, tokenLabel },
          {
            ...(approvals ? { approvals } : {}),
            ...(values.request ? { request: values.request } : {}),
            ...(values['expires-in'] ? { expiresIn: values['expires-in'] } : {}),
          },
        ) ?? null)
      : undefined;
  const pin = adminPin(env);
  // Before the HSM is touched: a command that changes keys does not run if its record cannot be written.
  const audit = env.AUDIT_LOG && command !== 'list' ? openAdminAudit(env.AUDIT_LOG, env) : undefined;
  const audited = async <T extends { version: number; keySpec: string }>(
    operation: AdminOperation,
    facts: { keyName: string; keyVersion?: number; keySpec?: string; approvers?: string[] },
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
        const approvers = approvedBy('create', name(), null, spec);
        if (approvers === null) return 2;
        const k = await audited('create', { keyName: name(), keySpec: spec, ...(approvers ? { approvers } : {}) }, () => admin.createKey(name(), spec));
        console.log(`created ${k.name} version ${k.version} (${k.keySpec}), CKA_ID ${k.id}`);
        printSharing(vendor, keyLabel(k.name, k.version), signingUser);
        break;
      }
      case 'rotate': {
        const approvers = approvedBy('rotate', name(), null);
        if (approvers === null) return 2;
        const k = await audited('rotate', { keyName: name(), ...(approvers ? { approvers } : {}) }, () => admin.rotateKey(name()));
        console.log(`rotated ${k.name}: version ${k.version} (${k.keySpec}) is now current, CKA_ID ${k.id}`);
        printSharing(vendor, keyLabel(k.name, k.version), signingUser);
        break;
      }
      case 'list': {
        const keys = await admin.listKeys();
        let usability: ServiceUsability | undefined;
        if (serviceUrl) {
          try {
            usability = await serviceUsability(serviceUrl, env.HSM_SIGNER_TOKEN);
          } catch (e) {
            console.error(`hsm-signer-admin: cannot ask the service at ${serviceUrl} which versions it can sign with: ${(e as Error).message}`);
          }
        }
        if (values.json) console.log(JSON.stringify({ keys: usability ? keys.map((k) => ({ ...k, ...usability.of(k.name, k.version) })) : keys }, null, 2));
        else if (keys.length === 0) console.log('no keys');
        else
          for (const k of keys) {
            const column = usability ? `\t${usabilityColumn(usability.of(k.name, k.version))}` : '';
            console.log(`${k.name}\tv${k.version}\t${k.keySpec}\t${k.hasCertificate ? 'certificate' : 'no certificate'}${column}`);
          }
        break;
      }
      case 'retire': {
        const version = Number(values.version);
        // Refusals (unknown version, the only version) come before the --confirm question.
        const target = await admin.retirable(name(), version);
        const what = `${target.name} version ${target.version} (${target.keySpec}, CKA_ID ${target.id}, ${target.hasCertificate ? 'with' : 'without'} certificate)`;
        if (quorum?.needs('retire') && !values.approvals) {
          approvedBy('retire', target.name, version);
          return 2;
        }
        if (!values.confirm) {
          console.error(
            `would retire ${what}: its key pair${target.hasCertificate ? ' and certificates' : ''} would be destroyed, and signatures by it could no longer be made; add --confirm to do it`,
          );
          return 2;
        }
        const approvers = approvedBy('retire', target.name, version) ?? undefined;
        if (approvers) console.error(`approved by ${approvers.join(', ')}`);
        const r = await audited(
          'retire',
          { keyName: target.name, keyVersion: version, keySpec: target.keySpec, ...(approvers ? { approvers } : {}) },
          async () => {
            const done = await admin.retireKey(target.name, version);
            return { ...done, version, keySpec: target.keySpec };
          },
        );
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

function vendorOf(modulePath: string, env: NodeJS.ProcessEnv): ModuleVendor | undefined {
  try {
    return moduleVendor(modulePath, env.HSM_MODULE_VENDOR);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

function printSharing(vendor: ModuleVendor | undefined, label: string, signingUser: string | undefined): void {
  for (const line of keySharingAdvice(vendor, label, signingUser)) console.log(line);
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
      const message = e instanceof UsageError || e instanceof ServiceError || e instanceof QuorumError ? e.message : `failed: ${(e as Error).message}`;
      console.error(`hsm-signer-admin: ${message}`);
      process.exit(e instanceof UsageError || e instanceof QuorumError ? 2 : 1);
    },
  );
}
