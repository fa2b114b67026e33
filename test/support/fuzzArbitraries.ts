import fc from 'fast-check';

/**
 * Building blocks of the fuzz tests: JSON written by hand (so bodies can hold duplicate keys,
 * `__proto__`, numbers JSON.stringify never writes), base64 in every near-miss encoding, values
 * of the wrong type, key names and path segments in every encoding.
 */

/** A JSON fragment written as is: `1e400`, `-0`, `1.0`. */
export class RawJson {
  constructor(readonly text: string) {}
}

/** An object as a list of members, in order, duplicates and `__proto__` allowed. */
export class JsonObject {
  constructor(readonly members: readonly (readonly [string, unknown])[]) {}

  get(key: string): unknown {
    return this.members.find(([k]) => k === key)?.[1];
  }

  has(key: string): boolean {
    return this.members.some(([k]) => k === key);
  }

  /** With `key` set to `value` (in place, or appended); `undefined` removes it. */
  with(key: string, value: unknown): JsonObject {
    const i = this.members.findIndex(([k]) => k === key);
    const rest = this.members.filter(([k]) => k !== key);
    if (value === undefined) return new JsonObject(rest);
    if (i < 0) return new JsonObject([...this.members, [key, value]]);
    const copy = [...this.members];
    copy[i] = [key, value];
    return new JsonObject(copy);
  }
}

export function jsonText(v: unknown): string {
  if (v instanceof RawJson) return v.text;
  if (v instanceof JsonObject)
    return `{${v.members
      .filter(([, x]) => x !== undefined)
      .map(([k, x]) => `${JSON.stringify(k)}:${jsonText(x)}`)
      .join(',')}}`;
  if (Array.isArray(v)) return `[${v.map((x) => (x === undefined ? 'null' : jsonText(x))).join(',')}]`;
  if (typeof v === 'number' && !Number.isFinite(v)) return 'null';
  if (v !== null && typeof v === 'object') return JSON.stringify(v);
  return JSON.stringify(v) ?? 'null';
}

/** `arb` once in `1 + n` draws, else undefined. */
export const rarely = <T>(arb: fc.Arbitrary<T>, n: number): fc.Arbitrary<T | undefined> =>
  fc.oneof({ weight: n, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: arb });

export const obj = (o: Record<string, unknown>): JsonObject => new JsonObject(Object.entries(o).filter(([, v]) => v !== undefined));

/** Numbers as JSON can write them but JSON.stringify does not. */
export const rawNumbers = [
  '1e400',
  '-1e400',
  '-0',
  '1.0',
  '1e0',
  '1E2',
  '0.0000001',
  '123456789012345678901234567890',
  '4294967297',
  '9007199254740993',
  '-1',
  '1.5',
].map((t) => new RawJson(t));

/** A value of some JSON type, to put where another type belongs. */
export const anyJson: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom<unknown>(null, true, false, 0, -1, 1.5, '', [], {}, [[]], { a: 1 }, '\u0000', 'null', 'true', '1') },
  { weight: 2, arbitrary: fc.constantFrom(...rawNumbers) },
  { weight: 2, arbitrary: fc.oneof(fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true }), fc.boolean()) },
  { weight: 2, arbitrary: fc.string({ maxLength: 20 }) },
  { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
);

/** Strings that trip parsers: escapes, controls, lone surrogates, RTL marks, long runs. */
export const nastyString: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(
    '',
    ' ',
    '\u0000',
    '\ud800',
    '\udfff',
    '\u202e',
    '\ufeff',
    'é',
    '\u{1f600}',
    '\\',
    '"',
    "'",
    '%00',
    '%',
    '../',
    '..\\',
    '\r\n',
    '<script>',
    // biome-ignore lint/suspicious/noTemplateCurlyInString: a literal ${x}, as a template injection probe sends it
    '${x}',
    '{{x}}',
    'null',
    'undefined',
    '__proto__',
    'constructor',
    'toString',
    'hasOwnProperty',
  ),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.string({ unit: 'grapheme', maxLength: 40 }),
  fc.tuple(fc.constantFrom('a', 'é', '\\', ',', '=', ' ', '\u0000', '%41'), fc.integer({ min: 60, max: 5000 })).map(([c, n]) => c.repeat(n)),
);

/** Random bytes, mostly short; sometimes exact digest lengths; rarely large (filled, not drawn byte by byte). */
export const bytes: fc.Arbitrary<Buffer> = fc.oneof(
  { weight: 6, arbitrary: fc.uint8Array({ maxLength: 80 }).map((b) => Buffer.from(b)) },
  {
    weight: 3,
    arbitrary: fc
      .tuple(fc.constantFrom(0, 1, 20, 31, 32, 33, 47, 48, 49, 63, 64, 65, 256, 257, 512), fc.integer({ min: 0, max: 255 }))
      .map(([n, f]) => Buffer.alloc(n, f)),
  },
  { weight: 1, arbitrary: fc.tuple(fc.integer({ min: 1000, max: 200_000 }), fc.integer({ min: 0, max: 255 })).map(([n, f]) => Buffer.alloc(n, f)) },
);

export const B64_VARIANTS = [
  'std',
  'url',
  'url-padded',
  'unpadded',
  'newlines',
  'spaces',
  'extra-padding',
  'mid-padding',
  'invalid-char',
  'data-uri',
  'percent',
] as const;
export type B64Variant = (typeof B64_VARIANTS)[number];

/** `bytes` as a base64 near miss; 'std' is the one the contract accepts. */
export function base64(bytes: Buffer, variant: B64Variant, at = 0): string {
  const std = bytes.toString('base64');
  const pos = std.length === 0 ? 0 : at % std.length;
  switch (variant) {
    case 'std':
      return std;
    case 'url':
      return bytes.toString('base64url');
    case 'url-padded':
      return std.replace(/\+/g, '-').replace(/\//g, '_');
    case 'unpadded':
      return std.replace(/=+$/, '');
    case 'newlines':
      return std.replace(/(.{4})/g, '$1\n');
    case 'spaces':
      return ` ${std} `;
    case 'extra-padding':
      return `${std}=`;
    case 'mid-padding':
      return `${std.slice(0, pos)}=${std.slice(pos)}`;
    case 'invalid-char':
      return `${std.slice(0, pos)}${'!*.-_~é\u0000'[at % 8]}${std.slice(pos + 1)}`;
    case 'data-uri':
      return `data:application/octet-stream;base64,${std}`;
    case 'percent':
      return encodeComponent(std);
  }
}

export const b64Variant = fc.constantFrom(...B64_VARIANTS);

/** Key names: the test token's, and ones that are wrong in every way the path allows. */
export const badKeyName: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(
    'nope',
    'a'.repeat(64),
    'a'.repeat(65),
    '..',
    '.',
    '-x',
    '_x',
    'ec/v1',
    'ec/v2',
    'EC',
    'ec ',
    ' ec',
    'ec\u0000',
    'clé',
    '%',
    '__proto__',
    'constructor',
    'toString',
    'ec.v1',
    'ec%2Fv1',
    '*',
    'ec\n',
  ),
  nastyString,
);

/** encodeURIComponent over the UTF-8 bytes, so a lone surrogate (which encodeURIComponent refuses) is sent as U+FFFD. */
export function encodeComponent(text: string): string {
  return [...Buffer.from(text, 'utf8')]
    .map((b) => (/[A-Za-z0-9\-_.!~*'()]/.test(String.fromCharCode(b)) ? String.fromCharCode(b) : `%${b.toString(16).padStart(2, '0').toUpperCase()}`))
    .join('');
}

export type SegmentEncoding = 'encode' | 'raw' | 'double' | 'all-percent' | 'overlong-dot' | 'lower-hex';

/**
 * Past Node's header limit (16 KiB with the request line) or with bytes outside printable ASCII in
 * the request line, Node's HTTP parser answers by itself (431, 400) before the app sees the request:
 * segments stay printable ASCII and under this length.
 */
export const MAX_SEGMENT = 1500;

/** A path segment for `text`, encoded so the request line stays printable ASCII (what the HTTP parser lets through). */
export function segment(text: string, enc: SegmentEncoding): string {
  return encodeSegment(text, enc).slice(0, MAX_SEGMENT);
}

function encodeSegment(text: string, enc: SegmentEncoding): string {
  const encoded = encodeComponent(text);
  switch (enc) {
    case 'encode':
      return encoded;
    case 'raw':
      return /^[\x21-\x7e]*$/.test(text) ? text.replace(/[?#]/g, encodeComponent) : encoded;
    case 'double':
      return encodeComponent(encoded);
    case 'all-percent':
      return [...Buffer.from(text, 'utf8')].map((b) => `%${b.toString(16).padStart(2, '0').toUpperCase()}`).join('');
    case 'overlong-dot':
      // A '.' (and '/') as overlong UTF-8, which a decoder must refuse.
      return encoded.replace(/\./g, '%C0%AE').replace(/%2F/gi, '%C0%AF');
    case 'lower-hex':
      return encoded.replace(/%[0-9A-F]{2}/g, (m) => m.toLowerCase());
  }
}

export const segmentEncoding = fc.constantFrom<SegmentEncoding>('encode', 'encode', 'encode', 'raw', 'double', 'all-percent', 'overlong-dot', 'lower-hex');

/** X-Deadline-Ms values: mostly generous, some tiny, some malformed. */
export const deadlineHeader: fc.Arbitrary<string | readonly string[]> = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: 1, max: 5000 }).map(String) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 20 }).map(String) },
  { weight: 3, arbitrary: fc.constantFrom('0', '-1', '1.5', ' 100', '100 ', '1e3', '0x10', '99999999999', '999999999', '', 'soon', '+5', '\u00b3', '1,2') },
  { weight: 1, arbitrary: fc.constant(['100', '200'] as const) },
);

/** X-Request-Id values: safe ones (echoed), and ones the service must replace. */
export const requestIdHeader: fc.Arbitrary<string | readonly string[]> = fc.oneof(
  { weight: 4, arbitrary: fc.stringMatching(/^[A-Za-z0-9._:-]{1,128}$/) },
  { weight: 2, arbitrary: fc.constantFrom('', ' ', 'a b', 'x'.repeat(128), 'x'.repeat(129), 'id\t1', '../../etc', '<id>', 'é', 'a,b', '%41') },
  { weight: 1, arbitrary: fc.constant(['one', 'two'] as const) },
);

/** The Content-Type values among contentTypeHeader's that the service reads as JSON. */
export const JSON_CONTENT_TYPES: readonly string[] = [
  'application/json',
  'APPLICATION/JSON',
  'application/json; charset=utf-8',
  'application/json;charset=UTF-8',
  'application/json; charset="utf-8"',
  'application/json; charset=utf-16le',
  'application/json; charset=latin1',
  'application/json; charset=utf-7',
  'application/json; charset=foo',
  'application/json; foo=bar',
];

export const contentTypeHeader: fc.Arbitrary<string | undefined> = fc.constantFrom(
  'application/json',
  'application/json',
  ...JSON_CONTENT_TYPES,
  'text/plain',
  'text/json',
  'application/x-www-form-urlencoded',
  'multipart/form-data; boundary=x',
  'application/vnd.api+json',
  'application/merge-patch+json',
  'application/*',
  '*/*',
  'application/json, text/plain',
  ';;;',
  '',
  undefined,
);

export const contentEncodingHeader: fc.Arbitrary<string | undefined> = fc.constantFrom(
  undefined,
  undefined,
  undefined,
  'identity',
  'gzip',
  'GZIP',
  'deflate',
  'br',
  'zstd',
  'x-unknown',
  'gzip, deflate',
  '',
);
