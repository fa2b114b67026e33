/**
 * Run as its own process (PKCS#11 state is per process: finalizing here must not touch a
 * service under test): prints, as JSON, every object on the token in SOFTHSM2_CONF with its
 * attributes as the token reports them, and for private keys whether their secret parts can be
 * read. Usage: node --import tsx dumpTokenObjects.ts <tokenLabel> <pinFile>
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type * as Pkcs11Types from 'pkcs11js';
import { SOFTHSM_MODULE } from '../../src/dev/softHsm.js';
import { ckrName } from '../../src/hsm/errors.js';

const P = createRequire(import.meta.url)('pkcs11js') as typeof Pkcs11Types;
const [label, pinFile] = process.argv.slice(2);

export interface DumpedObject {
  readonly handle: string;
  readonly class: 'privateKey' | 'publicKey' | 'certificate' | 'other';
  readonly label: string;
  readonly id: string;
  /** Boolean attributes by name (CKA_ prefix dropped); absent when the token does not have it for the object. */
  readonly flags: Record<string, boolean>;
  readonly certificateType?: number;
  readonly valueLength?: number;
  /** Private keys: for each secret attribute, 'readable' or the CKR name of the refusal. */
  readonly secrets?: Record<string, string>;
}

const CLASS: Record<number, DumpedObject['class']> = { [P.CKO_PRIVATE_KEY]: 'privateKey', [P.CKO_PUBLIC_KEY]: 'publicKey', [P.CKO_CERTIFICATE]: 'certificate' };
const FLAGS = [
  'TOKEN',
  'PRIVATE',
  'SENSITIVE',
  'EXTRACTABLE',
  'ALWAYS_SENSITIVE',
  'NEVER_EXTRACTABLE',
  'LOCAL',
  'MODIFIABLE',
  'SIGN',
  'SIGN_RECOVER',
  'DECRYPT',
  'UNWRAP',
  'DERIVE',
  'VERIFY',
  'ENCRYPT',
  'WRAP',
] as const;

const lib = new P.PKCS11();
lib.load(process.env.HSM_MODULE ?? SOFTHSM_MODULE);
lib.C_Initialize({ flags: P.CKF_OS_LOCKING_OK });
try {
  const slot = lib.C_GetSlotList(true).find((s) => lib.C_GetTokenInfo(s).label.trim() === label);
  if (!slot) throw new Error(`no token labelled ${label}`);
  const s = lib.C_OpenSession(slot, P.CKF_SERIAL_SESSION);
  lib.C_Login(s, P.CKU_USER, readFileSync(pinFile!, 'utf8'));
  const one = (h: Buffer, type: number): Buffer | undefined => {
    try {
      return lib.C_GetAttributeValue(s, h, [{ type }])[0]?.value as Buffer | undefined;
    } catch {
      return undefined;
    }
  };
  const secret = (h: Buffer, type: number): string => {
    try {
      lib.C_GetAttributeValue(s, h, [{ type }]);
      return 'readable';
    } catch (e) {
      const code = (e as { code?: number }).code ?? -1;
      return ckrName(code);
    }
  };
  lib.C_FindObjectsInit(s, []);
  const handles: Buffer[] = [];
  for (let batch = lib.C_FindObjects(s, 100); batch.length > 0; batch = lib.C_FindObjects(s, 100)) handles.push(...batch);
  lib.C_FindObjectsFinal(s);
  const objects: DumpedObject[] = handles.map((h) => {
    const cls = CLASS[one(h, P.CKA_CLASS)?.readUInt32LE(0) ?? -1] ?? 'other';
    const flags: Record<string, boolean> = {};
    for (const f of FLAGS) {
      const v = one(h, (P as unknown as Record<string, number>)[`CKA_${f}`]!);
      if (v && v.length === 1) flags[f] = v[0] === 1;
    }
    const keyType = one(h, P.CKA_KEY_TYPE)?.readUInt32LE(0);
    return {
      handle: h.toString('hex'),
      class: cls,
      label: one(h, P.CKA_LABEL)?.toString('utf8') ?? '',
      id: one(h, P.CKA_ID)?.toString('hex') ?? '',
      flags,
      ...(cls === 'certificate' ? { certificateType: one(h, P.CKA_CERTIFICATE_TYPE)?.readUInt32LE(0), valueLength: one(h, P.CKA_VALUE)?.length ?? 0 } : {}),
      ...(cls === 'privateKey'
        ? {
            secrets: (keyType === P.CKK_RSA
              ? { PRIVATE_EXPONENT: secret(h, P.CKA_PRIVATE_EXPONENT), PRIME_1: secret(h, P.CKA_PRIME_1) }
              : { VALUE: secret(h, P.CKA_VALUE) }) as Record<string, string>,
          }
        : {}),
    };
  });
  process.stdout.write(JSON.stringify({ objects }));
  lib.C_Logout(s);
} finally {
  lib.C_Finalize();
}
