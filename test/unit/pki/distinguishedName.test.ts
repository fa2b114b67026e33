import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AsnConvert } from '@peculiar/asn1-schema';
import { AttributeTypeAndValue, AttributeValue, Name, RelativeDistinguishedName } from '@peculiar/asn1-x509';
import { formatDistinguishedName, parseDistinguishedName } from '../../../src/pki/distinguishedName.js';
import { createCsr } from '../../../src/pki/createCsr.js';
import { RawName } from '../../../src/pki/der.js';
import { rejectsWith } from './assertions.js';
import { createSoftwareSigner } from './softwareSigner.js';
import { TempDir, opensslOk } from './openssl.js';

const CN = '2.5.4.3';
const O = '2.5.4.10';
const C = '2.5.4.6';

test('parses RFC 4514 order: the last RDN of the string is the first of the sequence', () => {
  const name = parseDistinguishedName('CN=Issuing CA 2027,O=Example,C=US');
  assert.deepEqual(
    [...name].map((rdn) => [...rdn].map((a) => a.type)),
    [[C], [O], [CN]],
  );
  assert.equal(name[0]![0]!.value.printableString, 'US');
  assert.equal(name[1]![0]!.value.utf8String, 'Example');
  assert.equal(name[2]![0]!.value.utf8String, 'Issuing CA 2027');
  assert.equal(formatDistinguishedName(name), 'CN=Issuing CA 2027,O=Example,C=US');
});

test('escapes, hex escapes and surrounding spaces', () => {
  const name = parseDistinguishedName(String.raw`cn=Smith\, John , o=A\+B\"C\\D\3bx,ou=\#hash,L=Caf\C3\A9 ,ST=\ lead and trail\ ,c=de`);
  const byType = new Map(name.flatMap((rdn) => rdn.map((a) => [a.type, a.value.toString()] as const)));
  assert.equal(byType.get(CN), 'Smith, John');
  assert.equal(byType.get(O), 'A+B"C\\D;x');
  assert.equal(byType.get('2.5.4.11'), '#hash');
  assert.equal(byType.get('2.5.4.7'), 'Café');
  assert.equal(byType.get('2.5.4.8'), ' lead and trail ');
  assert.equal(byType.get(C), 'DE', 'country codes are upper-cased');
  const text = formatDistinguishedName(name);
  assert.equal(text, String.raw`CN=Smith\, John,O=A\+B\"C\\D\;x,OU=\#hash,L=Café,ST=\ lead and trail\ ,C=DE`);
  assert.deepEqual(Buffer.from(AsnConvert.serialize(parseDistinguishedName(text))), Buffer.from(AsnConvert.serialize(name)), 'format then parse round-trips');
});

test('multi-valued RDNs are DER-sorted SETs; other supported types and their string types', () => {
  const name = parseDistinguishedName(
    'UID=jsmith+CN=John Smith,OU=R&D,O=Example,DC=example,DC=com,emailAddress=admin@example.com,serialNumber=A-1234,E=x@example.com',
  );
  // E and emailAddress are the same type: separate RDNs are fine.
  const first = name[name.length - 1]!;
  assert.equal(first.length, 2);
  const ders = first.map((a) => Buffer.from(AsnConvert.serialize(a)));
  assert.ok(Buffer.compare(ders[0]!, ders[1]!) < 0, 'SET OF members in DER order');
  const email = name.find((rdn) => rdn[0]!.type === '1.2.840.113549.1.9.1')![0]!;
  assert.equal(email.value.ia5String, 'x@example.com');
  const dc = name.find((rdn) => rdn[0]!.type === '0.9.2342.19200300.100.1.25')![0]!;
  assert.equal(dc.value.ia5String, 'com');
  const serial = name.find((rdn) => rdn[0]!.type === '2.5.4.5')![0]!;
  assert.equal(serial.value.printableString, 'A-1234');
  assert.equal(
    formatDistinguishedName(name),
    'CN=John Smith+UID=jsmith,OU=R&D,O=Example,DC=example,DC=com,emailAddress=admin@example.com,serialNumber=A-1234,emailAddress=x@example.com',
  );
  // Numeric OIDs of supported types are accepted.
  assert.equal(formatDistinguishedName(parseDistinguishedName('2.5.4.3=by oid')), 'CN=by oid');
});

test('formats unknown types and non-string values as #hex (RFC 4514 §2.4)', () => {
  const name = new Name([new RelativeDistinguishedName([new AttributeTypeAndValue({ type: '1.2.3.4', value: new AttributeValue({ utf8String: 'x' }) })])]);
  assert.equal(formatDistinguishedName(name), '1.2.3.4=#0c0178');
});

test('bad subjects are INVALID_ARGUMENT naming the field', async () => {
  const cases: Array<[unknown, RegExp]> = [
    ['XX=foo', /^subject: unknown attribute type "XX"/],
    ['CN=a,Title=b', /^subject: unknown attribute type "Title"/],
    ['C=USA', /^subject: C .*longer than 2/],
    ['C=U1', /^subject: C .*two-letter country code/],
    ['CN=', /^subject: CN .*must not be empty/],
    ['CN=a,', /^subject: .*expected TYPE=value/],
    ['CN', /^subject: expected TYPE=value/],
    ['=a', /^subject: missing attribute type/],
    [String.raw`CN=a\zz`, /^subject: invalid escape/],
    [String.raw`CN=\C3`, /^subject: escaped bytes are not valid UTF-8/],
    ['CN=#0403', /^subject: hex-encoded/],
    ['CN=a;b', /^subject: unescaped ;/],
    ['CN=a<b', /^subject: unescaped </],
    ['CN=a+CN=b', /^subject: CN .*twice/],
    [`CN=${'x'.repeat(65)}`, /^subject: CN .*longer than 64/],
    ['serialNumber=a_b', /^subject: serialNumber .*PrintableString/],
    ['emailAddress=ü@example.com', /^subject: emailAddress .*ASCII/],
    ['CN=a\u0001b', /^subject: CN .*control character/],
    ['', /^subject: must not be empty/],
    ['   ', /^subject: must not be empty/],
    [42, /^subject: must be a string/],
  ];
  for (const [input, message] of cases) {
    await rejectsWith(() => parseDistinguishedName(input), 'INVALID_ARGUMENT', message);
  }
  await rejectsWith(() => parseDistinguishedName('XX=foo', 'issuer.subject'), 'INVALID_ARGUMENT', /^issuer\.subject: /);
});

test('RawName re-encodes its exact DER, even when it is not what the library would produce', () => {
  // A TeletexString value and an unsorted multi-valued RDN: a parse/serialize round trip may
  // normalize these; a RawName must not.
  const odd = new Name([
    new RelativeDistinguishedName([
      new AttributeTypeAndValue({ type: CN, value: new AttributeValue({ utf8String: 'zzz' }) }),
      new AttributeTypeAndValue({ type: O, value: new AttributeValue({ teletexString: 'aaa' }) }),
    ]),
  ]);
  const der = Buffer.from(AsnConvert.serialize(odd));
  const raw = new RawName(der);
  assert.deepEqual(Buffer.from(AsnConvert.serialize(raw)), der);
  assert.equal(raw.length, 1, 'the parsed RDNs are readable too');
});

test('openssl reads the names we encode as we format them', async () => {
  const signer = await createSoftwareSigner('ECC_NIST_P256');
  const dir = await TempDir.create();
  try {
    const subject = String.raw`CN=Smith\, John+UID=jsmith,OU=R\+D,O=Example \"Corp\",L=Zürich,ST=ZH,C=CH,DC=example,DC=com,emailAddress=admin@example.com,serialNumber=1234`;
    await dir.write('csr.pem', await createCsr(signer, { subject }));
    const out = await opensslOk(dir.path, 'req', '-in', 'csr.pem', '-noout', '-subject', '-nameopt', 'RFC2253,-esc_msb');
    // openssl lists the members of a multi-valued RDN in reverse; their order carries no meaning.
    const normalize = (dn: string): string =>
      dn
        .split(/(?<!\\),/)
        .map((rdn) =>
          rdn
            .split(/(?<!\\)\+/)
            .sort()
            .join('+'),
        )
        .join(',');
    assert.equal(normalize(out.trim().replace(/^subject=/, '')), `${normalize(formatDistinguishedName(parseDistinguishedName(subject)))}`);
    assert.match(out, /UID=jsmith\+CN=Smith\\, John|CN=Smith\\, John\+UID=jsmith/);
  } finally {
    await dir.remove();
    await signer.close();
  }
});
