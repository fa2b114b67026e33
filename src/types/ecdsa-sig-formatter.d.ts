/** The two functions of ecdsa-sig-formatter (it ships no types). `alg` names the curve size: ES256, ES384, ES512. */
declare module 'ecdsa-sig-formatter' {
  export function joseToDer(signature: Buffer | string, alg: string): Buffer;
  export function derToJose(signature: Buffer | string, alg: string): string;
}
