import { randomBytes } from 'node:crypto';
import { pino, type Logger } from 'pino';
import type { KeySpec } from '../../crypto/algorithms.js';
import { invalid, notFound, ServiceError } from '../../errors.js';
import { isPkcs11Failure } from '../errors.js';
import type { AdminKeyVersion, KeyAdmin, RemovedObject } from '../KeyAdmin.js';
import { keyLabel, parseKeyLabel } from '../keyLabel.js';
import type { AsyncPkcs11, Attribute, FoundObject, Handle } from './AsyncPkcs11.js';
import { readPublicKeys } from './keyObjects.js';
import { P11 } from './constants.js';
import { tokenObjects } from './tokenObjects.js';
import { ecSpecFromParams, rsaPublicKey } from './publicKey.js';
import { signingKeyPairTemplates } from './keyTemplates.js';
import { ThreadedPkcs11 } from './ThreadedPkcs11.js';
import { TokenConnection } from './TokenConnection.js';

const value = (attrs: Attribute[], type: number): Buffer | undefined => {
  const v = attrs.find((a) => a.type === type)?.value;
  return Buffer.isBuffer(v) ? v : undefined;
};

interface Found extends AdminKeyVersion {
  readonly handle: Handle;
}

const OBJECT_KINDS = new Map<number, RemovedObject['kind']>([
  [P11.CKO_PRIVATE_KEY, 'private key'],
  [P11.CKO_PUBLIC_KEY, 'public key'],
  [P11.CKO_CERTIFICATE, 'certificate'],
]);

/** How long an admin command waits for the connection's one session (commands run one at a time, so it is free). */
const ADMIN_ACQUIRE_MS = 30_000;

/**
 * KeyAdmin on a PKCS#11 token, on a TokenConnection of its own with one session: admin work is
 * rare and serialized on the HSM. Each command runs on that session through withSession, so a
 * lost login or session is repaired as in the service.
 */
export class Pkcs11KeyAdmin implements KeyAdmin {
  private readonly p11: AsyncPkcs11;

  private constructor(private readonly connection: TokenConnection) {
    this.p11 = connection.p11;
  }

  static async open(o: { modulePath: string; tokenLabel?: string; slotIndex?: number; pin: string; logger?: Logger }): Promise<Pkcs11KeyAdmin> {
    const p11 = await ThreadedPkcs11.start(o.modulePath, 1);
    const connection = new TokenConnection(p11, {
      ...(o.slotIndex !== undefined ? { slotIndex: o.slotIndex } : { tokenLabel: o.tokenLabel }),
      pin: o.pin,
      sessions: 1,
      maxWaiting: 1,
      acquireTimeoutMs: ADMIN_ACQUIRE_MS,
      logger: o.logger ?? pino({ level: 'silent' }),
    });
    try {
      await connection.start();
    } catch (e) {
      await connection.close().catch(() => undefined);
      if (isPkcs11Failure(e) && e.method === 'C_Login') throw new ServiceError('UNAUTHENTICATED', 'the HSM refused the key-manager credential');
      throw e;
    }
    return new Pkcs11KeyAdmin(connection);
  }

  /**
   * Every key version on the token, read as the service's key scan reads it: the private keys'
   * label, CKA_ID and type, then each one's public-key object. SoftHSMv2 writes a generated
   * private key's material (CKA_EC_PARAMS, CKA_MODULUS) after the object can be found, and
   * reading an attribute that grows between pkcs11js's two C_GetAttributeValue calls crashes
   * the reader; the public key is whole before its private key exists. A private key's own
   * attributes are read only when it has no public-key object (an imported key, written whole).
   */
  private async scan(s: Handle): Promise<Found[]> {
    const [privates = [], certificates = []] = await this.p11.findAndRead(s, [
      { template: tokenObjects(P11.CKO_PRIVATE_KEY), types: [P11.CKA_LABEL, P11.CKA_ID, P11.CKA_KEY_TYPE] },
      { template: tokenObjects(P11.CKO_CERTIFICATE), types: [P11.CKA_ID] },
    ]);
    const certIds = new Set(certificates.map((c) => value(c.attributes, P11.CKA_ID)?.toString('hex')));
    const publics = await readPublicKeys(this.p11, s, privates);
    const out: Found[] = [];
    for (const o of privates) {
      const parsed = parseKeyLabel(value(o.attributes, P11.CKA_LABEL)?.toString('utf8') ?? '');
      const id = value(o.attributes, P11.CKA_ID);
      if (!parsed || !id) continue;
      const read = publics.get(o.handle.toString('hex'));
      const spec = await this.specOf(s, o.handle, value(o.attributes, P11.CKA_KEY_TYPE)?.readUInt32LE(0), read?.pub ?? read?.own);
      if (!spec) continue;
      out.push({ ...parsed, keySpec: spec, id: id.toString('hex'), hasCertificate: certIds.has(id.toString('hex')), handle: o.handle });
    }
    return out.sort((x, y) => x.name.localeCompare(y.name) || x.version - y.version);
  }

  /** The key's spec from its public key as read, or (an EC key without a public-key object) from the private key's CKA_EC_PARAMS. */
  private async specOf(s: Handle, handle: Handle, keyType: number | undefined, read: FoundObject | undefined): Promise<KeySpec | undefined> {
    if (keyType === P11.CKK_RSA) {
      const a = read?.attributes ?? [];
      const [n, e] = [value(a, P11.CKA_MODULUS), value(a, P11.CKA_PUBLIC_EXPONENT)];
      return n && e ? rsaPublicKey(n, e)?.spec : undefined;
    }
    if (keyType === P11.CKK_EC) {
      const params = value(read?.attributes ?? (await this.p11.getAttributes(s, handle, [P11.CKA_EC_PARAMS])), P11.CKA_EC_PARAMS);
      return params ? ecSpecFromParams(params) : undefined;
    }
    return undefined;
  }

  private async generate(s: Handle, name: string, version: number, spec: KeySpec): Promise<AdminKeyVersion> {
    const id = randomBytes(16);
    const t = signingKeyPairTemplates(spec, keyLabel(name, version), id);
    await this.p11.generateKeyPair(s, t.mechanism, t.publicTemplate, t.privateTemplate);
    return { name, version, keySpec: spec, id: id.toString('hex'), hasCertificate: false };
  }

  private run<T>(fn: (s: Handle) => Promise<T>): Promise<T> {
    return this.connection.withSession(fn);
  }

  createKey(name: string, spec: KeySpec): Promise<AdminKeyVersion> {
    return this.run(async (s) => {
      if ((await this.scan(s)).some((k) => k.name === name)) throw new ServiceError('CONFLICT', `key '${name}' exists; use 'keys rotate' to add a version`);
      return this.generate(s, name, 1, spec);
    });
  }

  rotateKey(name: string): Promise<AdminKeyVersion> {
    return this.run(async (s) => {
      const versions = (await this.scan(s)).filter((k) => k.name === name);
      const current = versions[versions.length - 1];
      if (!current) throw notFound(`no key named '${name}'`);
      return this.generate(s, name, current.version + 1, current.keySpec);
    });
  }

  listKeys(): Promise<AdminKeyVersion[]> {
    return this.run(async (s) => (await this.scan(s)).map(({ handle: _h, ...k }) => k));
  }

  retireKey(name: string, version: number): Promise<{ removed: AdminKeyVersion; objects: RemovedObject[] }> {
    return this.run((s) => this.retire(s, name, version));
  }

  private async retire(s: Handle, name: string, version: number): Promise<{ removed: AdminKeyVersion; objects: RemovedObject[] }> {
    const target = await this.findRetirable(s, name, version);
    // The pair and its certificates share CKA_ID; remove every object with it.
    const handles = await this.p11.findObjects(s, [{ type: P11.CKA_ID, value: Buffer.from(target.id, 'hex') }]);
    const objects: RemovedObject[] = [];
    for (const h of handles) {
      const a = await this.p11.getAttributes(s, h, [P11.CKA_CLASS, P11.CKA_LABEL]);
      const cls = value(a, P11.CKA_CLASS)?.readUInt32LE(0);
      objects.push({ kind: OBJECT_KINDS.get(cls ?? -1) ?? 'other object', label: value(a, P11.CKA_LABEL)?.toString('utf8') ?? '' });
      await this.p11.destroyObject(s, h);
    }
    const { handle: _h, ...removed } = target;
    return { removed, objects };
  }

  retirable(name: string, version: number): Promise<AdminKeyVersion> {
    return this.run(async (s) => {
      const { handle: _h, ...k } = await this.findRetirable(s, name, version);
      return k;
    });
  }

  private async findRetirable(s: Handle, name: string, version: number): Promise<Found> {
    const versions = (await this.scan(s)).filter((k) => k.name === name);
    const target = versions.find((k) => k.version === version);
    if (!target) throw notFound(versions.length ? `key '${name}' has no version ${version}` : `no key named '${name}'`);
    if (versions.length === 1) throw invalid(`version: ${version} is the only version of '${name}'; it cannot be retired`);
    return target;
  }

  close(): Promise<void> {
    return this.connection.close();
  }
}
