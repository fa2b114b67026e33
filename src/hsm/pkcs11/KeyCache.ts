import type { KeyObject } from 'node:crypto';
import type { KeySpec } from '../../crypto/algorithms.js';
import { notFound } from '../../errors.js';
import type { KeyInfo, KeyVersion } from '../KeyManager.js';
import { parseKeyLabel } from '../keyLabel.js';
import type { AsyncPkcs11, Attribute, FoundObject, Handle } from './AsyncPkcs11.js';
import { P11 } from './constants.js';
import { ecPublicKey, rsaPublicKey } from './publicKey.js';
import { ReadWriteLock } from './ReadWriteLock.js';

export interface KeyEntry extends KeyVersion {
  readonly name: string;
  readonly label: string;
  readonly id: Buffer;
  /** Replaced when the HSM says the handle is gone. */
  privateHandle: Handle;
  publicHandle: Handle | undefined;
}

/** Why a private key on the token is not served; it goes to the log, once per key object. */
export type SkipReporter = (label: string, reason: string) => void;

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

/** What a scan learned of one private-key object: its entry, or why it is not served (reported once). */
interface Seen {
  readonly label: string | undefined;
  readonly id: string;
  readonly entry: KeyEntry | undefined;
  readonly skipped?: string;
}

type SessionRunner = <T>(fn: (session: Handle) => Promise<T>) => Promise<T>;

const attr = (attrs: Attribute[], type: number): Buffer | undefined => {
  const v = attrs.find((a) => a.type === type)?.value;
  return Buffer.isBuffer(v) ? v : undefined;
};

/** CKA_KEY_TYPE is a CK_ULONG, little-endian on every platform we run on. */
const keyTypeOf = (attrs: Attribute[]): number | undefined => attr(attrs, P11.CKA_KEY_TYPE)?.readUInt32LE(0);

/**
 * Every signing key on the token, looked up once: private-key handle, public key, spec.
 * The hot path reads a Map; the token is scanned at start, periodically, and when a caller asks
 * for a key or version the cache does not know (at most once per `missRescanMs`).
 */
export class KeyCache {
  private byName = new Map<string, Map<number, KeyEntry>>();
  private scanning: Promise<void> | undefined;
  private lastScanAt = 0;
  /**
   * What the last scan learned per private-key handle (undefined: not a key we serve), so a
   * rescan reads one attribute set per key instead of finding and reading its public key again:
   * on a token with many objects the periodic rescan would otherwise cost a core.
   */
  private seen = new Map<string, Seen>();
  /** Bumped by clear(): a scan or relookup begun before it found handles of a finalized module. */
  private epoch = 0;
  loaded = false;
  /** The token's certificate objects: read (by the scan, the certificate store) apart from their replacement. */
  readonly objectLock = new ReadWriteLock();

  private readonly missRescanMs: number;
  private readonly now: () => number;
  private readonly onSkip: SkipReporter;

  constructor(
    private readonly p11: AsyncPkcs11,
    private readonly withSession: SessionRunner,
    o: { missRescanMs?: number; now?: () => number; onSkip?: SkipReporter } = {},
  ) {
    this.missRescanMs = o.missRescanMs ?? 1000;
    this.now = o.now ?? Date.now;
    this.onSkip = o.onSkip ?? (() => undefined);
  }

  get size(): number {
    let n = 0;
    for (const versions of this.byName.values()) n += versions.size;
    return n;
  }

  /** Rescans the token; concurrent callers share one scan. */
  refresh(): Promise<void> {
    if (!this.scanning) {
      const scanning: Promise<void> = this.scan().finally(() => {
        if (this.scanning === scanning) this.scanning = undefined;
      });
      this.scanning = scanning;
    }
    return this.scanning;
  }

  clear(): void {
    this.epoch++;
    this.scanning = undefined;
    this.byName = new Map();
    this.seen = new Map();
    this.loaded = false;
  }

  /**
   * Two HSM calls whatever the number of keys: every signing private key (label, id, type) and
   * every certificate's id in one; the public keys of the keys not seen before in the other (and
   * a third only for RSA keys without a public-key object).
   */
  private async scan(): Promise<void> {
    const epoch = this.epoch;
    this.lastScanAt = this.now();
    const seen = new Map<string, Seen>();
    const found = await this.objectLock.read(() => this.withSession(async (s) => {
      const [privates = [], certificates = []] = await this.p11.findAndRead(s, [
        { template: [{ type: P11.CKA_CLASS, value: P11.CKO_PRIVATE_KEY }, { type: P11.CKA_SIGN, value: true }], types: [P11.CKA_LABEL, P11.CKA_ID, P11.CKA_KEY_TYPE] },
        { template: [{ type: P11.CKA_CLASS, value: P11.CKO_CERTIFICATE }], types: [P11.CKA_ID] },
      ]);
      const keys = privates.map((o) => {
        const label = attr(o.attributes, P11.CKA_LABEL)?.toString('utf8');
        const id = (attr(o.attributes, P11.CKA_ID) ?? Buffer.alloc(0)).toString('hex');
        const before = this.seen.get(o.handle.toString('hex'));
        // Same handle, label and CKA_ID as last time: the same key (a reused handle would differ).
        return { o, label, id, before: before && before.label === label && before.id === id ? before : undefined };
      });
      // A key not served last time is looked at again: another process creating a pair may have
      // written the private key before the public one when the last scan ran. Only its reason,
      // if it is the same, is not reported again.
      const publics = await this.readPublicKeys(s, keys.filter((k) => !k.before?.entry).map((k) => k.o));
      const entries: KeyEntry[] = [];
      for (const k of keys) {
        const next = k.before?.entry ? k.before : this.describe(k.o, publics.get(k.o.handle.toString('hex')), k.before?.skipped);
        seen.set(k.o.handle.toString('hex'), { ...next, label: k.label, id: k.id });
        if (next.entry) entries.push(next.entry);
      }
      const certIds = new Set(certificates.map((c) => attr(c.attributes, P11.CKA_ID)?.toString('hex')));
      return entries.map((e) => ({ ...e, hasCertificate: certIds.has(e.id.toString('hex')) }));
    }));
    const next = new Map<string, Map<number, KeyEntry>>();
    for (const e of found) {
      const versions = next.get(e.name) ?? new Map<number, KeyEntry>();
      // Two objects claiming the same name and version: keep the first, deterministically by handle.
      if (!versions.has(e.version)) versions.set(e.version, e);
      next.set(e.name, versions);
    }
    if (epoch !== this.epoch) return;
    this.seen = seen;
    this.byName = next;
    this.loaded = true;
  }

  /**
   * For each private key that may be served (a key name as label, a CKA_ID, RSA or EC): its
   * public-key object (same CKA_ID and key type) with the attributes that make the public key, in
   * one HSM call for all of them. An RSA key without a public-key object is read from the private
   * key itself (modulus and exponent are public attributes even on a sensitive key), in a second
   * call made only when there is such a key.
   */
  private async readPublicKeys(s: Handle, privates: readonly FoundObject[]): Promise<Map<string, { pub?: FoundObject; own?: FoundObject }>> {
    const wanted: { handle: string; label: string; id: Buffer; keyType: number; types: number[] }[] = [];
    for (const o of privates) {
      const label = attr(o.attributes, P11.CKA_LABEL)?.toString('utf8');
      const id = attr(o.attributes, P11.CKA_ID);
      const keyType = keyTypeOf(o.attributes);
      if (label === undefined || !parseKeyLabel(label) || !id?.length || (keyType !== P11.CKK_RSA && keyType !== P11.CKK_EC)) continue;
      const types = keyType === P11.CKK_RSA ? [P11.CKA_MODULUS, P11.CKA_PUBLIC_EXPONENT] : [P11.CKA_EC_PARAMS, P11.CKA_EC_POINT];
      wanted.push({ handle: o.handle.toString('hex'), label, id, keyType, types });
    }
    const byHandle = new Map<string, { pub?: FoundObject; own?: FoundObject }>();
    if (wanted.length === 0) return byHandle;
    const pubs = await this.p11.findAndRead(
      s,
      wanted.map((w) => ({ template: [{ type: P11.CKA_CLASS, value: P11.CKO_PUBLIC_KEY }, { type: P11.CKA_KEY_TYPE, value: w.keyType }, { type: P11.CKA_ID, value: w.id }], types: w.types, max: 1 })),
    );
    wanted.forEach((w, i) => {
      const [pub] = pubs[i] ?? [];
      byHandle.set(w.handle, pub ? { pub } : {});
    });
    const ownNeeded = wanted.filter((w) => w.keyType === P11.CKK_RSA && !byHandle.get(w.handle)?.pub);
    if (ownNeeded.length === 0) return byHandle;
    const owns = await this.p11.findAndRead(
      s,
      ownNeeded.map((w) => ({ template: [{ type: P11.CKA_CLASS, value: P11.CKO_PRIVATE_KEY }, { type: P11.CKA_LABEL, value: w.label }, { type: P11.CKA_ID, value: w.id }], types: w.types, max: 1 })),
    );
    ownNeeded.forEach((w, i) => {
      const [own] = owns[i] ?? [];
      if (own) byHandle.set(w.handle, { own });
    });
    return byHandle;
  }

  private describe(o: FoundObject, read: { pub?: FoundObject; own?: FoundObject } | undefined, reported?: string): { entry: KeyEntry | undefined; skipped?: string } {
    let skipped: string | undefined;
    const entry = this.entryOf(o, read, (label, reason) => {
      skipped = reason;
      if (reason !== reported) this.onSkip(label, reason);
    });
    return skipped === undefined ? { entry } : { entry, skipped };
  }

  private entryOf(o: FoundObject, read: { pub?: FoundObject; own?: FoundObject } | undefined, onSkip: SkipReporter): KeyEntry | undefined {
    const attrs = o.attributes;
    const label = attr(attrs, P11.CKA_LABEL)?.toString('utf8');
    const id = attr(attrs, P11.CKA_ID) ?? Buffer.alloc(0);
    const keyType = keyTypeOf(attrs);
    const parsed = label === undefined ? undefined : parseKeyLabel(label);
    // A key whose label is no key name is someone else's business: not served, not reported.
    if (!parsed) return undefined;
    const skip = (reason: string): undefined => {
      onSkip(label!, reason);
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
      label: label!,
      id,
      keySpec: key.spec,
      publicKey: key.key,
      publicKeyPem: key.key.export({ type: 'spki', format: 'pem' }).toString(),
      hasCertificate: false,
      privateHandle: o.handle,
      publicHandle: pub?.handle,
    };
  }

  /** The cached entry for a key version (default: current), or undefined: no HSM call, no rescan. */
  lookup(name: string, version?: number): KeyEntry | undefined {
    const versions = this.byName.get(name);
    if (!versions) return undefined;
    if (version !== undefined) return versions.get(version);
    let current = 0;
    for (const v of versions.keys()) if (v > current) current = v;
    return versions.get(current);
  }

  /** The entry for a key version (default: current); rescans once if it is not known yet. */
  async resolve(name: string, version?: number): Promise<KeyEntry> {
    const hit = this.lookup(name, version);
    if (hit) return hit;
    if (this.scanning || this.now() - this.lastScanAt >= this.missRescanMs) {
      await this.refresh();
      const again = this.lookup(name, version);
      if (again) return again;
    }
    if (version !== undefined && this.byName.has(name)) throw notFound(`key '${name}' has no version ${version}`);
    throw notFound(`no key named '${name}'`);
  }

  /** After CKR_OBJECT_HANDLE_INVALID / CKR_KEY_HANDLE_INVALID: find the same label again. */
  async relookup(entry: KeyEntry): Promise<void> {
    const epoch = this.epoch;
    const [handle] = await this.withSession((s) =>
      this.p11.findObjects(s, [
        { type: P11.CKA_CLASS, value: P11.CKO_PRIVATE_KEY },
        { type: P11.CKA_LABEL, value: entry.label },
        { type: P11.CKA_ID, value: entry.id },
      ], 1),
    );
    if (epoch !== this.epoch) return;
    if (!handle) {
      const versions = this.byName.get(entry.name);
      versions?.delete(entry.version);
      // A name with no versions left is no key at all (list() and info() must not meet it).
      if (versions?.size === 0) this.byName.delete(entry.name);
      return;
    }
    entry.privateHandle = handle;
    const [pub] = await this.withSession((s) =>
      this.p11.findObjects(s, [{ type: P11.CKA_CLASS, value: P11.CKO_PUBLIC_KEY }, { type: P11.CKA_ID, value: entry.id }], 1),
    );
    entry.publicHandle = pub;
  }

  list(): KeyInfo[] {
    return [...this.byName.keys()].sort().map((name) => this.info(name)!);
  }

  info(name: string): KeyInfo | undefined {
    const versions = this.byName.get(name);
    if (!versions || versions.size === 0) return undefined;
    const sorted = [...versions.values()].sort((a, b) => a.version - b.version);
    const current = sorted[sorted.length - 1]!;
    return {
      name,
      keySpec: current.keySpec,
      currentVersion: current.version,
      versions: sorted.map(({ version, keySpec, publicKey, publicKeyPem, hasCertificate }) => ({ version, keySpec, publicKey, publicKeyPem, hasCertificate })),
    };
  }
}
