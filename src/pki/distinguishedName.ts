import { AsnConvert } from '@peculiar/asn1-schema';
import { AttributeTypeAndValue, AttributeValue, Name, RelativeDistinguishedName } from '@peculiar/asn1-x509';
import { invalid } from '../errors.js';

/**
 * RFC 4514 string <-> X.501 Name.
 *
 * The string lists RDNs from the last of the RDNSequence to the first (RFC 4514 §2.1), so
 * "CN=Issuing CA,O=Example,C=US" encodes as the sequence C, O, CN, as `openssl -subj
 * /C=US/O=Example/CN=Issuing CA` does.
 */

type StringKind = 'printable' | 'utf8' | 'ia5';

interface AttributeSpec {
  /** How the type is printed. */
  readonly name: string;
  readonly oid: string;
  /** Keywords accepted (case-insensitive), besides `name` and the dotted OID. */
  readonly aliases: readonly string[];
  readonly kind: StringKind;
  /** Upper bound in characters (RFC 5280 Appendix A ub-* values where defined). */
  readonly maxLength: number;
  readonly normalize?: (value: string) => string;
  readonly check?: (value: string) => string | undefined;
}

const ATTRIBUTES: readonly AttributeSpec[] = [
  { name: 'CN', oid: '2.5.4.3', aliases: ['commonName'], kind: 'utf8', maxLength: 64 },
  { name: 'O', oid: '2.5.4.10', aliases: ['organizationName'], kind: 'utf8', maxLength: 64 },
  { name: 'OU', oid: '2.5.4.11', aliases: ['organizationalUnitName'], kind: 'utf8', maxLength: 64 },
  {
    name: 'C',
    oid: '2.5.4.6',
    aliases: ['countryName'],
    kind: 'printable',
    maxLength: 2,
    normalize: (v) => v.toUpperCase(),
    check: (v) => (/^[A-Z]{2}$/.test(v) ? undefined : 'must be a two-letter country code (ISO 3166)'),
  },
  { name: 'L', oid: '2.5.4.7', aliases: ['localityName'], kind: 'utf8', maxLength: 128 },
  { name: 'ST', oid: '2.5.4.8', aliases: ['S', 'stateOrProvinceName'], kind: 'utf8', maxLength: 128 },
  // X.520 serialNumber is a PrintableString.
  { name: 'serialNumber', oid: '2.5.4.5', aliases: [], kind: 'printable', maxLength: 64 },
  // RFC 4519 domainComponent and PKCS#9 emailAddress are IA5Strings.
  {
    name: 'DC',
    oid: '0.9.2342.19200300.100.1.25',
    aliases: ['domainComponent'],
    kind: 'ia5',
    maxLength: 63,
    check: (v) => (/^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$/.test(v) ? undefined : 'must be a single DNS label'),
  },
  {
    name: 'emailAddress',
    oid: '1.2.840.113549.1.9.1',
    aliases: ['E', 'email'],
    kind: 'ia5',
    maxLength: 255,
    check: (v) => (/^[^\s@]+@[^\s@]+$/.test(v) ? undefined : 'must be an email address'),
  },
  { name: 'UID', oid: '0.9.2342.19200300.100.1.1', aliases: ['userId'], kind: 'utf8', maxLength: 256 },
];

const BY_KEYWORD = new Map<string, AttributeSpec>();
const BY_OID = new Map<string, AttributeSpec>();
for (const a of ATTRIBUTES) {
  BY_OID.set(a.oid, a);
  for (const k of [a.name, a.oid, ...a.aliases]) BY_KEYWORD.set(k.toLowerCase(), a);
}
const SUPPORTED = ATTRIBUTES.map((a) => a.name).join(', ');

const PRINTABLE = /^[A-Za-z0-9 '()+,\-./:=?]*$/;
const IA5 = /^\p{ASCII}*$/u;
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is this regex's purpose
const CONTROL = /[\x00-\x1f\x7f]/;

export const MAX_DN_LENGTH = 4096;

interface RawAva {
  readonly type: string;
  readonly value: string;
  readonly position: number;
}

/** Splits the string into RDNs of (type, unescaped value). */
function tokenize(s: string, field: string): RawAva[][] {
  const rdns: RawAva[][] = [];
  let rdn: RawAva[] = [];
  let i = 0;
  const fail = (at: number, what: string): never => {
    throw invalid(`${field}: ${what} at position ${at + 1}`);
  };
  for (;;) {
    while (s[i] === ' ') i++;
    const typeStart = i;
    while (i < s.length && s[i] !== '=' && s[i] !== ',' && s[i] !== '+') i++;
    if (s[i] !== '=') fail(typeStart, 'expected TYPE=value');
    const type = s.slice(typeStart, i).trim();
    if (type === '') fail(typeStart, 'missing attribute type');
    i++; // '='
    while (s[i] === ' ') i++;
    if (s[i] === '#') fail(i, 'hex-encoded (#...) values are not supported; escape a leading # as \\#');
    const valueStart = i;
    const bytes: number[] = [];
    let keep = 0; // bytes up to the last escaped or non-space character
    const enc = new TextEncoder();
    while (i < s.length && s[i] !== ',' && s[i] !== '+') {
      const c = s.charAt(i);
      if (c === '\\') {
        const n = s[i + 1];
        if (n !== undefined && /^[0-9A-Fa-f]{2}$/.test(s.slice(i + 1, i + 3))) {
          bytes.push(parseInt(s.slice(i + 1, i + 3), 16));
          i += 3;
        } else if (n !== undefined && ' "#+,;<=>\\'.includes(n)) {
          bytes.push(n.charCodeAt(0));
          i += 2;
        } else {
          fail(i, 'invalid escape');
        }
        keep = bytes.length;
        continue;
      }
      if ('";<>'.includes(c)) fail(i, `unescaped ${c}`);
      const code = s.codePointAt(i) ?? fail(i, 'unexpected end of input');
      const ch = String.fromCodePoint(code);
      bytes.push(...enc.encode(ch));
      i += ch.length;
      if (c !== ' ') keep = bytes.length;
    }
    let value: string;
    try {
      value = new TextDecoder('utf-8', { fatal: true }).decode(new Uint8Array(bytes.slice(0, keep)));
    } catch {
      return fail(valueStart, 'escaped bytes are not valid UTF-8');
    }
    rdn.push({ type, value, position: typeStart });
    if (i >= s.length) {
      rdns.push(rdn);
      return rdns;
    }
    if (s[i] === ',') {
      rdns.push(rdn);
      rdn = [];
    }
    i++;
  }
}

function attributeValue(spec: AttributeSpec, value: string): AttributeValue {
  switch (spec.kind) {
    case 'printable':
      return new AttributeValue({ printableString: value });
    case 'ia5':
      return new AttributeValue({ ia5String: value });
    case 'utf8':
      return new AttributeValue({ utf8String: value });
  }
}

/**
 * Parses an RFC 4514 distinguished name into a Name. Supported types: CN, O, OU, C, L, ST,
 * serialNumber, DC, emailAddress (E), UID (keywords case-insensitive; dotted OIDs of these
 * also accepted). Every problem is INVALID_ARGUMENT naming `field`.
 */
export function parseDistinguishedName(input: unknown, field = 'subject'): Name {
  if (typeof input !== 'string') throw invalid(`${field}: must be a string`);
  if (input.length > MAX_DN_LENGTH) throw invalid(`${field}: longer than ${MAX_DN_LENGTH} characters`);
  if (input.trim() === '') throw invalid(`${field}: must not be empty`);
  const rdns = tokenize(input, field).map((rdn) => {
    const seen = new Set<string>();
    const avas = rdn.map(({ type, value: given, position }) => {
      const spec = BY_KEYWORD.get(type.toLowerCase());
      if (!spec) throw invalid(`${field}: unknown attribute type "${type}" (supported: ${SUPPORTED})`);
      const what = `${field}: ${spec.name} (position ${position + 1})`;
      const value = spec.normalize ? spec.normalize(given) : given;
      if (seen.has(spec.oid)) throw invalid(`${what} appears twice in one multi-valued RDN`);
      seen.add(spec.oid);
      if (value === '') throw invalid(`${what} must not be empty`);
      if ([...value].length > spec.maxLength) throw invalid(`${what} is longer than ${spec.maxLength} characters`);
      if (CONTROL.test(value)) throw invalid(`${what} contains a control character`);
      if (spec.kind === 'printable' && !PRINTABLE.test(value)) throw invalid(`${what} has characters not allowed in a PrintableString`);
      if (spec.kind === 'ia5' && !IA5.test(value)) throw invalid(`${what} must be ASCII`);
      const problem = spec.check?.(value);
      if (problem) throw invalid(`${what} ${problem}`);
      return new AttributeTypeAndValue({ type: spec.oid, value: attributeValue(spec, value) });
    });
    // DER: the members of a SET OF are sorted by their encodings.
    const keyed = avas.map((a) => ({ a, der: Buffer.from(AsnConvert.serialize(a)) }));
    keyed.sort((x, y) => Buffer.compare(x.der, y.der));
    return new RelativeDistinguishedName(keyed.map((k) => k.a));
  });
  return new Name(rdns.reverse());
}

function escapeValue(v: string): string {
  const chars = [...v];
  return chars
    .map((c, i) => {
      if ('\\"+,;<>'.includes(c)) return `\\${c}`;
      const code = c.charCodeAt(0);
      if (code < 0x20 || code === 0x7f) return `\\${code.toString(16).padStart(2, '0').toUpperCase()}`;
      if ((i === 0 && (c === '#' || c === ' ')) || (i === chars.length - 1 && c === ' ')) return `\\${c}`;
      return c;
    })
    .join('');
}

function formatAva(ava: AttributeTypeAndValue): string {
  const spec = BY_OID.get(ava.type);
  const v = ava.value;
  const text = v.utf8String ?? v.printableString ?? v.ia5String ?? v.teletexString ?? v.bmpString ?? v.universalString;
  if (!spec || text === undefined) {
    // RFC 4514 §2.4: values of unrecognised types (or non-string values) as #hex of their BER.
    return `${spec?.name ?? ava.type}=#${Buffer.from(AsnConvert.serialize(v)).toString('hex')}`;
  }
  return `${spec.name}=${escapeValue(text)}`;
}

/** Formats a Name as an RFC 4514 string (last RDN first), e.g. "CN=Issuing CA 2027,O=Example,C=US". */
export function formatDistinguishedName(name: Name): string {
  return [...name]
    .reverse()
    .map((rdn) => [...rdn].map(formatAva).join('+'))
    .join(',');
}
