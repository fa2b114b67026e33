/**
 * A KeyManager (src/hsm/KeyManager.ts) in memory, for SigningService's unit tests: real key pairs,
 * so the service can verify with the cached public keys, and signatures the tests can trace back
 * to their request (each is made from the digest it signs). Every HSM call is recorded, and a test
 * decides per call what fails through the `on*` hooks.
 */
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { algorithmInfo, KEY_SPEC_INFO, signatureLength, type KeySpec } from '../../../src/crypto/algorithms.js';
import { invalid, notFound, ServiceError } from '../../../src/errors.js';
import { CKR, toHsmError, type HsmError } from '../../../src/hsm/errors.js';
import type {
  CancelSignal,
  HsmHealth,
  KeyInfo,
  KeyManager,
  SignManyOutcome,
  SignRequest,
  SignResult,
  VerifyDigestRequest,
} from '../../../src/hsm/KeyManager.js';

export interface FakeKey {
  readonly info: KeyInfo;
  /** By version. */
  readonly privateKeys: ReadonlyMap<number, KeyObject>;
}

export function fakeKey(name: string, keySpec: KeySpec, versions = 1): FakeKey {
  const privateKeys = new Map<number, KeyObject>();
  const list = Array.from({ length: versions }, (_, i) => {
    const spec = KEY_SPEC_INFO[keySpec];
    const pair =
      spec.keyType === 'RSA' ? generateKeyPairSync('rsa', { modulusLength: spec.bits }) : generateKeyPairSync('ec', { namedCurve: spec.curve!.nodeName });
    privateKeys.set(i + 1, pair.privateKey);
    return {
      version: i + 1,
      keySpec,
      publicKey: pair.publicKey,
      publicKeyPem: pair.publicKey.export({ format: 'pem', type: 'spki' }).toString(),
      hasCertificate: false,
    };
  });
  return { info: { name, keySpec, currentVersion: versions, versions: list }, privateKeys };
}

/** The signature the fake makes of a digest: the digest repeated to the key's signature length (raw r||s for EC). */
export function fakeSignature(keySpec: KeySpec, digest: Buffer): Buffer {
  const n = signatureLength(keySpec);
  return Buffer.alloc(n, digest);
}

/** A PKCS#11 failure as the HSM layer reports it (retryable or not, per src/hsm/errors.ts). */
export const hsmFailure = (code: number): HsmError => toHsmError({ code, method: 'C_Sign' });
export const sessionLost = (): HsmError => hsmFailure(CKR.SESSION_HANDLE_INVALID);
export const deviceError = (): HsmError => hsmFailure(CKR.DEVICE_ERROR);
export const hsmRefuses = (): HsmError => hsmFailure(CKR.DATA_LEN_RANGE);

type SignOne = Omit<SignRequest, 'signal'>;

export class FakeKeyManager implements KeyManager {
  private readonly keys = new Map<string, FakeKey>();
  /** Every signMany call's requests, in call order. */
  readonly signManyCalls: SignOne[][] = [];
  /** Every sign call's request. */
  readonly signCalls: SignRequest[] = [];
  readonly verifyDigestCalls: VerifyDigestRequest[] = [];
  getKeyCalls = 0;
  /**
   * Decides the outcome of a signMany call: return the outcomes (use `this.signOne` for a
   * signature), or throw. Default: every item signed.
   */
  onSignMany: (reqs: readonly SignOne[], call: number) => SignManyOutcome[] | Promise<SignManyOutcome[]> = (reqs) => reqs.map((r) => this.outcome(r));
  /** Decides a sign call: return a result or throw. Default: signed. */
  onSign: (req: SignRequest, call: number) => SignResult | Promise<SignResult> = (req) => this.signOne(req);
  onVerifyDigest: (req: VerifyDigestRequest) => boolean | Promise<boolean> = () => true;

  constructor(keys: readonly FakeKey[]) {
    for (const k of keys) this.keys.set(k.info.name, k);
  }

  private key(name: string, version?: number): { key: FakeKey; version: number } {
    const key = this.keys.get(name);
    if (!key) throw notFound(`key '${name}' not found`);
    const v = version ?? key.info.currentVersion;
    if (!key.info.versions.some((x) => x.version === v)) throw notFound(`key '${name}' has no version ${v}`);
    return { key, version: v };
  }

  /** What the contract asks of a sign: the key exists and fits the algorithm. */
  signOne(req: SignOne): SignResult {
    const { key, version } = this.key(req.name, req.version);
    const spec = key.info.versions.find((x) => x.version === version)!.keySpec;
    if (algorithmInfo(req.algorithm).keyType !== KEY_SPEC_INFO[spec].keyType) {
      throw invalid(`algorithm: ${req.algorithm} cannot be used with key '${req.name}' (${spec})`);
    }
    return { name: req.name, version, keySpec: spec, signature: fakeSignature(spec, req.digest) };
  }

  /** signOne as a signMany outcome: an item's own error is its answer. */
  outcome(req: SignOne): SignManyOutcome {
    try {
      return this.signOne(req);
    } catch (e) {
      if (e instanceof ServiceError) return e;
      throw e;
    }
  }

  listKeys(): Promise<KeyInfo[]> {
    return Promise.resolve([...this.keys.values()].map((k) => k.info));
  }

  getKey(name: string, version?: number): Promise<KeyInfo> {
    this.getKeyCalls++;
    try {
      return Promise.resolve(this.key(name, version).key.info);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  async sign(req: SignRequest): Promise<SignResult> {
    this.signCalls.push(req);
    return this.onSign(req, this.signCalls.length - 1);
  }

  async signMany(reqs: readonly SignOne[], _signal?: CancelSignal): Promise<SignManyOutcome[]> {
    this.signManyCalls.push([...reqs]);
    return this.onSignMany(reqs, this.signManyCalls.length - 1);
  }

  async verifyDigest(req: VerifyDigestRequest): Promise<boolean> {
    this.verifyDigestCalls.push(req);
    return this.onVerifyDigest(req);
  }

  health(): HsmHealth {
    return {
      ready: true,
      recovering: false,
      sessions: { inUse: 0, idle: 1, waiting: 0, max: 1 },
      callsInFlight: 0,
      oldestCallMs: 0,
      keys: this.keys.size,
      recoveries: 0,
      threads: { configured: 1, running: 1 },
    };
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
