/**
 * `npm start`: the development entry point. Makes sure SoftHSMv2 is installed, a project-local
 * token exists under .hsm/ with the demo keys, then starts the service against it, recording issued
 * certificates in .hsm/issuance.db. Settings already in the environment win (e.g. PORT, WORKERS).
 */
import { join } from 'node:path';
import { Pkcs11KeyAdmin } from '../hsm/pkcs11/Pkcs11KeyAdmin.js';
import { ensureDemoKeys, ensureLocalToken, ensureSoftHsmInstalled } from './softHsm.js';

try {
  ensureSoftHsmInstalled();
  const token = ensureLocalToken(process.env.HSM_DEV_DIR ?? '.hsm');
  process.env.SOFTHSM2_CONF = token.conf;
  process.env.HSM_MODULE ??= token.modulePath;
  process.env.HSM_TOKEN_LABEL ??= token.label;
  if (process.env.HSM_PIN === undefined) process.env.HSM_PIN_FILE ??= token.pinFile;
  // The certificate inventory, a SQLite file next to the token.
  process.env.ISSUANCE_DB ??= `sqlite:${join(token.dir, 'issuance.db')}`;
  const admin = await Pkcs11KeyAdmin.open({ modulePath: token.modulePath, tokenLabel: token.label, pin: token.pin });
  try {
    const created = await ensureDemoKeys(admin);
    if (created.length) console.error(`created demo keys on the local token: ${created.join(', ')}`);
  } finally {
    await admin.close();
  }
} catch (e) {
  console.error(`hsm-signer: ${(e as Error).message}`);
  process.exit(1);
}
// `--setup-only`: the token and the demo keys, no service (the dev image's entrypoint runs this under a lock).
if (!process.argv.includes('--setup-only')) await import('../main.js');
