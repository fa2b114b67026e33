import { notFound } from '../../errors.js';
import { recoveringError } from '../errors.js';
import type { KeyInfo } from '../KeyManager.js';
import type { AsyncPkcs11, FoundObject, Handle } from './AsyncPkcs11.js';
import { P11 } from './constants.js';
import { tokenObjects } from './tokenObjects.js';
import { attr, entryOf, readPublicKeys, type KeyEntry, type PublicKeyObjects, type SkipReporter } from './keyObjects.js';
import { ReadWriteLock } from './ReadWriteLock.js';

export type { KeyEntry } from './keyObjects.js';

/** What a scan learned of one private-key object: its entry, or why it is not served (reported once). */
interface Seen {
  readonly label: string | undefined;
  readonly id: string;
  readonly entry: KeyEntry | undefined;
  readonly skipped?: string;
}

type SessionRunner = <T>(fn: (session: Handle) => Promise<T>) => Promise<T>;

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
  private readonly available: () => boolean;

  constructor(
    private readonly p11: AsyncPkcs11,
    private readonly withSession: SessionRunner,
    /** available: whether a first load may scan now (not while the connection is recovering: the recovery scans). */
    o: { missRescanMs?: number; now?: () => number; onSkip?: SkipReporter; available?: () => boolean } = {},
  ) {
    this.missRescanMs = o.missRescanMs ?? 1000;
    this.now = o.now ?? Date.now;
    this.onSkip = o.onSkip ?? (() => undefined);
    this.available = o.available ?? (() => true);
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
    const found = await this.objectLock.read(() =>
      this.withSession(async (s) => {
        const [privates = [], certificates = []] = await this.p11.findAndRead(s, [
          { template: tokenObjects(P11.CKO_PRIVATE_KEY, { type: P11.CKA_SIGN, value: true }), types: [P11.CKA_LABEL, P11.CKA_ID, P11.CKA_KEY_TYPE] },
          { template: tokenObjects(P11.CKO_CERTIFICATE), types: [P11.CKA_ID] },
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
        const publics = await readPublicKeys(
          this.p11,
          s,
          keys.filter((k) => !k.before?.entry).map((k) => k.o),
        );
        const entries: KeyEntry[] = [];
        for (const k of keys) {
          const next = k.before?.entry ? k.before : this.describe(k.o, publics.get(k.o.handle.toString('hex')), k.before?.skipped);
          seen.set(k.o.handle.toString('hex'), { ...next, label: k.label, id: k.id });
          if (next.entry) entries.push(next.entry);
        }
        const certIds = new Set(certificates.map((c) => attr(c.attributes, P11.CKA_ID)?.toString('hex')));
        return entries.map((e) => ({ ...e, hasCertificate: certIds.has(e.id.toString('hex')) }));
      }),
    );
    if (epoch !== this.epoch) return;
    const next = new Map<string, Map<number, KeyEntry>>();
    for (const found1 of found) {
      const e = this.withMarksOf(found1);
      const versions = next.get(e.name) ?? new Map<number, KeyEntry>();
      // Two objects claiming the same name and version: keep the first, deterministically by handle.
      if (!versions.has(e.version)) versions.set(e.version, e);
      next.set(e.name, versions);
    }
    this.seen = seen;
    this.byName = next;
    this.loaded = true;
  }

  /**
   * What signing taught about the same key (same label, CKA_ID and handle) carries over a rescan;
   * a key found changed starts afresh: usable until signing with it says otherwise.
   */
  private withMarksOf(e: KeyEntry): KeyEntry {
    const prev = this.lookup(e.name, e.version);
    if (!prev || prev.label !== e.label || !prev.id.equals(e.id) || !prev.privateHandle.equals(e.privateHandle)) return e;
    return {
      ...e,
      ...(prev.unusableReason !== undefined ? { unusableReason: prev.unusableReason } : {}),
      ...(prev.relookedUp !== undefined ? { relookedUp: prev.relookedUp } : {}),
      ...(prev.tried ? { tried: true } : {}),
    };
  }

  /** Key versions no one has signed with yet in this worker, newest first, at most `max`. */
  untried(max: number): KeyEntry[] {
    const out: KeyEntry[] = [];
    for (const versions of this.byName.values()) for (const e of versions.values()) if (!e.tried) out.push(e);
    return out.sort((a, b) => b.version - a.version).slice(0, max);
  }

  /** The key versions signing found unusable, by name and version. */
  unusable(): { name: string; version: number; reason: string }[] {
    const out: { name: string; version: number; reason: string }[] = [];
    for (const versions of this.byName.values())
      for (const e of versions.values()) if (e.unusableReason !== undefined) out.push({ name: e.name, version: e.version, reason: e.unusableReason });
    return out.sort((a, b) => (a.name === b.name ? a.version - b.version : a.name < b.name ? -1 : 1));
  }

  private describe(o: FoundObject, read: PublicKeyObjects | undefined, reported?: string): { entry: KeyEntry | undefined; skipped?: string } {
    let skipped: string | undefined;
    const entry = entryOf(o, read, (label, reason) => {
      skipped = reason;
      if (reason !== reported) this.onSkip(label, reason);
    });
    return skipped === undefined ? { entry } : { entry, skipped };
  }

  /** Scans the token if it has not been scanned since it was connected (or cleared). */
  async load(): Promise<void> {
    if (this.loaded) return;
    if (!this.available()) throw recoveringError();
    await this.refresh();
  }

  /**
   * The cached entry, at once, or undefined. The cache is emptied when the module is
   * re-initialized, so a hit is always of the current generation.
   */
  cached(name: string, version?: number): KeyEntry | undefined {
    return this.loaded ? this.lookup(name, version) : undefined;
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

  /** The entry for a key version (default: current); loads the keys first, and rescans once if it is not known yet. */
  async resolve(name: string, version?: number): Promise<KeyEntry> {
    const cached = this.cached(name, version);
    if (cached) return cached;
    await this.load();
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
      this.p11.findObjects(s, tokenObjects(P11.CKO_PRIVATE_KEY, { type: P11.CKA_LABEL, value: entry.label }, { type: P11.CKA_ID, value: entry.id }), 1),
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
    entry.relookedUp = handle;
    const [pub] = await this.withSession((s) => this.p11.findObjects(s, tokenObjects(P11.CKO_PUBLIC_KEY, { type: P11.CKA_ID, value: entry.id }), 1));
    entry.publicHandle = pub;
  }

  list(): KeyInfo[] {
    return [...this.byName.keys()].sort().map((name) => {
      const info = this.info(name);
      if (info === undefined) throw new Error(`key cache: '${name}' is listed with no versions (a bug)`);
      return info;
    });
  }

  info(name: string): KeyInfo | undefined {
    const versions = this.byName.get(name);
    if (!versions) return undefined;
    const sorted = [...versions.values()].sort((a, b) => a.version - b.version);
    // No versions left is no key at all.
    const current = sorted.at(-1);
    if (current === undefined) return undefined;
    return {
      name,
      keySpec: current.keySpec,
      currentVersion: current.version,
      versions: sorted.map(({ version, keySpec, publicKey, publicKeyPem, hasCertificate, unusableReason }) => ({
        version,
        keySpec,
        publicKey,
        publicKeyPem,
        hasCertificate,
        ...(unusableReason !== undefined ? { unusableReason } : {}),
      })),
    };
  }
}
