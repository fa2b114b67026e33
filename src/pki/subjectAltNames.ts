import { isIP } from 'node:net';
import { GeneralName, GeneralNames } from '@peculiar/asn1-x509';
import { invalid } from '../errors.js';

/** Subject alternative names as the API takes them. */
export interface SubjectAltNamesInput {
  readonly dns?: readonly string[];
  readonly ip?: readonly string[];
  readonly email?: readonly string[];
  readonly uri?: readonly string[];
}

export interface SubjectAltNames {
  /** Normalized: DNS names lower-cased, IPs in canonical text form. */
  readonly dns: readonly string[];
  readonly ip: readonly string[];
  readonly email: readonly string[];
  readonly uri: readonly string[];
  readonly generalNames: GeneralNames;
  readonly count: number;
}

const KINDS = ['dns', 'ip', 'email', 'uri'] as const;
type Kind = (typeof KINDS)[number];
export const MAX_SAN_ENTRIES = 100;
const MAX_URI_LENGTH = 2048;

/** Why `name` is not an LDH host name (optionally with a leading "*." label), or undefined if it is. */
export function dnsNameProblem(name: string, allowWildcard: boolean): string | undefined {
  if (name.length === 0) return 'must not be empty';
  if (name.length > 253) return 'is longer than 253 characters';
  // eslint-disable-next-line no-control-regex
  if (/[^\x21-\x7e]/.test(name)) return 'must be ASCII without spaces (use the xn-- form of an internationalized name)';
  if (name.endsWith('.')) return 'must not end with a dot';
  const labels = name.split('.');
  for (const [i, label] of labels.entries()) {
    if (label === '*') {
      if (!allowWildcard) return 'must not contain a wildcard';
      if (i !== 0) return 'may only have a wildcard as the whole first label (*.example.com)';
      if (labels.length < 3) return 'must have at least two labels after a wildcard';
      continue;
    }
    if (label.length === 0) return 'has an empty label';
    if (label.length > 63) return 'has a label longer than 63 characters';
    if (!/^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$/.test(label)) {
      return label.includes('*')
        ? 'may only have a wildcard as the whole first label (*.example.com)'
        : `has an invalid label "${label}" (letters, digits and inner hyphens only)`;
    }
  }
  if (/^[0-9]+$/.test(labels.at(-1) ?? '')) return 'looks like an IP address (use ip)';
  return undefined;
}

/** The address bytes of an IPv4 (4 bytes) or IPv6 (16 bytes) literal, or undefined. */
export function ipAddressBytes(text: string): Buffer | undefined {
  const family = text.includes('%') ? 0 : isIP(text);
  if (family === 4) return Buffer.from(text.split('.').map(Number));
  if (family !== 6) return undefined;
  let groups = text;
  const tail: number[] = [];
  const v4 = /(?:^|:)(\d+\.\d+\.\d+\.\d+)$/.exec(text)?.[1];
  if (v4 !== undefined) {
    // isIP has checked the whole literal, so each part is 0-255 and fits its byte.
    const bytes = Buffer.from(v4.split('.').map(Number));
    tail.push(bytes.readUInt16BE(0), bytes.readUInt16BE(2));
    groups = text.slice(0, text.length - v4.length);
    if (groups.endsWith(':') && !groups.endsWith('::')) groups = groups.slice(0, -1);
  }
  const parse = (part: string): number[] => (part === '' ? [] : part.split(':').map((g) => parseInt(g, 16)));
  let words: number[];
  if (groups.includes('::')) {
    const [left = '', right = ''] = groups.split('::');
    const l = parse(left);
    const r = [...parse(right), ...tail];
    words = [...l, ...new Array<number>(8 - l.length - r.length).fill(0), ...r];
  } else {
    words = [...parse(groups), ...tail];
  }
  if (words.length !== 8 || words.some((w) => !(w >= 0 && w <= 0xffff))) return undefined;
  const out = Buffer.alloc(16);
  for (const [i, w] of words.entries()) out.writeUInt16BE(w, 2 * i);
  return out;
}

/** Canonical text for address bytes; for IPv6 the uncompressed 8-group form, which @peculiar/asn1-x509 encodes exactly. */
function ipText(bytes: Buffer): string {
  if (bytes.length === 4) return [...bytes].join('.');
  const words: string[] = [];
  for (let i = 0; i < 16; i += 2) words.push(bytes.readUInt16BE(i).toString(16).padStart(4, '0'));
  return words.join(':');
}

const LOCAL_PART = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$/;

function emailProblem(addr: string): string | undefined {
  if (addr.length > 254) return 'is longer than 254 characters';
  const at = addr.lastIndexOf('@');
  if (at < 0) return 'must be an address of the form local@domain';
  const local = addr.slice(0, at);
  const domain = addr.slice(at + 1);
  if (local.length === 0 || local.length > 64 || !LOCAL_PART.test(local)) {
    return "has an invalid local part (dot-atom of ASCII letters, digits and !#$%&'*+/=?^_`{|}~- only)";
  }
  const d = dnsNameProblem(domain, false);
  if (d) return `has an invalid domain: ${d}`;
  return undefined;
}

function uriProblem(uri: string): string | undefined {
  if (uri.length > MAX_URI_LENGTH) return `is longer than ${MAX_URI_LENGTH} characters`;
  // IA5String, and RFC 3986 allows no raw spaces or controls.
  if (/[^\x21-\x7e]/.test(uri)) return 'must be ASCII without spaces or control characters (percent-encode them)';
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    return 'is not an absolute URI';
  }
  if (!/^[A-Za-z][A-Za-z0-9+.-]*:/.test(uri) || uri.length <= url.protocol.length) return 'must have a scheme and a scheme-specific part';
  return undefined;
}

/**
 * Validates subject alternative names and builds their GeneralNames. Every problem is
 * INVALID_ARGUMENT naming the exact element, e.g. `subjectAltNames.dns[2]`.
 */
export function parseSubjectAltNames(input: unknown, field = 'subjectAltNames'): SubjectAltNames {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw invalid(`${field}: must be an object with dns, ip, email and/or uri lists`);
  }
  for (const key of Object.keys(input)) {
    if (!(KINDS as readonly string[]).includes(key)) {
      // A key that is not a plain word ('', ' ', 'a: b', 100 KB) is quoted and cut, so the message still starts with the field.
      const allowed = `(allowed: ${KINDS.join(', ')})`;
      throw invalid(
        /^[A-Za-z0-9_-]{1,32}$/.test(key) ? `${field}.${key}: unknown key ${allowed}` : `${field}: unknown key ${JSON.stringify(key.slice(0, 32))} ${allowed}`,
      );
    }
  }
  const out: Record<Kind, string[]> = { dns: [], ip: [], email: [], uri: [] };
  const names: GeneralName[] = [];
  for (const kind of KINDS) {
    const list = (input as Record<string, unknown>)[kind];
    if (list === undefined) continue;
    if (!Array.isArray(list)) throw invalid(`${field}.${kind}: must be an array of strings`);
    if (list.length > MAX_SAN_ENTRIES) throw invalid(`${field}.${kind}: more than ${MAX_SAN_ENTRIES} entries`);
    const seen = new Map<string, number>();
    list.forEach((value: unknown, i) => {
      const at = `${field}.${kind}[${i}]`;
      if (typeof value !== 'string') throw invalid(`${at}: must be a string`);
      let key: string;
      let name: GeneralName;
      switch (kind) {
        case 'dns': {
          const p = dnsNameProblem(value, true);
          if (p) throw invalid(`${at}: "${value}" ${p}`);
          key = value.toLowerCase();
          name = new GeneralName({ dNSName: key });
          break;
        }
        case 'ip': {
          const bytes = ipAddressBytes(value);
          if (!bytes) throw invalid(`${at}: "${value}" is not an IPv4 or IPv6 address`);
          key = ipText(bytes);
          name = new GeneralName({ iPAddress: key });
          break;
        }
        case 'email': {
          const p = emailProblem(value);
          if (p) throw invalid(`${at}: "${value}" ${p}`);
          // The domain part is case-insensitive; the local part is not.
          const atSign = value.lastIndexOf('@');
          key = `${value.slice(0, atSign)}@${value.slice(atSign + 1).toLowerCase()}`;
          name = new GeneralName({ rfc822Name: key });
          break;
        }
        case 'uri': {
          const p = uriProblem(value);
          if (p) throw invalid(`${at}: "${value}" ${p}`);
          key = value;
          name = new GeneralName({ uniformResourceIdentifier: value });
          break;
        }
      }
      const dup = seen.get(key);
      if (dup !== undefined) throw invalid(`${at}: duplicate of ${field}.${kind}[${dup}]`);
      seen.set(key, i);
      out[kind].push(kind === 'ip' ? formatIp(key) : key);
      names.push(name);
    });
  }
  return { ...out, generalNames: new GeneralNames(names), count: names.length };
}

/** Compact text of a canonical IP (for responses and messages). */
function formatIp(canonical: string): string {
  if (!canonical.includes(':')) return canonical;
  return new URL(`http://[${canonical}]/`).hostname.slice(1, -1);
}

/** A GeneralName as one of the four kinds this CA issues; undefined for any other type. */
export function sanEntryOf(n: GeneralName): { kind: Kind; value: string } | undefined {
  if (n.dNSName !== undefined) return { kind: 'dns', value: n.dNSName };
  if (n.iPAddress !== undefined) return { kind: 'ip', value: n.iPAddress };
  if (n.rfc822Name !== undefined) return { kind: 'email', value: n.rfc822Name };
  if (n.uniformResourceIdentifier !== undefined) return { kind: 'uri', value: n.uniformResourceIdentifier };
  return undefined;
}

/**
 * The names of a subjectAltName extension (e.g. one requested in a CSR) as API input, so
 * they go through the same validation. Types other than dNSName, iPAddress, rfc822Name and
 * uniformResourceIdentifier are INVALID_ARGUMENT naming `field`.
 */
export function subjectAltNamesInputOf(names: readonly GeneralName[], field: string): SubjectAltNamesInput {
  const out: Record<Kind, string[]> = { dns: [], ip: [], email: [], uri: [] };
  for (const [i, n] of names.entries()) {
    const entry = sanEntryOf(n);
    if (!entry) throw invalid(`${field}: subject alternative name ${i + 1} is of a type this CA does not issue (only DNS, IP, email, URI)`);
    out[entry.kind].push(entry.value);
  }
  return Object.fromEntries(KINDS.filter((k) => out[k].length > 0).map((k) => [k, out[k]]));
}
