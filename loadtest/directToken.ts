/**
 * The harness's direct line to a token: pkcs11js and nothing else (no HTTP, no service, no HSM
 * threads). PKCS#11 state is per process: a process opens one DirectToken and closes it.
 */
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import type * as Pkcs11Types from 'pkcs11js';
import { algorithmInfo, type SigningAlgorithm } from '../src/crypto/algorithms.js';
import { noTokenMessage, openToken } from '../src/hsm/pkcs11/findToken.js';
import { signingInput } from '../src/hsm/pkcs11/mechanisms.js';

const pkcs11js = createRequire(import.meta.url)('pkcs11js') as typeof Pkcs11Types;

export interface DirectSetup {
  readonly modulePath: string;
  readonly tokenLabel: string;
  /** Index in the list of slots with a token (HSM_SLOT): chosen over the label when set. */
  readonly slotIndex?: number;
  readonly pin: string;
  /** CKA_LABEL of the private key, e.g. "demo-rsa-2048/v1". */
  readonly keyLabel: string;
  readonly algorithm: SigningAlgorithm;
  readonly signatureBytes: number;
}

const SESSION_FLAGS = pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION;

/**
 * A token opened with pkcs11js directly, in the calling process, the right way: initialized with
 * OS locking, logged in once, the key found once. Used by the direct-rate child processes and by
 * hsmThreadCost.ts's plain loop.
 */
export class DirectToken {
  readonly lib = new pkcs11js.PKCS11();
  readonly slot: Buffer;
  loginSession: Buffer;
  key: Buffer;
  readonly mechanism: Pkcs11Types.Mechanism;
  readonly data: Buffer;

  constructor(readonly setup: DirectSetup) {
    this.lib.load(setup.modulePath);
    // Without OS locking SoftHSMv2 crashes once two C_SignAsync run at once.
    this.lib.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
    const want = setup.slotIndex !== undefined ? { slotIndex: setup.slotIndex } : { tokenLabel: setup.tokenLabel };
    const token = openToken(this.lib, pkcs11js, want, SESSION_FLAGS, setup.pin);
    if ('noToken' in token) throw new Error(noTokenMessage(want, token));
    this.slot = token.slot;
    this.loginSession = token.loginSession;
    this.key = this.findKey(this.loginSession);
    const digest = createHash(algorithmInfo(setup.algorithm).hash).update('hsm-signer direct rate').digest();
    const input = signingInput(setup.algorithm, digest);
    this.mechanism = input.mechanism as Pkcs11Types.Mechanism;
    this.data = input.data;
  }

  findKey(session: Buffer): Buffer {
    this.lib.C_FindObjectsInit(session, [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
      { type: pkcs11js.CKA_LABEL, value: this.setup.keyLabel },
    ]);
    try {
      const [key] = this.lib.C_FindObjects(session, 1);
      if (!key) throw new Error(`no private key labelled ${this.setup.keyLabel}`);
      return key;
    } finally {
      this.lib.C_FindObjectsFinal(session);
    }
  }

  signSync(session: Buffer, key = this.key): void {
    this.lib.C_SignInit(session, this.mechanism, key);
    this.lib.C_Sign(session, this.data, Buffer.allocUnsafe(this.setup.signatureBytes));
  }

  openSessions(n: number): Buffer[] {
    return Array.from({ length: n }, () => this.lib.C_OpenSession(this.slot, SESSION_FLAGS));
  }

  close(): void {
    try {
      this.lib.C_Finalize();
    } catch {
      // Exiting anyway.
    }
  }
}
