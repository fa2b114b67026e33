/**
 * The harness's own SoftHSMv2 tokens (under .hsm/, git-ignored), so a load test never touches
 * the development token: one with the demo keys, and on request one that also holds many other
 * objects, to show that a crowded token does not slow signing (the service caches handles).
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { KeySpec } from '../src/crypto/algorithms.js';
import { DEMO_KEYS, ensureDemoKeys, ensureLocalToken, ensureSoftHsmInstalled, type LocalToken } from '../src/dev/softHsm.js';
import { keyLabel } from '../src/hsm/keyLabel.js';
import { P11 } from '../src/hsm/pkcs11/constants.js';
import { signingKeyPairTemplates } from '../src/hsm/pkcs11/keyTemplates.js';
import { Pkcs11KeyAdmin } from '../src/hsm/pkcs11/Pkcs11KeyAdmin.js';
import { ThreadedPkcs11 } from '../src/hsm/pkcs11/ThreadedPkcs11.js';

/**
 * The service's settings for a harness token, and nothing from the caller's shell (a stray HSM_SESSIONS would change what is measured).
 * Issued certificates are recorded in a SQLite file next to the token, as `npm start` does.
 */
export function serviceEnvFor(token: LocalToken): Record<string, string> {
  return {
    SOFTHSM2_CONF: token.conf,
    HSM_MODULE: token.modulePath,
    HSM_TOKEN_LABEL: token.label,
    HSM_PIN_FILE: token.pinFile,
    ISSUANCE_DB: `sqlite:${join(token.dir, 'issuance.db')}`,
  };
}

/** The key the harness signs with for a spec: the demo key where there is one. */
export function keyNameFor(spec: KeySpec): string {
  return DEMO_KEYS.find((k) => k.spec === spec)?.name ?? `loadtest-${spec.toLowerCase().replace(/_/g, '-')}`;
}

/** Filler objects are tagged with this CKA_APPLICATION so a rerun counts, not recreates, them. */
const FILLER_APPLICATION = 'hsm-signer-loadtest-filler';

/**
 * Makes sure the token exists and holds a key for every spec. Returns the token and the name of
 * the key used for each spec.
 */
export async function prepareToken(dir: string, label: string, specs: readonly KeySpec[]): Promise<{ token: LocalToken; keys: Map<KeySpec, string> }> {
  ensureSoftHsmInstalled();
  const token = ensureLocalToken(dir, label);
  process.env.SOFTHSM2_CONF = token.conf;
  const keys = new Map<KeySpec, string>([...new Set(specs)].map((s) => [s, keyNameFor(s)]));
  const admin = await Pkcs11KeyAdmin.open({ modulePath: token.modulePath, tokenLabel: token.label, pin: token.pin });
  try {
    await ensureDemoKeys(
      admin,
      [...keys].map(([spec, name]) => ({ name, spec })),
    );
  } finally {
    await admin.close();
  }
  return { token, keys };
}

/**
 * Adds other objects until the token holds `count` of them: a quarter of the count as EC P-256
 * key pairs (signing keys the service also loads, named filler-NNNN) and the rest as data
 * objects, the kinds a shared production token accumulates.
 */
export async function ensureFillerObjects(token: LocalToken, count: number, onProgress?: (done: number, total: number) => void): Promise<number> {
  process.env.SOFTHSM2_CONF = token.conf;
  const p11 = await ThreadedPkcs11.start(token.modulePath, 1);
  try {
    const slots = await p11.getSlotList(true);
    let slot: Buffer | undefined;
    for (const s of slots) if ((await p11.getTokenLabel(s)) === token.label) slot = s;
    if (!slot) throw new Error(`no token labelled ${token.label}`);
    const session = await p11.openSession(slot, P11.CKF_SERIAL_SESSION | P11.CKF_RW_SESSION);
    await p11.login(session, P11.CKU_USER, token.pin).catch((e: { code?: number }) => {
      if (e.code !== P11.CKR_USER_ALREADY_LOGGED_IN) throw e;
    });
    const application = { type: P11.CKA_APPLICATION, value: FILLER_APPLICATION };
    const data = await p11.findObjects(session, [{ type: P11.CKA_CLASS, value: P11.CKO_DATA }, application]);
    let pairs = 0;
    for (const h of await p11.findObjects(session, [{ type: P11.CKA_CLASS, value: P11.CKO_PRIVATE_KEY }])) {
      const id = (await p11.getAttributes(session, h, [P11.CKA_ID]))[0]?.value;
      if (Buffer.isBuffer(id) && id.toString('latin1').startsWith('filler-')) pairs++;
    }
    const wantPairs = Math.floor(count / 4);
    const wantData = count - 2 * wantPairs;
    let have = data.length + 2 * pairs;
    for (let i = pairs; i < wantPairs; i++) {
      const name = `filler-${String(i).padStart(4, '0')}`;
      const t = signingKeyPairTemplates('ECC_NIST_P256', keyLabel(name, 1), Buffer.from(name));
      await p11.generateKeyPair(session, t.mechanism, t.publicTemplate, t.privateTemplate);
      have += 2;
      if (i % 25 === 0) onProgress?.(have, count);
    }
    for (let i = data.length; i < wantData; i++) {
      await p11.createObject(session, [
        { type: P11.CKA_CLASS, value: P11.CKO_DATA },
        { type: P11.CKA_TOKEN, value: true },
        { type: P11.CKA_PRIVATE, value: i % 2 === 0 },
        { type: P11.CKA_LABEL, value: `filler-data-${i}` },
        application,
        { type: P11.CKA_VALUE, value: randomBytes(64) },
      ]);
      have++;
      if (i % 100 === 0) onProgress?.(have, count);
    }
    await p11.logout(session).catch(() => undefined);
    return have;
  } finally {
    await p11.finalize().catch(() => undefined);
    await p11.close();
  }
}
