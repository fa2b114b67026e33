import { randomBytes } from 'node:crypto';
import type { KeySpec } from '../../crypto/algorithms.js';
import { invalid, notFound, ServiceError } from '../../errors.js';
import { CKR, isPkcs11Failure } from '../errors.js';
import type { AdminKeyVersion, KeyAdmin, RemovedObject } from '../KeyAdmin.js';
import { keyLabel, parseKeyLabel } from '../keyLabel.js';
import type { AsyncPkcs11, Attribute, Handle } from './AsyncPkcs11.js';
import { P11 } from './constants.js';
import { ecSpecFromParams, rsaPublicKey } from './publicKey.js';
import { signingKeyPairTemplates } from './keyTemplates.js';
import { ThreadedPkcs11 } from './ThreadedPkcs11.js';

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

/** KeyAdmin on a PKCS#11 token, with one session of its own (admin work is rare and serialized on the HSM). */
export class Pkcs11KeyAdmin implements KeyAdmin {
  private constructor(
    private readonly p11: AsyncPkcs11,
    private readonly session: Handle,
  ) {}

  static async open(o: { modulePath: string; tokenLabel?: string; slotIndex?: number; pin: string }): Promise<Pkcs11KeyAdmin> {
    const p11 = await ThreadedPkcs11.start(o.modulePath, 1);
    try {
      const slots = await p11.getSlotList(true);
      let slot: Handle | undefined = o.slotIndex !== undefined ? slots[o.slotIndex] : undefined;
      if (o.slotIndex === undefined) for (const s of slots) if ((await p11.getTokenLabel(s)) === o.tokenLabel) slot = s;
      if (!slot) throw new ServiceError('NOT_FOUND', o.slotIndex !== undefined ? `no token in slot index ${o.slotIndex}` : `no token labelled '${o.tokenLabel}'`);
      const session = await p11.openSession(slot, P11.CKF_SERIAL_SESSION | P11.CKF_RW_SESSION);
      try {
        await p11.login(session, P11.CKU_USER, o.pin);
      } catch (e) {
        if (!isPkcs11Failure(e) || e.code !== CKR.USER_ALREADY_LOGGED_IN) {
          throw new ServiceError('UNAUTHENTICATED', 'the HSM refused the key-manager credential');
        }
      }
      return new Pkcs11KeyAdmin(p11, session);
    } catch (e) {
      await p11.finalize().catch(() => undefined);
      await p11.close();
      throw e;
    }
  }

  private async scan(): Promise<Found[]> {
    const handles = await this.p11.findObjects(this.session, [{ type: P11.CKA_CLASS, value: P11.CKO_PRIVATE_KEY }]);
    const certIds = new Set<string>();
    for (const c of await this.p11.findObjects(this.session, [{ type: P11.CKA_CLASS, value: P11.CKO_CERTIFICATE }])) {
      const id = value(await this.p11.getAttributes(this.session, c, [P11.CKA_ID]), P11.CKA_ID);
      if (id) certIds.add(id.toString('hex'));
    }
    const out: Found[] = [];
    for (const handle of handles) {
      const a = await this.p11.getAttributes(this.session, handle, [P11.CKA_LABEL, P11.CKA_ID, P11.CKA_KEY_TYPE]);
      const parsed = parseKeyLabel(value(a, P11.CKA_LABEL)?.toString('utf8') ?? '');
      const id = value(a, P11.CKA_ID);
      if (!parsed || !id) continue;
      const spec = await this.specOf(handle, value(a, P11.CKA_KEY_TYPE)?.readUInt32LE(0));
      if (!spec) continue;
      out.push({ ...parsed, keySpec: spec, id: id.toString('hex'), hasCertificate: certIds.has(id.toString('hex')), handle });
    }
    return out.sort((x, y) => x.name.localeCompare(y.name) || x.version - y.version);
  }

  private async specOf(handle: Handle, keyType: number | undefined): Promise<KeySpec | undefined> {
    if (keyType === P11.CKK_RSA) {
      const a = await this.p11.getAttributes(this.session, handle, [P11.CKA_MODULUS, P11.CKA_PUBLIC_EXPONENT]);
      const [n, e] = [value(a, P11.CKA_MODULUS), value(a, P11.CKA_PUBLIC_EXPONENT)];
      return n && e ? rsaPublicKey(n, e)?.spec : undefined;
    }
    if (keyType === P11.CKK_EC) {
      const params = value(await this.p11.getAttributes(this.session, handle, [P11.CKA_EC_PARAMS]), P11.CKA_EC_PARAMS);
      return params ? ecSpecFromParams(params) : undefined;
    }
    return undefined;
  }

  private async generate(name: string, version: number, spec: KeySpec): Promise<AdminKeyVersion> {
    const id = randomBytes(16);
    const t = signingKeyPairTemplates(spec, keyLabel(name, version), id);
    await this.p11.generateKeyPair(this.session, t.mechanism, t.publicTemplate, t.privateTemplate);
    return { name, version, keySpec: spec, id: id.toString('hex'), hasCertificate: false };
  }

  async createKey(name: string, spec: KeySpec): Promise<AdminKeyVersion> {
    if ((await this.scan()).some((k) => k.name === name)) throw new ServiceError('CONFLICT', `key '${name}' exists; use 'keys rotate' to add a version`);
    return this.generate(name, 1, spec);
  }

  async rotateKey(name: string): Promise<AdminKeyVersion> {
    const versions = (await this.scan()).filter((k) => k.name === name);
    const current = versions[versions.length - 1];
    if (!current) throw notFound(`no key named '${name}'`);
    return this.generate(name, current.version + 1, current.keySpec);
  }

  async listKeys(): Promise<AdminKeyVersion[]> {
    return (await this.scan()).map(({ handle: _h, ...k }) => k);
  }

  async retireKey(name: string, version: number): Promise<{ removed: AdminKeyVersion; objects: RemovedObject[] }> {
    const target = await this.findRetirable(name, version);
    // The pair and its certificates share CKA_ID; remove every object with it.
    const handles = await this.p11.findObjects(this.session, [{ type: P11.CKA_ID, value: Buffer.from(target.id, 'hex') }]);
    const objects: RemovedObject[] = [];
    for (const h of handles) {
      const a = await this.p11.getAttributes(this.session, h, [P11.CKA_CLASS, P11.CKA_LABEL]);
      const cls = value(a, P11.CKA_CLASS)?.readUInt32LE(0);
      objects.push({ kind: OBJECT_KINDS.get(cls ?? -1) ?? 'other object', label: value(a, P11.CKA_LABEL)?.toString('utf8') ?? '' });
      await this.p11.destroyObject(this.session, h);
    }
    const { handle: _h, ...removed } = target;
    return { removed, objects };
  }

  async retirable(name: string, version: number): Promise<AdminKeyVersion> {
    const { handle: _h, ...k } = await this.findRetirable(name, version);
    return k;
  }

  private async findRetirable(name: string, version: number): Promise<Found> {
    const versions = (await this.scan()).filter((k) => k.name === name);
    const target = versions.find((k) => k.version === version);
    if (!target) throw notFound(versions.length ? `key '${name}' has no version ${version}` : `no key named '${name}'`);
    if (versions.length === 1) throw invalid(`version: ${version} is the only version of '${name}'; it cannot be retired`);
    return target;
  }

  async close(): Promise<void> {
    await this.p11.logout(this.session).catch(() => undefined);
    await this.p11.finalize().catch(() => undefined);
    await this.p11.close();
  }
}
