import type { KeyObject } from 'node:crypto';
import type { KeySpec } from '../../crypto/algorithms.js';
import type { KeyVersion } from '../KeyManager.js';
import { parseKeyLabel } from '../keyLabel.js';
import type { AsyncPkcs11, Attribute, FoundObject, Handle } from './AsyncPkcs11.js';
import { P11 } from './constants.js';
import { tokenObjects } from './tokenObjects.js';
import { ecPublicKey, rsaPublicKey } from './publicKey.js';

/*
 * What a signing key's token objects say: which private keys the service serves, and their
 * public keys. The key cache decides when to read; this module reads and judges the objects.
 */

/** A key version as the cache holds it: the contract's KeyVersion and the token objects behind it. */
export interface KeyEntry extends KeyVersion {
  readonly name: string;
  readonly label: string;
  readonly id: Buffer;
  /** Replaced when the HSM says the handle is gone. */
  privateHandle: Handle;
  publicHandle: Handle | undefined;
  /** Why the service's HSM user cannot sign with it (a CK_RV name); cleared by a good signature. */
  unusableReason?: string;
  /** The handle the last re-lookup found: failing as stale again, it is not stale but unusable. */
  relookedUp?: Handle;
  /** Signed with at least once (a probe or a caller), whatever the outcome: no probe needed. */
  tried?: boolean;
}

/** Why a private key on the token is not served; it goes to the log, once per key object. */
export type SkipReporter = (label: string, reason: string) => void;

/** A private key's public half as found: its public-key object, or (RSA) the private key's own public attributes. */
export interface PublicKeyObjects {
  readonly pub?: FoundObject;
  readonly own?: FoundObject;
}

/** An attribute's bytes, if the object has the attribute as a byte string. */
export const attr = (attrs: Attribute[], type: number): Buffer | undefined => {
  const v = attrs.find((a) => a.type === type)?.value;
  return Buffer.isBuffer(v) ? v : undefined;
};

/** CKA_KEY_TYPE is a CK_ULONG, little-endian on every platform we run on. */
const keyTypeOf = (attrs: Attribute[]): number | undefined => attr(attrs, P11.CKA_KEY_TYPE)?.readUInt32LE(0);

/**
 * A public key node:crypto refuses (a point off the curve, a curve it does not know) makes that
 * one object unservable; it must not fail the scan of every other key.
 */
function publicKeyOr<T>(make: () => T | undefined, skip: (reason: string) => undefined): T | undefined {
  try {
    return make() ?? skip('its key size or curve is not one the service signs with, or its public key is malformed');
  } catch (e) {
    return skip(`node:crypto refuses its public key (${(e as Error).message.slice(0, 120)})`);
  }
}

/**
 * For each private key that may be served (a key name as label, a CKA_ID, RSA or EC): its
 * public-key object (same CKA_ID and key type) with the attributes that make the public key, in
 * one HSM call for all of them. An RSA key without a public-key object is read from the private
 * key itself (modulus and exponent are public attributes even on a sensitive key), in a second
 * call made only when there is such a key.
 */
export async function readPublicKeys(p11: AsyncPkcs11, s: Handle, privates: readonly FoundObject[]): Promise<Map<string, PublicKeyObjects>> {
  const wanted: { handle: string; label: string; id: Buffer; keyType: number; types: number[] }[] = [];
  for (const o of privates) {
    const label = attr(o.attributes, P11.CKA_LABEL)?.toString('utf8');
    const id = attr(o.attributes, P11.CKA_ID);
    const keyType = keyTypeOf(o.attributes);
    if (label === undefined || !parseKeyLabel(label) || !id?.length || (keyType !== P11.CKK_RSA && keyType !== P11.CKK_EC)) continue;
    const types = keyType === P11.CKK_RSA ? [P11.CKA_MODULUS, P11.CKA_PUBLIC_EXPONENT] : [P11.CKA_EC_PARAMS, P11.CKA_EC_POINT];
    wanted.push({ handle: o.handle.toString('hex'), label, id, keyType, types });
  }
  const byHandle = new Map<string, PublicKeyObjects>();
  if (wanted.length === 0) return byHandle;
  const pubs = await p11.findAndRead(
    s,
    wanted.map((w) => ({
      template: tokenObjects(P11.CKO_PUBLIC_KEY, { type: P11.CKA_KEY_TYPE, value: w.keyType }, { type: P11.CKA_ID, value: w.id }),
      types: w.types,
      max: 1,
    })),
  );
  wanted.forEach((w, i) => {
    const [pub] = pubs[i] ?? [];
    byHandle.set(w.handle, pub ? { pub } : {});
  });
  const ownNeeded = wanted.filter((w) => w.keyType === P11.CKK_RSA && !byHandle.get(w.handle)?.pub);
  if (ownNeeded.length === 0) return byHandle;
  const owns = await p11.findAndRead(
    s,
    ownNeeded.map((w) => ({
      template: tokenObjects(P11.CKO_PRIVATE_KEY, { type: P11.CKA_LABEL, value: w.label }, { type: P11.CKA_ID, value: w.id }),
      types: w.types,
      max: 1,
    })),
  );
  ownNeeded.forEach((w, i) => {
    const [own] = owns[i] ?? [];
    if (own) byHandle.set(w.handle, { own });
  });
  return byHandle;
}

export function entryOf(o: FoundObject, read: PublicKeyObjects | undefined, onSkip: SkipReporter): KeyEntry | undefined {
  const attrs = o.attributes;
  const label = attr(attrs, P11.CKA_LABEL)?.toString('utf8');
  const id = attr(attrs, P11.CKA_ID) ?? Buffer.alloc(0);
  const keyType = keyTypeOf(attrs);
  const parsed = label === undefined ? undefined : parseKeyLabel(label);
  // A key whose label is no key name is someone else's business: not served, not reported.
  if (label === undefined || !parsed) return undefined;
  const skip = (reason: string): undefined => {
    onSkip(label, reason);
    return undefined;
  };
  if (id.length === 0) return skip('it has no CKA_ID, so its public key cannot be found');
  const pub = read?.pub;
  let key: { spec: KeySpec; key: KeyObject } | undefined;
  if (keyType === P11.CKK_RSA) {
    const a = (pub ?? read?.own)?.attributes ?? [];
    const [n, e] = [attr(a, P11.CKA_MODULUS), attr(a, P11.CKA_PUBLIC_EXPONENT)];
    key = n && e ? publicKeyOr(() => rsaPublicKey(n, e), skip) : skip('its modulus or public exponent cannot be read');
  } else if (keyType === P11.CKK_EC) {
    if (!pub) return skip('no public-key object has its CKA_ID (an EC private key does not hold its point)');
    const [params, point] = [attr(pub.attributes, P11.CKA_EC_PARAMS), attr(pub.attributes, P11.CKA_EC_POINT)];
    key = params && point ? publicKeyOr(() => ecPublicKey(params, point), skip) : skip('its public key has no CKA_EC_PARAMS or CKA_EC_POINT');
  } else {
    return skip(keyType === undefined ? 'its CKA_KEY_TYPE cannot be read' : `its key type (CKK 0x${keyType.toString(16)}) is not one the service signs with`);
  }
  if (!key) return undefined;
  return {
    name: parsed.name,
    version: parsed.version,
    label,
    id,
    keySpec: key.spec,
    publicKey: key.key,
    publicKeyPem: key.key.export({ type: 'spki', format: 'pem' }).toString(),
    hasCertificate: false,
    privateHandle: o.handle,
    publicHandle: pub?.handle,
  };
}
