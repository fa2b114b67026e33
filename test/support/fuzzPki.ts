import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import fc from 'fast-check';
import { nastyString, rarely } from './fuzzArbitraries.js';

/**
 * CSRs and certificates for the PKI fuzz properties. fast-check draws a plain spec (so a failure
 * shrinks to a readable one); the property turns it into DER with WebCrypto software keys, with
 * valid signatures, so the service's checks past "does the signature verify" are reached too.
 */

x509.cryptoProvider.set(webcrypto as unknown as Crypto);
const subtle = webcrypto.subtle;

const KEY_ALGS = {
  p256: { name: 'ECDSA', namedCurve: 'P-256' },
  p384: { name: 'ECDSA', namedCurve: 'P-384' },
  p521: { name: 'ECDSA', namedCurve: 'P-521' },
  rsa2048: { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' },
  rsa1024: { name: 'RSASSA-PKCS1-v1_5', modulusLength: 1024, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' },
} as const;
export type SoftKeyName = keyof typeof KEY_ALGS;
const SOFT_KEYS = Object.keys(KEY_ALGS) as SoftKeyName[];

export interface SoftKeys {
  readonly pairs: Readonly<Record<SoftKeyName, CryptoKeyPair>>;
}

export async function makeSoftKeys(): Promise<SoftKeys> {
  const pairs = {} as Record<SoftKeyName, CryptoKeyPair>;
  for (const k of SOFT_KEYS) pairs[k] = (await subtle.generateKey(KEY_ALGS[k], false, ['sign', 'verify'])) as CryptoKeyPair;
  return { pairs };
}

const signingAlgorithm = (key: SoftKeyName, hash: string): Algorithm =>
  key.startsWith('rsa') ? { name: 'RSASSA-PKCS1-v1_5' } : ({ name: 'ECDSA', hash } as Algorithm);

// --- DER by hand, for extensions the library would refuse to write (the service must refuse them instead) ---

function derLength(n: number): number[] {
  if (n < 0x80) return [n];
  const out: number[] = [];
  for (let v = n; v > 0; v >>= 8) out.unshift(v & 0xff);
  return [0x80 | out.length, ...out];
}
/** An exact ArrayBuffer copy, as WebCrypto's types want. */
const ab = (b: Uint8Array): ArrayBuffer => new Uint8Array(b).buffer;
const tlv = (tag: number, value: Uint8Array): Buffer => Buffer.concat([Buffer.from([tag, ...derLength(value.length)]), value]);

/** A GeneralName as drawn: the type's context tag and its raw content bytes. */
export interface RawGeneralName {
  readonly tag: number;
  readonly content: Uint8Array;
}

const rawGeneralNames = (names: readonly RawGeneralName[]): Buffer => tlv(0x30, Buffer.concat(names.map((n) => tlv(n.tag, n.content))));

// --- PEM near misses ---

export const PEM_MUTATIONS = [
  'none',
  'crlf',
  'no-newlines',
  'leading-text',
  'trailing-text',
  'headers',
  'label',
  'two-blocks',
  'truncate-der',
  'flip-bit',
  'trailing-der-byte',
  'bad-base64',
  'end-mismatch',
  'no-end',
  'indent',
  'lowercase-label',
  'empty-body',
  'wrap-76',
] as const;
export type PemMutation = (typeof PEM_MUTATIONS)[number];
export const pemMutation = fc.oneof({ weight: 8, arbitrary: fc.constant<PemMutation>('none') }, { weight: 4, arbitrary: fc.constantFrom(...PEM_MUTATIONS) });

const pemParts = (pem: string): { label: string; der: Buffer } => {
  const m = /-----BEGIN ([A-Z ]+)-----([\s\S]*?)-----END/.exec(pem)!;
  return { label: m[1]!, der: Buffer.from(m[2]!.replace(/\s/g, ''), 'base64') };
};
const wrap = (label: string, der: Buffer, width = 64, eol = '\n'): string =>
  `-----BEGIN ${label}-----${eol}${der
    .toString('base64')
    .replace(new RegExp(`(.{${width}})`, 'g'), `$1${eol}`)
    .replace(new RegExp(`${eol}$`), '')}${eol}-----END ${label}-----${eol}`;

export function mutatePem(pem: string, m: PemMutation, at: number): string {
  const { label, der } = pemParts(pem);
  const i = der.length === 0 ? 0 : at % der.length;
  switch (m) {
    case 'none':
      return pem;
    case 'crlf':
      return wrap(label, der, 64, '\r\n');
    case 'no-newlines':
      return pem.replace(/\n/g, '');
    case 'leading-text':
      return `subject=CN = x\nissuer=CN = y\n${pem}`;
    case 'trailing-text':
      return `${pem}trailing text\n`;
    case 'headers':
      return pem.replace('-----\n', '-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\n');
    case 'label':
      return wrap(label === 'CERTIFICATE' ? 'CERTIFICATE REQUEST' : label === 'CERTIFICATE REQUEST' ? 'NEW CERTIFICATE REQUEST' : 'CERTIFICATE', der);
    case 'two-blocks':
      return pem + pem;
    case 'truncate-der':
      return wrap(label, der.subarray(0, i));
    case 'flip-bit': {
      const copy = Buffer.from(der);
      if (copy.length) copy[i]! ^= 1 << (at % 8);
      return wrap(label, copy);
    }
    case 'trailing-der-byte':
      return wrap(label, Buffer.concat([der, Buffer.from([at & 0xff])]));
    case 'bad-base64':
      return pem.replace(/\n[A-Za-z0-9+/]{4}/, '\n!*!*');
    case 'end-mismatch':
      return pem.replace(`-----END ${label}-----`, '-----END PRIVATE KEY-----');
    case 'no-end':
      return pem.slice(0, pem.indexOf('-----END'));
    case 'indent':
      return pem.replace(/\n/g, '\n  ');
    case 'lowercase-label':
      return pem.replace(/-----(BEGIN|END) ([A-Z ]+)-----/g, (_s, w: string, l: string) => `-----${w} ${l.toLowerCase()}-----`);
    case 'empty-body':
      return `-----BEGIN ${label}-----\n-----END ${label}-----\n`;
    case 'wrap-76':
      return wrap(label, der, 76);
  }
}

// --- Names ---

/** RDNs of (attribute type, value); types the service knows, in every spelling, and ones it does not. */
const ATTRIBUTE_OIDS = [
  '2.5.4.3',
  '2.5.4.10',
  '2.5.4.11',
  '2.5.4.6',
  '2.5.4.7',
  '2.5.4.8',
  '2.5.4.5',
  '0.9.2342.19200300.100.1.25',
  '1.2.840.113549.1.9.1',
  '0.9.2342.19200300.100.1.1',
  '1.2.3.4',
  '2.5.4.42',
];
const attrValue = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom('Fuzz', 'US', 'Example Inc', 'x', 'fuzz.example.com', 'a@example.com', 'é', 'ZZZ', 'u s') },
  { weight: 2, arbitrary: nastyString },
);
export const nameRdns = fc.array(fc.array(fc.tuple(fc.constantFrom(...ATTRIBUTE_OIDS), attrValue), { minLength: 1, maxLength: 2 }), {
  minLength: 0,
  maxLength: 4,
});
export type NameRdns = [string, string][][];

/** RFC 4514 strings for POST /csr's `subject`: near-valid ones built from parts, and raw junk. */
const DN_TYPES = [
  'CN',
  'O',
  'OU',
  'C',
  'L',
  'ST',
  'S',
  'serialNumber',
  'DC',
  'emailAddress',
  'E',
  'UID',
  'cn',
  'commonName',
  '2.5.4.3',
  '1.2.3.4',
  'X',
  '',
  ' CN',
  'CN ',
];
const DN_VALUES = [
  'Fuzz CA',
  'US',
  'us',
  'USA',
  'Example',
  'a\\,b',
  'a\\2Cb',
  'a\\ZZ',
  '\\#x',
  '#0403',
  'a"b',
  'a;b',
  'a<b',
  ' lead',
  'trail ',
  'a\\',
  'example',
  'a@b.example',
  'x+y',
  '\\e9',
  '\\c3\\a9',
  '\\ff',
  'é',
  '\u0000',
  '\ud800',
  'a'.repeat(65),
  'é'.repeat(64),
  'a'.repeat(300),
];
export const dnString: fc.Arbitrary<string> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc
      .array(fc.tuple(fc.constantFrom(...DN_TYPES), fc.oneof(fc.constantFrom(...DN_VALUES), nastyString), fc.constantFrom(',', ',', ',', '+', ', ', ';', '')), {
        minLength: 1,
        maxLength: 6,
      })
      .map((avas) => avas.map(([t, v, sep], i) => `${i ? sep : ''}${t}=${v}`).join('')),
  },
  { weight: 1, arbitrary: nastyString },
  { weight: 1, arbitrary: fc.integer({ min: 4000, max: 5000 }).map((n) => `CN=${'a'.repeat(n)}`) },
);

// --- Subject alternative names, as the API takes them ---

const IPV6_GROUP = fc.oneof(
  fc.constantFrom('0', '1', 'ffff', 'FFFF', '00000', 'g', '', '10000', '-1', 'db8'),
  fc.integer({ min: 0, max: 0xffff }).map((n) => n.toString(16)),
);
const ipv6ish = fc
  .tuple(fc.array(IPV6_GROUP, { maxLength: 10 }), fc.integer({ min: -1, max: 10 }), rarely(fc.constantFrom('1.2.3.4', '256.1.1.1', '1.2.3'), 2))
  .map(([groups, gap, v4]) => {
    const gs = [...groups];
    if (gap >= 0 && gap <= gs.length) gs.splice(gap, 0, '');
    let text = gs.join(':');
    if (gap === 0) text = `:${text}`;
    if (gap === groups.length) text = `${text}:`;
    return v4 ? `${text}:${v4}` : text;
  });
export const sanCandidates = {
  dns: fc.oneof(
    fc.constantFrom(
      'fuzz.example.com',
      '*.example.com',
      '*.com',
      '*',
      'a..b',
      '-a.com',
      'a-.com',
      'xn--bcher-kva.example',
      `${'a'.repeat(64)}.com`,
      `${'a.'.repeat(126)}com`,
      'a.123',
      '1.2.3.4',
      'é.com',
      'a b.com',
      '',
      'a.*.com',
      'A.EXAMPLE.COM',
      'a.example.com.',
    ),
    nastyString,
  ),
  ip: fc.oneof(
    fc.constantFrom(
      '192.0.2.1',
      '::1',
      '::ffff:1.2.3.4',
      '1.2.3.256',
      '01.2.3.4',
      '1.2.3',
      '::',
      'fe80::1%eth0',
      '1:2:3:4:5:6:7:8',
      '[::1]',
      ' 1.2.3.4',
      '0.0.0.0',
    ),
    ipv6ish,
    nastyString,
  ),
  email: fc.oneof(
    fc.constantFrom(
      'a@example.com',
      '@example.com',
      'a@',
      'a@b@example.com',
      '"a b"@example.com',
      'a..b@example.com',
      'é@example.com',
      `${'a'.repeat(65)}@example.com`,
      'a@-x.com',
    ),
    nastyString,
  ),
  uri: fc.oneof(
    fc.constantFrom(
      'https://example.com/x',
      'urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66',
      'spiffe://example.org/ns/x',
      'mailto:',
      'x:',
      'http://',
      'not a uri',
      'https://é.example',
      '//example.com',
      'h'.repeat(2049),
    ),
    nastyString,
  ),
};
export const sanInput: fc.Arbitrary<unknown> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record(
      {
        dns: fc.array(sanCandidates.dns, { maxLength: 3 }),
        ip: fc.array(sanCandidates.ip, { maxLength: 3 }),
        email: fc.array(sanCandidates.email, { maxLength: 2 }),
        uri: fc.array(sanCandidates.uri, { maxLength: 2 }),
      },
      { requiredKeys: [] },
    ),
  },
  {
    weight: 1,
    arbitrary: fc.constantFrom<unknown>(
      null,
      [],
      'x',
      1,
      { dns: 'x' },
      { dns: [1] },
      { dns: [null] },
      { upn: ['x'] },
      { dns: [] },
      {},
      { dns: ['a.example.com', 'A.example.com'] },
      { ip: ['::1', '0:0:0:0:0:0:0:1'] },
    ),
  },
  { weight: 1, arbitrary: fc.integer({ min: 99, max: 102 }).map((n) => ({ dns: Array.from({ length: n }, (_, i) => `h${i}.example.com`) })) },
);

// --- CSRs ---

export interface CsrSpec {
  readonly key: SoftKeyName;
  readonly hash: 'SHA-256' | 'SHA-384' | 'SHA-512';
  readonly subject: NameRdns;
  /** SANs written by the library (its JSON form). */
  readonly sans: readonly { type: 'dns' | 'ip' | 'email' | 'url' | 'guid' | 'upn' | 'id'; value: string }[];
  /** A subjectAltName extension written by hand (any tags, any bytes), instead of or beside the library's. */
  readonly rawSans?: readonly RawGeneralName[];
  /** Extensions the CSR asks for besides SANs. */
  readonly extras: readonly ('ca' | 'key-usage' | 'garbage-basic-constraints' | 'unknown-critical')[];
  readonly breakSignature: boolean;
  readonly pem: PemMutation;
  readonly at: number;
}

const rawGeneralName: fc.Arbitrary<RawGeneralName> = fc.record({
  tag: fc.constantFrom(0x81, 0x82, 0x86, 0x87, 0x88, 0xa0, 0xa4, 0x83, 0x82),
  content: fc.oneof(
    fc.uint8Array({ maxLength: 20 }),
    fc.constantFrom(
      ...['fuzz.example.com', 'a@example.com', 'https://x.example'].map((s) => new Uint8Array(Buffer.from(s))),
      new Uint8Array([192, 0, 2, 1]),
      new Uint8Array(16),
      new Uint8Array(5),
      new Uint8Array([0xff, 0xfe]),
    ),
  ),
});

export const csrSpec: fc.Arbitrary<CsrSpec> = fc.record({
  key: fc.oneof({ weight: 6, arbitrary: fc.constant<SoftKeyName>('p256') }, { weight: 3, arbitrary: fc.constantFrom(...SOFT_KEYS) }),
  hash: fc.constantFrom('SHA-256', 'SHA-384', 'SHA-512'),
  subject: fc.oneof({ weight: 3, arbitrary: fc.constant<NameRdns>([[['2.5.4.3', 'fuzz.example.com']]]) }, { weight: 2, arbitrary: nameRdns }),
  sans: fc.oneof(
    { weight: 3, arbitrary: fc.constant([{ type: 'dns' as const, value: 'fuzz.example.com' }]) },
    {
      weight: 2,
      arbitrary: fc.array(
        fc.oneof(
          sanCandidates.dns.map((value) => ({ type: 'dns' as const, value })),
          sanCandidates.email.map((value) => ({ type: 'email' as const, value })),
          sanCandidates.uri.map((value) => ({ type: 'url' as const, value })),
          fc.constantFrom('192.0.2.1', '::1', '2001:db8::1').map((value) => ({ type: 'ip' as const, value })),
          fc.constantFrom(
            { type: 'guid' as const, value: '{8ee13e53-2c1c-42bb-8df7-39927c0bdbb6}' },
            { type: 'upn' as const, value: 'user@example.com' },
            { type: 'id' as const, value: '1.2.3.4' },
          ),
        ),
        { maxLength: 3 },
      ),
    },
  ),
  rawSans: rarely(fc.array(rawGeneralName, { minLength: 1, maxLength: 3 }), 6),
  extras: fc.subarray(['ca', 'key-usage', 'garbage-basic-constraints', 'unknown-critical'] as const),
  breakSignature: fc.oneof({ weight: 9, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
  pem: pemMutation,
  at: fc.nat(),
});

const OID_SAN = '2.5.29.17';
const OID_BASIC_CONSTRAINTS = '2.5.29.19';

export async function makeCsr(keys: SoftKeys, spec: CsrSpec): Promise<string> {
  const extensions: x509.Extension[] = [];
  if (spec.sans.length) {
    try {
      extensions.push(new x509.SubjectAlternativeNameExtension(spec.sans.map((s) => ({ ...s }))));
    } catch {
      // The library would not write these names: write them by hand as dNSNames, for the service to judge.
      extensions.push(new x509.Extension(OID_SAN, false, ab(rawGeneralNames(spec.sans.map((s) => ({ tag: 0x82, content: Buffer.from(s.value, 'utf8') }))))));
    }
  }
  if (spec.rawSans) extensions.push(new x509.Extension(OID_SAN, false, ab(rawGeneralNames(spec.rawSans))));
  for (const e of spec.extras) {
    if (e === 'ca') extensions.push(new x509.BasicConstraintsExtension(true, 3, true));
    if (e === 'key-usage') extensions.push(new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true));
    if (e === 'garbage-basic-constraints') extensions.push(new x509.Extension(OID_BASIC_CONSTRAINTS, true, Buffer.from([0x30, 0x03, 0x01, 0x01])));
    if (e === 'unknown-critical') extensions.push(new x509.Extension('1.2.3.4.5', true, Buffer.from([0x05, 0x00])));
  }
  const name = spec.subject.map((rdn) => Object.fromEntries(rdn.map(([oid, v]) => [oid, [v]])));
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = await x509.Pkcs10CertificateRequestGenerator.create({
      name,
      keys: keys.pairs[spec.key],
      signingAlgorithm: signingAlgorithm(spec.key, spec.hash),
      extensions,
    });
  } catch {
    // A name the library will not encode: the request goes out with a plain one.
    csr = await x509.Pkcs10CertificateRequestGenerator.create({
      name: 'CN=fallback.example.com',
      keys: keys.pairs[spec.key],
      signingAlgorithm: signingAlgorithm(spec.key, spec.hash),
      extensions,
    });
  }
  const der = Buffer.from(csr.rawData);
  // The last byte is inside the signature: the DER still parses, the self-signature breaks.
  if (spec.breakSignature) der[der.length - 1]! ^= 0x01;
  return mutatePem(wrap('CERTIFICATE REQUEST', der), spec.pem, spec.at);
}

// --- Certificates to attach ---

/** The fixed parties of the attach property: roots in software, the HSM key's public key. */
export interface AttachParties {
  readonly root: { cert: x509.X509Certificate; keys: CryptoKeyPair };
  /** Same subject as root, another key: a chain to it does not verify. */
  readonly impostor: { cert: x509.X509Certificate; keys: CryptoKeyPair };
  /** A root whose pathLenConstraint 0 forbids the intermediate below it. */
  readonly pathLenZeroRoot: { cert: x509.X509Certificate; keys: CryptoKeyPair };
  /** A "root" without basicConstraints. */
  readonly notCaRoot: { cert: x509.X509Certificate; keys: CryptoKeyPair };
  /** The HSM key's SubjectPublicKeyInfo (DER). */
  readonly hsmSpki: Buffer;
  /** Another key's, for a certificate that does not match. */
  readonly otherSpki: Buffer;
  /** PEM of an unrelated chain (the openssl root that certified the issuing CA). */
  readonly unrelatedPem: string;
}

const DAY = 86_400_000;

async function selfSigned(name: string, ext: x509.Extension[], keys?: CryptoKeyPair): Promise<{ cert: x509.X509Certificate; keys: CryptoKeyPair }> {
  const k = keys ?? ((await subtle.generateKey(KEY_ALGS.p256, false, ['sign', 'verify'])) as CryptoKeyPair);
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name,
    keys: k,
    notBefore: new Date(now - DAY),
    notAfter: new Date(now + 3650 * DAY),
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as Algorithm,
    extensions: ext,
  });
  return { cert, keys: k };
}

export async function makeAttachParties(hsmPublicKeyPem: string, unrelatedPem: string): Promise<AttachParties> {
  const caExt = (pathLen?: number): x509.Extension[] => [
    new x509.BasicConstraintsExtension(true, pathLen, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
  ];
  const root = await selfSigned('CN=Fuzz Root,O=Example', caExt());
  const impostor = await selfSigned('CN=Fuzz Root,O=Example', caExt());
  const pathLenZeroRoot = await selfSigned('CN=Fuzz Root pathlen 0', caExt(0));
  const notCaRoot = await selfSigned('CN=Fuzz Not A CA', []);
  const other = (await subtle.generateKey(KEY_ALGS.p256, true, ['sign', 'verify'])) as CryptoKeyPair;
  const otherSpki = Buffer.from(await subtle.exportKey('spki', other.publicKey));
  const hsmSpki = Buffer.from(hsmPublicKeyPem.replace(/-----[A-Z ]+-----|\s/g, ''), 'base64');
  return { root, impostor, pathLenZeroRoot, notCaRoot, hsmSpki, otherSpki, unrelatedPem };
}

export const CHAINS = [
  'none',
  'empty',
  'blank',
  'root',
  'root-twice',
  'impostor',
  'path-len-zero',
  'not-ca',
  'self',
  'unrelated',
  'eleven',
  'garbage',
  'number',
] as const;
export type ChainChoice = (typeof CHAINS)[number];

export interface CertSpec {
  readonly subjectKey: 'hsm' | 'other';
  readonly issuer: 'root' | 'impostor' | 'path-len-zero' | 'not-ca';
  readonly subject: NameRdns;
  readonly notBeforeDays: number;
  readonly notAfterDays: number;
  readonly basicConstraints: 'ca' | 'ca-pathlen-0' | 'ca-pathlen-big' | 'not-ca' | 'absent' | 'malformed';
  readonly keyUsage: 'cert-sign' | 'no-cert-sign' | 'absent' | 'malformed';
  readonly ski: 'auto' | 'absent' | 'random' | 'malformed';
  readonly aki: 'auto' | 'absent' | 'wrong';
  readonly serial: string;
  readonly chain: ChainChoice;
  readonly pem: PemMutation;
  readonly at: number;
}

export const certSpec: fc.Arbitrary<CertSpec> = fc.record({
  subjectKey: fc.oneof({ weight: 8, arbitrary: fc.constant('hsm' as const) }, { weight: 1, arbitrary: fc.constant('other' as const) }),
  issuer: fc.oneof(
    { weight: 8, arbitrary: fc.constant('root' as const) },
    { weight: 2, arbitrary: fc.constantFrom('impostor' as const, 'path-len-zero' as const, 'not-ca' as const) },
  ),
  subject: fc.oneof({ weight: 3, arbitrary: fc.constant<NameRdns>([[['2.5.4.3', 'Fuzz Issuing CA']]]) }, { weight: 1, arbitrary: nameRdns }),
  notBeforeDays: fc.oneof({ weight: 8, arbitrary: fc.constant(-1) }, { weight: 2, arbitrary: fc.constantFrom(-20000, -400, 0, 1, 30, 20000) }),
  notAfterDays: fc.oneof({ weight: 8, arbitrary: fc.constant(365) }, { weight: 2, arbitrary: fc.constantFrom(-2, -1, 0, 1, 3649, 3651, 9000, 20000, 40000) }),
  basicConstraints: fc.oneof(
    { weight: 8, arbitrary: fc.constant('ca-pathlen-0' as const) },
    { weight: 3, arbitrary: fc.constantFrom('ca' as const, 'ca-pathlen-big' as const, 'not-ca' as const, 'absent' as const, 'malformed' as const) },
  ),
  keyUsage: fc.oneof(
    { weight: 8, arbitrary: fc.constant('cert-sign' as const) },
    { weight: 2, arbitrary: fc.constantFrom('no-cert-sign' as const, 'absent' as const, 'malformed' as const) },
  ),
  ski: fc.oneof(
    { weight: 8, arbitrary: fc.constant('auto' as const) },
    { weight: 2, arbitrary: fc.constantFrom('absent' as const, 'random' as const, 'malformed' as const) },
  ),
  aki: fc.oneof({ weight: 8, arbitrary: fc.constant('auto' as const) }, { weight: 2, arbitrary: fc.constantFrom('absent' as const, 'wrong' as const) }),
  serial: fc.oneof(
    { weight: 6, arbitrary: fc.stringMatching(/^[1-7][0-9a-f]{15}$/) },
    { weight: 1, arbitrary: fc.constantFrom('00', '01', 'ff', '80', '00ff', 'ffffffffffffffffffffffffffffffffffffffff') },
  ),
  chain: fc.oneof({ weight: 8, arbitrary: fc.constant<ChainChoice>('root') }, { weight: 4, arbitrary: fc.constantFrom(...CHAINS) }),
  pem: pemMutation,
  at: fc.nat(),
});

const withMember = (der: Buffer, tag: number): Buffer => tlv(0x30, Buffer.concat([der.subarray(2), Buffer.from([tag, 0x01, 0xff])]));

export async function makeCertificate(p: AttachParties, spec: CertSpec): Promise<{ certificatePem: string; chainPem: unknown }> {
  const issuer = { root: p.root, impostor: p.impostor, 'path-len-zero': p.pathLenZeroRoot, 'not-ca': p.notCaRoot }[spec.issuer];
  const spki = spec.subjectKey === 'hsm' ? p.hsmSpki : p.otherSpki;
  const publicKey = new x509.PublicKey(ab(spki));
  const ext: x509.Extension[] = [];
  const bc = {
    ca: () => new x509.BasicConstraintsExtension(true, undefined, true),
    'ca-pathlen-0': () => new x509.BasicConstraintsExtension(true, 0, true),
    'ca-pathlen-big': () => new x509.BasicConstraintsExtension(true, 2 ** 31 - 1, true),
    'not-ca': () => new x509.BasicConstraintsExtension(false, undefined, true),
    absent: () => undefined,
    malformed: () => new x509.Extension(OID_BASIC_CONSTRAINTS, true, ab(withMember(Buffer.from([0x30, 0x00]), 0x04))),
  }[spec.basicConstraints]();
  if (bc) ext.push(bc);
  if (spec.keyUsage === 'cert-sign') ext.push(new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true));
  if (spec.keyUsage === 'no-cert-sign') ext.push(new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true));
  if (spec.keyUsage === 'malformed') ext.push(new x509.Extension('2.5.29.15', true, Buffer.from([0x03, 0x05, 0x09, 0xff])));
  if (spec.ski === 'auto') ext.push(await x509.SubjectKeyIdentifierExtension.create(publicKey));
  if (spec.ski === 'random') ext.push(new x509.SubjectKeyIdentifierExtension((spec.at * 2654435761).toString(16).padStart(8, '0')));
  if (spec.ski === 'malformed') ext.push(new x509.Extension('2.5.29.14', false, Buffer.from([0x30, 0x01])));
  if (spec.aki === 'auto') ext.push(await x509.AuthorityKeyIdentifierExtension.create(issuer.cert.publicKey));
  if (spec.aki === 'wrong') ext.push(new x509.AuthorityKeyIdentifierExtension('0102030405'));
  const now = Date.now();
  const params = {
    serialNumber: spec.serial,
    issuer: issuer.cert.subject,
    publicKey,
    signingKey: issuer.keys.privateKey,
    notBefore: new Date(now + spec.notBeforeDays * DAY),
    notAfter: new Date(now + spec.notAfterDays * DAY),
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as Algorithm,
    extensions: ext,
  };
  const cert = await x509.X509CertificateGenerator.create({
    ...params,
    subject: spec.subject.length ? spec.subject.map((rdn) => Object.fromEntries(rdn.map(([oid, v]) => [oid, [v]]))) : 'CN=Fuzz Issuing CA',
  }).catch(() =>
    // A subject the library will not encode: the same certificate with a plain one.
    x509.X509CertificateGenerator.create({ ...params, subject: 'CN=Fuzz Issuing CA' }),
  );
  const certificatePem = mutatePem(`${cert.toString('pem')}\n`, spec.pem, spec.at);
  const rootPem = `${issuer.cert.toString('pem')}\n`;
  const chainPem = {
    none: undefined,
    empty: '',
    blank: ' \n\t',
    root: rootPem,
    'root-twice': rootPem + rootPem,
    impostor: `${p.impostor.cert.toString('pem')}\n`,
    'path-len-zero': `${p.pathLenZeroRoot.cert.toString('pem')}\n`,
    'not-ca': `${p.notCaRoot.cert.toString('pem')}\n`,
    self: certificatePem,
    unrelated: p.unrelatedPem,
    eleven: rootPem.repeat(11),
    garbage: '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n',
    number: 42,
  }[spec.chain];
  return { certificatePem, chainPem };
}
