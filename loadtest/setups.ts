/**
 * The service set-ups a run compares (plain, a crowded token, the audit trail on, a networked
 * HSM's latency): building them, starting the service in one, and checking what the audit set-up
 * wrote.
 */
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { KeySpec } from '../src/crypto/algorithms.js';
import { SOFTHSM_MODULE, type LocalToken } from '../src/dev/softHsm.js';
import { keyLabel } from '../src/hsm/keyLabel.js';
import { DEFAULTS } from './defaults.js';
import { formatInt } from './format.js';
import { ensureFillerObjects, keyNameFor, prepareToken, serviceEnvFor } from './harnessToken.js';
import { latencyModule } from './hsmLatency.js';
import { startLocalService, type LocalService } from './localService.js';
import { auditLogNote, REMOTE_NOTES } from './notes.js';
import type { LoadTestOptions, RunContext, Variant } from './options.js';
import type { KeyUnderTest } from './requests.js';
import { ServiceClient } from './serviceClient.js';
import { AUDIT_LOG_VARIANT, latencyVariant, tokenObjectsVariant } from './variants.js';

export interface RunningVariant {
  readonly variant: Variant;
  readonly service?: LocalService;
  readonly urls: string[];
  readonly api: ServiceClient;
  readonly keys: KeyUnderTest[];
}

/**
 * The set-ups of a run and the key name per spec; locally also the harness token they share
 * (prepared here), remotely the one deployed service.
 */
export async function prepareVariants(
  ctx: RunContext,
  specs: readonly KeySpec[],
): Promise<{ token?: LocalToken; keyNames: Map<KeySpec, string>; variants: Variant[] }> {
  let token: LocalToken | undefined;
  let keyNames = new Map<KeySpec, string>(specs.map((s) => [s, keyNameFor(s)]));
  const variants: Variant[] = [];

  if (ctx.local) {
    ctx.phase(`preparing the harness token in ${ctx.o.tokenDir}`);
    const prepared = await prepareToken(ctx.o.tokenDir, ctx.o.tokenLabel, specs);
    token = prepared.token;
    keyNames = prepared.keys;
    const env = { SOFTHSM2_CONF: token.conf };
    variants.push({ token, modulePath: SOFTHSM_MODULE, env, ...sessionSettings(ctx.o), latencyUs: 0 });
    if (ctx.o.tokenObjects !== undefined && ctx.o.tokenObjects > 0) {
      const n = ctx.o.tokenObjects;
      ctx.phase(`preparing a token with ${formatInt(n)} other objects`);
      const crowded = (await prepareToken(`${ctx.o.tokenDir}-objects-${n}`, `${ctx.o.tokenLabel}-objects`, specs)).token;
      await ensureFillerObjects(crowded, n, (done, total) => ctx.phase(`creating other objects: ${done}/${total}`));
      variants.push({
        label: tokenObjectsVariant(n),
        token: crowded,
        modulePath: SOFTHSM_MODULE,
        env: { SOFTHSM2_CONF: crowded.conf },
        ...sessionSettings(ctx.o),
        latencyUs: 0,
      });
    }
    if (ctx.o.auditLog) {
      // The plain set-up plus AUDIT_LOG: the two differ in nothing else, and the rounds interleave them.
      const auditLog = resolve(`${ctx.o.tokenDir}-audit`, 'audit.log');
      variants.push({
        label: AUDIT_LOG_VARIANT,
        token,
        modulePath: SOFTHSM_MODULE,
        env: { ...env, AUDIT_LOG: auditLog },
        ...sessionSettings(ctx.o),
        latencyUs: 0,
        auditLog,
      });
    }
    if (ctx.o.hsmLatencyUs !== undefined && ctx.o.hsmLatencyUs > 0) {
      const shim = latencyModule(SOFTHSM_MODULE, ctx.o.hsmLatencyUs);
      variants.push({
        label: latencyVariant(ctx.o.hsmLatencyUs),
        token,
        modulePath: shim.modulePath,
        env: { ...env, ...shim.env },
        sessions: ctx.o.hsmSessions ?? DEFAULTS.latencyHsmSessions,
        threads: ctx.o.hsmThreads ?? DEFAULTS.latencyHsmThreads,
        latencyUs: ctx.o.hsmLatencyUs,
      });
    }
  } else {
    if (ctx.o.hsmLatencyUs) ctx.note(REMOTE_NOTES.hsmLatency);
    if (ctx.o.tokenObjects) ctx.note(REMOTE_NOTES.tokenObjects);
    if (ctx.o.auditLog) ctx.note(REMOTE_NOTES.auditLog);
    ctx.note(REMOTE_NOTES.noCeilings);
    variants.push({ modulePath: 'remote', env: {}, latencyUs: 0 });
  }
  return { ...(token ? { token } : {}), keyNames, variants };
}

/** Starts the service in one set-up (or connects to the remote one) and reads its keys. */
export async function startVariant(ctx: RunContext, v: Variant): Promise<RunningVariant> {
  let service: LocalService | undefined;
  let urls = [...ctx.o.urls];
  if (ctx.local) {
    if (v.auditLog) {
      // A new file each round: what it holds is then this round's records only (checkAuditLog).
      mkdirSync(dirname(v.auditLog), { recursive: true });
      rmSync(v.auditLog, { force: true });
    }
    ctx.phase(`starting the service${v.label ? ` (${v.label})` : ''}: ${ctx.o.workers} worker(s)`);
    service = await startLocalService({
      env: {
        ...serviceEnvFor(v.token!),
        ...v.env,
        HSM_MODULE: v.modulePath,
        ...(v.sessions !== undefined ? { HSM_SESSIONS: String(v.sessions) } : {}),
        ...(v.threads !== undefined ? { HSM_THREADS: String(v.threads) } : {}),
      },
      workers: ctx.o.workers,
      ...(ctx.o.cpuProfDir ? { cpuProfDir: ctx.o.cpuProfDir } : {}),
    });
    urls = [service.url];
  }
  try {
    const api = new ServiceClient(urls[0]!, ctx.headers);
    return { variant: v, urls, api, keys: await api.keys(), ...(service ? { service } : {}) };
  } catch (e) {
    await service?.stop();
    throw e;
  }
}

function sessionSettings(o: LoadTestOptions): { sessions?: number; threads?: number } {
  return {
    ...(o.hsmSessions !== undefined ? { sessions: o.hsmSessions } : {}),
    ...(o.hsmThreads !== undefined ? { threads: o.hsmThreads } : {}),
  };
}

/**
 * What the audit set-up wrote in one round: every line must be one whole JSON record (the workers
 * append to one file). The count is every sign answered, warm-up included, so it exceeds the steps' total.
 */
export function checkAuditLog(ctx: RunContext, file: string, round: number): void {
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    ctx.note(auditLogNote(round, file, { error: (e as NodeJS.ErrnoException).code ?? 'error' }));
    return;
  }
  const lines = text.split('\n').filter((l) => l !== '');
  let broken = 0;
  for (const l of lines) {
    try {
      JSON.parse(l);
    } catch {
      broken++;
    }
  }
  ctx.note(auditLogNote(round, file, { records: lines.length, bytes: text.length, broken }));
  rmSync(file, { force: true });
}

/**
 * Where `loadtest hsm` signs: the external HSM given on the command line, or the harness token
 * (prepared here); through the latency module when asked; and the private key's label per spec.
 */
export async function directTargetFor(
  ctx: RunContext,
  pairs: readonly { keySpec: KeySpec }[],
): Promise<{ modulePath: string; env: Record<string, string>; tokenLabel: string; slotIndex?: number; pin: string; labels: Map<KeySpec, string> }> {
  const ext = ctx.o.externalHsm;
  let modulePath: string;
  let env: Record<string, string> = {};
  let tokenLabel: string;
  let pin: string;
  const labels = new Map<KeySpec, string>();
  if (ext) {
    ({ modulePath, tokenLabel, pin } = ext);
    for (const s of pairs) {
      const label = ext.keyLabels[s.keySpec];
      if (!label) throw new Error(`no key label for ${s.keySpec}: pass --key ${s.keySpec}=<CKA_LABEL of the private key>`);
      labels.set(s.keySpec, label);
    }
  } else {
    ctx.phase(`preparing the harness token in ${ctx.o.tokenDir}`);
    const { token, keys } = await prepareToken(
      ctx.o.tokenDir,
      ctx.o.tokenLabel,
      pairs.map((s) => s.keySpec),
    );
    ({ modulePath, label: tokenLabel, pin } = token);
    env = { SOFTHSM2_CONF: token.conf };
    for (const [spec, name] of keys) labels.set(spec, keyLabel(name, 1));
  }
  if (ctx.o.hsmLatencyUs) {
    const shim = latencyModule(modulePath, ctx.o.hsmLatencyUs);
    modulePath = shim.modulePath;
    env = { ...env, ...shim.env };
  }
  return { modulePath, env, tokenLabel, ...(ext?.slotIndex !== undefined ? { slotIndex: ext.slotIndex } : {}), pin, labels };
}
