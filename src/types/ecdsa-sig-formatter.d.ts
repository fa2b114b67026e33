/** The function of ecdsa-sig-formatter the service uses (it ships no types). `alg` names the curve size: ES256, ES384, ES512. */
declare module 'ecdsa-sig-formatter' {
  export function joseToDer(signature: Buffer | string, alg: string): Buffer;
}
