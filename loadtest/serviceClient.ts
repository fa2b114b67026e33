/**
 * Plain HTTP calls the harness makes outside the measured load: reading the keys, getting
 * signatures for the verify scenario, setting up an issuing CA. Not for load (that is autocannon).
 */
import { createPublicKey } from 'node:crypto';
import { isKeySpec, type KeySpec } from '../src/crypto/algorithms.js';
import type { KeyUnderTest } from './requests.js';

export class ServiceCallError extends Error {
  override readonly name = 'ServiceCallError';
  constructor(
    readonly status: number,
    readonly method: string,
    readonly path: string,
    readonly body: string,
  ) {
    super(`${method} ${path} answered ${status}: ${body.slice(0, 300)}`);
  }
}

export class ServiceClient {
  private readonly base: string;

  constructor(
    url: string,
    private readonly headers: Record<string, string> = {},
  ) {
    this.base = url.replace(/\/+$/, '');
  }

  async call<T>(method: 'GET' | 'POST' | 'PUT', path: string, body?: unknown): Promise<T> {
    const res = await fetch(this.base + path, {
      method,
      headers: { ...this.headers, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(30_000),
    });
    const text = await res.text();
    if (!res.ok) throw new ServiceCallError(res.status, method, path, text);
    return (text === '' ? undefined : JSON.parse(text)) as T;
  }

  /** Every key the service serves, with the public key of each version. */
  async keys(): Promise<KeyUnderTest[]> {
    const r = await this.call<{ keys: { name: string; keySpec: string; versions: { version: number; publicKeyPem: string }[] }[] }>('GET', '/v1/keys');
    return r.keys
      .filter((k): k is typeof k & { keySpec: KeySpec } => isKeySpec(k.keySpec))
      .map((k) => ({
        name: k.name,
        keySpec: k.keySpec,
        publicKeys: new Map(k.versions.map((v) => [v.version, createPublicKey(v.publicKeyPem)])),
      }));
  }
}

/**
 * The key to load for a spec: the one named `preferred` if the service has it (the demo key on
 * a local token), otherwise the first key of that spec.
 */
export function pickKey(keys: readonly KeyUnderTest[], spec: KeySpec, preferred?: string): KeyUnderTest | undefined {
  return keys.find((k) => k.name === preferred && k.keySpec === spec) ?? keys.find((k) => k.keySpec === spec);
}
