/**
 * Run as its own process (PKCS#11 state is per process, and finalizing here must not touch the
 * service under test): adds `count` data objects and `keys` EC key pairs named decoy-N to the
 * token in SOFTHSM2_CONF; with `unservable` = 1 also two signing keys the service cannot serve:
 * `orphan-ec` (its public-key object destroyed) and `k1-ec` (on secp256k1).
 * Usage: node --import tsx addTokenObjects.ts <label> <pinFile> <count> <keys> [unservable]
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { AsnConvert } from '@peculiar/asn1-schema';
import { SubjectPublicKeyInfo } from '@peculiar/asn1-x509';
import type * as Pkcs11Types from 'pkcs11js';
import { SOFTHSM_MODULE } from '../../src/dev/softHsm.js';
import { ecParamsFor } from '../../src/hsm/pkcs11/publicKey.js';

const P = createRequire(import.meta.url)('pkcs11js') as typeof Pkcs11Types;
const [label, pinFile, count, keys, unservable] = process.argv.slice(2);
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
function ecPair(name: string, ecParams: Buffer): { publicKey: Pkcs11Types.Handle } {
  // A random CKA_ID, as the admin CLI makes: two of these processes writing decoy-N at once make
  // two pairs with the same label, never two with the same CKA_ID (a reader looking up a public
  // key by the CKA_ID of a whole private key would find the other process's half-written one).
  const id = randomBytes(16);
  return lib.C_GenerateKeyPair(
    s,
    { mechanism: P.CKM_EC_KEY_PAIR_GEN },
    [
      { type: P.CKA_TOKEN, value: true },
      { type: P.CKA_LABEL, value: name },
      { type: P.CKA_ID, value: id },
      { type: P.CKA_VERIFY, value: true },
      { type: P.CKA_EC_PARAMS, value: ecParams },
    ],
    [
      { type: P.CKA_TOKEN, value: true },
      { type: P.CKA_LABEL, value: name },
      { type: P.CKA_ID, value: id },
      { type: P.CKA_SIGN, value: true },
      { type: P.CKA_SENSITIVE, value: true },
      { type: P.CKA_PRIVATE, value: true },
    ],
  );
}
for (let i = 0; i < Number(keys); i++) ecPair(`decoy-${i}`, ecParamsFor('ECC_NIST_P256'));
if (unservable === '1') {
  lib.C_DestroyObject(s, ecPair('orphan-ec', ecParamsFor('ECC_NIST_P256')).publicKey);
  // secp256k1's CKA_EC_PARAMS (its named-curve OID) from a key node:crypto made, not from hand-written DER.
  const spki = generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).publicKey.export({ type: 'spki', format: 'der' });
  ecPair('k1-ec', Buffer.from(AsnConvert.parse(spki, SubjectPublicKeyInfo).algorithm.parameters!));
}
lib.C_Logout(s);
lib.C_Finalize();
