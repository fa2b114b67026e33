/**
 * Run as its own process (PKCS#11 state is per process, and finalizing here must not touch the
 * service under test): adds `count` data objects and `keys` EC key pairs named decoy-N to the
 * token in SOFTHSM2_CONF. Usage: node --import tsx addTokenObjects.ts <label> <pinFile> <count> <keys>
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type * as Pkcs11Types from 'pkcs11js';
import { SOFTHSM_MODULE } from '../../src/dev/softHsm.js';
import { ecParamsFor } from '../../src/hsm/pkcs11/publicKey.js';

const P = createRequire(import.meta.url)('pkcs11js') as typeof Pkcs11Types;
const [label, pinFile, count, keys] = process.argv.slice(2);
const lib = new P.PKCS11();
lib.load(SOFTHSM_MODULE);
lib.C_Initialize({ flags: P.CKF_OS_LOCKING_OK });
const slot = lib.C_GetSlotList(true).find((s) => lib.C_GetTokenInfo(s).label.trim() === label)!;
const s = lib.C_OpenSession(slot, P.CKF_SERIAL_SESSION | P.CKF_RW_SESSION);
lib.C_Login(s, P.CKU_USER, readFileSync(pinFile!, 'utf8'));
for (let i = 0; i < Number(count); i++) {
  lib.C_CreateObject(s, [
    { type: P.CKA_CLASS, value: P.CKO_DATA },
    { type: P.CKA_TOKEN, value: true },
    { type: P.CKA_PRIVATE, value: true },
    // Labels that look like key labels must not confuse the key lookup.
    { type: P.CKA_LABEL, value: i % 2 ? `ec/v${i}` : 'ec' },
    { type: P.CKA_VALUE, value: Buffer.from(`filler ${i}`) },
  ]);
}
for (let i = 0; i < Number(keys); i++) {
  const id = Buffer.from(`decoy-${i}`);
  lib.C_GenerateKeyPair(
    s,
    { mechanism: P.CKM_EC_KEY_PAIR_GEN },
    [{ type: P.CKA_TOKEN, value: true }, { type: P.CKA_LABEL, value: `decoy-${i}` }, { type: P.CKA_ID, value: id }, { type: P.CKA_VERIFY, value: true }, { type: P.CKA_EC_PARAMS, value: ecParamsFor('ECC_NIST_P256') }],
    [{ type: P.CKA_TOKEN, value: true }, { type: P.CKA_LABEL, value: `decoy-${i}` }, { type: P.CKA_ID, value: id }, { type: P.CKA_SIGN, value: true }, { type: P.CKA_SENSITIVE, value: true }, { type: P.CKA_PRIVATE, value: true }],
  );
}
lib.C_Logout(s);
lib.C_Finalize();
