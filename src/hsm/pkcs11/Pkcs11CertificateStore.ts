import { X509Certificate } from 'node:crypto';
import type { CertificateObject, CertificateStore, CertificateStoreOptions, StoredCertificates } from '../CertificateStore.js';
import { CKR, isPkcs11Failure } from '../errors.js';
import type { AsyncPkcs11, Attribute, Handle } from './AsyncPkcs11.js';
import { P11 } from './constants.js';
import { tokenObjects } from './tokenObjects.js';
import type { KeyCache, KeyEntry } from './KeyCache.js';
import type { Sessions } from './TokenConnection.js';

/**
 * What the store needs of the key cache: a key version's entry (its label and CKA_ID name the
 * certificate objects), the lock that keeps readers of those objects apart from their
 * replacement, and a rescan (a key's hasCertificate comes from the cache).
 */
export type CertificateKeys = Pick<KeyCache, 'resolve' | 'objectLock' | 'refresh' | 'info'>;

interface TokenCertificate {
  readonly handle: Handle;
  readonly label: string;
  readonly der: Buffer;
  readonly subject: Buffer;
  readonly issuer: Buffer;
}

const bytes = (attrs: Attribute[], type: number): Buffer => {
  const v = attrs.find((a) => a.type === type)?.value;
  return Buffer.isBuffer(v) ? v : Buffer.alloc(0);
};

/**
 * Another process (a worker, the admin CLI) may destroy a certificate object between our finding
 * it and using it; in this process, readers and replacements take turns (KeyCache.objectLock).
 */
const isGone = (e: unknown): boolean => isPkcs11Failure(e) && e.code === CKR.OBJECT_HANDLE_INVALID;

/** How often a read starts over when objects vanish under it. */
const READ_ATTEMPTS = 3;

const chainLabel = (keyLabel: string, index: number): string => `${keyLabel}/chain/${index}`;

function notBefore(der: Buffer): number {
  try {
    return new Date(new X509Certificate(der).validFrom).getTime();
  } catch {
    return 0;
  }
}

/**
 * Certificates as token objects: CKO_CERTIFICATE/CKC_X_509, public token objects carrying the
 * key's CKA_ID (which is how the key cache, other PKCS#11 tools and CloudHSM pair a certificate
 * with its key). The key version's certificate is labelled `K/vN`, its chain `K/vN/chain/1`, ...
 */
export class Pkcs11CertificateStore implements CertificateStore {
  constructor(
    /** The token connection's sessions, so HSM failures are handled as everywhere else. */
    private readonly sessions: Sessions,
    private readonly keys: CertificateKeys,
    private readonly p11: AsyncPkcs11,
  ) {}

  /** The key's certificate objects; read again when one vanishes under the read (a replacement is under way). */
  private async read(s: Handle, entry: KeyEntry): Promise<TokenCertificate[]> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.readOnce(s, entry);
      } catch (e) {
        if (!isGone(e) || attempt >= READ_ATTEMPTS) throw e;
      }
    }
  }

  private async readOnce(s: Handle, entry: KeyEntry): Promise<TokenCertificate[]> {
    const handles = await this.p11.findObjects(s, tokenObjects(P11.CKO_CERTIFICATE, { type: P11.CKA_ID, value: entry.id }));
    const out: TokenCertificate[] = [];
    for (const handle of handles) {
      const a = await this.p11.getAttributes(s, handle, [P11.CKA_LABEL, P11.CKA_VALUE, P11.CKA_SUBJECT, P11.CKA_ISSUER]);
      out.push({
        handle,
        label: bytes(a, P11.CKA_LABEL).toString('utf8'),
        der: bytes(a, P11.CKA_VALUE),
        subject: bytes(a, P11.CKA_SUBJECT),
        issuer: bytes(a, P11.CKA_ISSUER),
      });
    }
    return out;
  }

  async getCertificates(name: string, version: number, o: CertificateStoreOptions = {}): Promise<StoredCertificates | undefined> {
    const entry = await this.keys.resolve(name, version);
    const found = (await this.keys.objectLock.read(() => this.sessions.withSession((s) => this.read(s, entry), { signal: o.signal }))).filter(
      (c) => c.der.length > 0,
    );
    const chainPattern = new RegExp(`^${entry.label.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/chain/([1-9][0-9]{0,2})$`);
    const chainIndex = (c: TokenCertificate): number | undefined => {
      const m = chainPattern.exec(c.label);
      return m ? Number(m[1]) : undefined;
    };
    // A certificate another tool stored with the key's CKA_ID counts too, when ours is absent.
    const own = found.filter((c) => c.label === entry.label);
    const candidates = own.length > 0 ? own : found.filter((c) => chainIndex(c) === undefined);
    // Two candidates only after a replacement interrupted between creating the new objects and
    // destroying the old ones: the newer certificate is the one meant.
    const certificate = candidates.sort((x, y) => notBefore(y.der) - notBefore(x.der))[0];
    if (!certificate) return undefined;
    const chain: TokenCertificate[] = [];
    let child = certificate;
    for (let i = 1; ; i++) {
      const atIndex = found.filter((c) => chainIndex(c) === i);
      const next = atIndex.find((c) => c.subject.equals(child.issuer)) ?? atIndex[0];
      if (!next) break;
      chain.push(next);
      child = next;
    }
    return { certificate: certificate.der, chain: chain.map((c) => c.der) };
  }

  /**
   * Creates the new objects before destroying the old ones, so a failure at any point leaves
   * the version with a certificate (the old set, or both, which getCertificates resolves).
   */
  async putCertificates(
    name: string,
    version: number,
    certificate: CertificateObject,
    chain: readonly CertificateObject[],
    o: CertificateStoreOptions = {},
  ): Promise<void> {
    const entry = await this.keys.resolve(name, version);
    const replace = async (s: Handle): Promise<void> => {
      const old = await this.p11.findObjects(s, tokenObjects(P11.CKO_CERTIFICATE, { type: P11.CKA_ID, value: entry.id }));
      const created: Handle[] = [];
      try {
        created.push(await this.p11.createObject(s, template(entry, entry.label, certificate)));
        for (const [i, c] of chain.entries()) created.push(await this.p11.createObject(s, template(entry, chainLabel(entry.label, i + 1), c)));
      } catch (e) {
        // Leave the old set as the only one rather than half of a new one beside it.
        for (const h of created) await this.p11.destroyObject(s, h).catch(() => undefined);
        throw e;
      }
      // One that is gone already was destroyed by a replacement in another process: gone is what this wanted.
      for (const h of old) {
        await this.p11.destroyObject(s, h).catch((e: unknown) => {
          if (!isGone(e)) throw e;
        });
      }
    };
    // This process's readers of the certificate objects (requests, the key scan) wait while they change.
    await this.keys.objectLock.write(() => this.sessions.withSession(replace, { signal: o.signal }));
    // hasCertificate comes from the key cache; a scan already under way may have missed the new
    // object. The certificate is stored either way: a failed rescan is left to the periodic one.
    await this.keys.refresh().catch(() => undefined);
    if (!this.keys.info(name)?.versions.find((v) => v.version === version)?.hasCertificate) await this.keys.refresh().catch(() => undefined);
  }
}

function template(entry: KeyEntry, label: string, c: CertificateObject): Attribute[] {
  return [
    { type: P11.CKA_CLASS, value: P11.CKO_CERTIFICATE },
    { type: P11.CKA_CERTIFICATE_TYPE, value: P11.CKC_X_509 },
    { type: P11.CKA_TOKEN, value: true },
    // Certificates are public: relying tools may read them without logging in.
    { type: P11.CKA_PRIVATE, value: false },
    { type: P11.CKA_ID, value: entry.id },
    { type: P11.CKA_LABEL, value: label },
    { type: P11.CKA_SUBJECT, value: c.subject },
    { type: P11.CKA_ISSUER, value: c.issuer },
    { type: P11.CKA_SERIAL_NUMBER, value: c.serialNumber },
    { type: P11.CKA_VALUE, value: c.der },
  ];
}
