import type { Attribute } from './AsyncPkcs11.js';
import { P11 } from './constants.js';

/**
 * The search template for token objects of one class: every C_FindObjects of the service and the
 * admin goes through it.
 *
 * SoftHSMv2 writes a new token object to its file in steps: the object's class and defaults
 * first, one attribute at a time (an empty CKA_LABEL, CKA_ID, CKA_MODULUS..., and CKA_TOKEN
 * false), then the caller's template in one transaction. Another process that finds the object
 * between the two and reads it sees an empty attribute grow between pkcs11js's two
 * C_GetAttributeValue calls (lengths, then values), and pkcs11js copies the value from a null
 * pointer: the reading process crashes. CKA_TOKEN true is written in the template's
 * transaction, so an object that matches it has its label, CKA_ID and template values. A
 * generated key pair gets its key material in a second transaction, the public key's before the
 * private key is created: the public key of a private key found is whole, and the scan reads a
 * private key's own material only when it has no public-key object.
 */
export function tokenObjects(objectClass: number, ...more: Attribute[]): Attribute[] {
  return [{ type: P11.CKA_CLASS, value: objectClass }, { type: P11.CKA_TOKEN, value: true }, ...more];
}
