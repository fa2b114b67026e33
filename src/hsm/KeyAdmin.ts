import type { KeySpec } from '../crypto/algorithms.js';

/**
 * Key administration: a capability the serving process never holds. It runs in its own process,
 * logged in with the key-manager credential (HSM_ADMIN_PIN), not the hot path's.
 */
export interface AdminKeyVersion {
  readonly name: string;
  readonly version: number;
  readonly keySpec: KeySpec;
  readonly id: string;
  readonly hasCertificate: boolean;
}

/** One token object a retirement destroyed. */
export interface RemovedObject {
  readonly kind: 'private key' | 'public key' | 'certificate' | 'other object';
  readonly label: string;
}

export interface KeyAdmin {
  /** Creates version 1 of a new key; refuses a name that exists. */
  createKey(name: string, spec: KeySpec): Promise<AdminKeyVersion>;
  /** Adds version N+1 with the spec of the current version. */
  rotateKey(name: string): Promise<AdminKeyVersion>;
  listKeys(): Promise<AdminKeyVersion[]>;
  /** What retireKey would remove; NOT_FOUND, or INVALID_ARGUMENT for the only version, when it would refuse. */
  retirable(name: string, version: number): Promise<AdminKeyVersion>;
  /** Destroys one version (never the only one); returns what it removed. */
  retireKey(name: string, version: number): Promise<{ removed: AdminKeyVersion; objects: RemovedObject[] }>;
  close(): Promise<void>;
}
