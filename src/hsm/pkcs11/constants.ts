import { createRequire } from 'node:module';
import type * as Pkcs11Types from 'pkcs11js';

/** pkcs11js's constants (CKA_*, CKM_*, ...); the only import of the binding outside the HSM threads. */
export const P11 = createRequire(import.meta.url)('pkcs11js') as typeof Pkcs11Types;
