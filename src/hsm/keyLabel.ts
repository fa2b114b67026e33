/** How key names and versions are stored on the token: version N of key K is labelled `K/vN`. */
export const KEY_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function isKeyName(value: unknown): value is string {
  return typeof value === 'string' && KEY_NAME_PATTERN.test(value);
}

export function keyLabel(name: string, version: number): string {
  return `${name}/v${version}`;
}

/** A label without a `/vN` suffix is version 1 of a key named by the whole label (keys made by other tools). */
export function parseKeyLabel(label: string): { name: string; version: number } | undefined {
  const m = /^(.*)\/v([1-9][0-9]{0,8})$/.exec(label);
  if (m === null) return isKeyName(label) ? { name: label, version: 1 } : undefined;
  const [, name, version] = m;
  if (name === undefined || version === undefined) throw new Error('the key label pattern has lost a capture group (a bug)');
  return isKeyName(name) ? { name, version: Number(version) } : undefined;
}
