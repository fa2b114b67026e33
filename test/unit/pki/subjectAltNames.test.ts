import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AsnConvert } from '@peculiar/asn1-schema';
import { GeneralNames } from '@peculiar/asn1-x509';
import { ipAddressBytes, parseSubjectAltNames, subjectAltNamesInputOf } from '../../../src/pki/subjectAltNames.js';
import { rejectsWith } from './assertions.js';

test('valid names are normalized and encoded', () => {
  const sans = parseSubjectAltNames({
    dns: ['example.com', '*.Example.COM', 'localhost', 'xn--bcher-kva.example', 'a-b.c9.example'],
    ip: ['192.0.2.1', '2001:DB8::1', '::ffff:192.0.2.1', '::'],
    email: ['first.last+tag@Example.COM'],
    uri: ['https://example.com/path?q=1', 'spiffe://example.org/ns/prod/sa/web', 'urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66'],
  });
  assert.equal(sans.count, 13);
  assert.deepEqual(sans.dns, ['example.com', '*.example.com', 'localhost', 'xn--bcher-kva.example', 'a-b.c9.example']);
  assert.deepEqual(sans.ip, ['192.0.2.1', '2001:db8::1', '::ffff:c000:201', '::']);
  assert.deepEqual(sans.email, ['first.last+tag@example.com'], 'the domain part is lower-cased, the local part kept');
  assert.equal(sans.generalNames.length, 13);
  assert.equal(sans.generalNames[0]!.dNSName, 'example.com');
});

test('IP addresses encode as 4 or 16 octets', () => {
  const hex = (s: string): string | undefined => ipAddressBytes(s)?.toString('hex');
  assert.equal(hex('192.0.2.1'), 'c0000201');
  assert.equal(hex('::1'), '00000000000000000000000000000001');
  assert.equal(hex('2001:db8::8:800:200c:417a'), '20010db8000000000008080020 0c417a'.replace(' ', ''));
  assert.equal(hex('::ffff:1.2.3.4'), '00000000000000000000ffff01020304');
  assert.equal(hex('1:2:3:4:5:6:7.8.9.10'), '000100020003000400050006070809 0a'.replace(' ', ''));
  assert.equal(hex('fe80::1%eth0'), undefined, 'no zone ids');
  assert.equal(hex('10.0.0.0/8'), undefined);
  // The encoded GeneralName carries exactly those octets (the asn1 library's own IPv6 text
  // parser mishandles embedded IPv4, so the code hands it the expanded form).
  const sans = parseSubjectAltNames({ ip: ['::ffff:1.2.3.4', '192.0.2.1'] });
  const ders = [...sans.generalNames].map((g) => Buffer.from(AsnConvert.serialize(g)).toString('hex'));
  assert.deepEqual(ders, ['871000000000000000000000ffff01020304', '8704c0000201']);
});

test('malformed names are INVALID_ARGUMENT naming the exact element', async () => {
  const cases: Array<[unknown, RegExp]> = [
    [{ dns: ['ok.example', 'also.example', '-bad-.example'] }, /^subjectAltNames\.dns\[2\]: "-bad-\.example" has an invalid label/],
    [{ dns: ['a..example'] }, /^subjectAltNames\.dns\[0\]: .*empty label/],
    [{ dns: ['foo.*.example.com'] }, /^subjectAltNames\.dns\[0\]: .*wildcard/],
    [{ dns: ['f*o.example.com'] }, /^subjectAltNames\.dns\[0\]: .*wildcard/],
    [{ dns: ['*.com'] }, /^subjectAltNames\.dns\[0\]: .*two labels after a wildcard/],
    [{ dns: ['*'] }, /^subjectAltNames\.dns\[0\]: .*two labels after a wildcard/],
    [{ dns: ['example.com.'] }, /^subjectAltNames\.dns\[0\]: .*must not end with a dot/],
    [{ dns: ['exa mple.com'] }, /^subjectAltNames\.dns\[0\]: .*ASCII without spaces/],
    [{ dns: ['bücher.example'] }, /^subjectAltNames\.dns\[0\]: .*xn--/],
    [{ dns: [`${'a'.repeat(64)}.example`] }, /^subjectAltNames\.dns\[0\]: .*longer than 63/],
    [{ dns: [`${'a.'.repeat(127)}ab`] }, /^subjectAltNames\.dns\[0\]: .*longer than 253/],
    [{ dns: ['1.2.3.4'] }, /^subjectAltNames\.dns\[0\]: .*looks like an IP address/],
    [{ dns: [''] }, /^subjectAltNames\.dns\[0\]: .*must not be empty/],
    [{ dns: ['a.example', 'A.EXAMPLE'] }, /^subjectAltNames\.dns\[1\]: duplicate of subjectAltNames\.dns\[0\]/],
    [{ dns: [42] }, /^subjectAltNames\.dns\[0\]: must be a string/],
    [{ dns: 'example.com' }, /^subjectAltNames\.dns: must be an array/],
    [{ ip: ['999.1.1.1'] }, /^subjectAltNames\.ip\[0\]: "999\.1\.1\.1" is not an IPv4 or IPv6 address/],
    [{ ip: ['10.0.0.1', '1.2.3'] }, /^subjectAltNames\.ip\[1\]: /],
    [{ ip: ['01.2.3.4'] }, /^subjectAltNames\.ip\[0\]: /],
    [{ ip: ['fe80::1%eth0'] }, /^subjectAltNames\.ip\[0\]: /],
    [{ ip: ['10.0.0.0/8'] }, /^subjectAltNames\.ip\[0\]: /],
    [{ ip: ['::1', '0:0:0:0:0:0:0:1'] }, /^subjectAltNames\.ip\[1\]: duplicate/],
    [{ email: ['no-at'] }, /^subjectAltNames\.email\[0\]: "no-at" must be an address of the form local@domain/],
    [{ email: ['a@'] }, /^subjectAltNames\.email\[0\]: .*invalid domain/],
    [{ email: ['@example.com'] }, /^subjectAltNames\.email\[0\]: .*invalid local part/],
    [{ email: ['a b@example.com'] }, /^subjectAltNames\.email\[0\]: .*invalid local part/],
    [{ email: ['a..b@example.com'] }, /^subjectAltNames\.email\[0\]: .*invalid local part/],
    [{ email: ['a@-bad.example'] }, /^subjectAltNames\.email\[0\]: .*invalid domain/],
    [{ email: ['a@*.example.com'] }, /^subjectAltNames\.email\[0\]: .*invalid domain.*wildcard/],
    [{ email: ['ü@example.com'] }, /^subjectAltNames\.email\[0\]: /],
    [{ uri: ['not a uri'] }, /^subjectAltNames\.uri\[0\]: "not a uri" must be ASCII without spaces/],
    [{ uri: ['no-scheme'] }, /^subjectAltNames\.uri\[0\]: .*not an absolute URI/],
    [{ uri: ['/relative/path'] }, /^subjectAltNames\.uri\[0\]: .*not an absolute URI/],
    [{ uri: ['https://example.com/ü'] }, /^subjectAltNames\.uri\[0\]: .*ASCII/],
    [{ dns: ['a.example'], foo: ['x'] }, /^subjectAltNames\.foo: unknown key \(allowed: dns, ip, email, uri\)/],
    [{ ' ': {} }, /^subjectAltNames: unknown key " " \(allowed: dns, ip, email, uri\)/],
    [{ dns: Array.from({ length: 101 }, (_, i) => `h${i}.example`) }, /^subjectAltNames\.dns: more than 100 entries/],
    [['a.example'], /^subjectAltNames: must be an object/],
    [null, /^subjectAltNames: must be an object/],
    ['a.example', /^subjectAltNames: must be an object/],
  ];
  for (const [input, message] of cases) {
    await rejectsWith(() => parseSubjectAltNames(input), 'INVALID_ARGUMENT', message);
  }
  // 100 entries is fine.
  assert.equal(parseSubjectAltNames({ dns: Array.from({ length: 100 }, (_, i) => `h${i}.example`) }).count, 100);
  // The field prefix is the caller's.
  await rejectsWith(() => parseSubjectAltNames({ ip: ['x'] }, 'csrPem.subjectAltNames'), 'INVALID_ARGUMENT', /^csrPem\.subjectAltNames\.ip\[0\]: /);
});

test('GeneralNames from a CSR come back as input; other name types are refused', async () => {
  const sans = parseSubjectAltNames({ dns: ['a.example'], ip: ['2001:db8::1'], email: ['x@example.com'], uri: ['https://a.example/'] });
  // As a CSR's extension would be parsed.
  const parsed = AsnConvert.parse(AsnConvert.serialize(sans.generalNames), GeneralNames);
  const input = subjectAltNamesInputOf(parsed, 'csrPem');
  assert.deepEqual(input, { dns: ['a.example'], ip: ['2001:db8::1'], email: ['x@example.com'], uri: ['https://a.example/'] });
  await rejectsWith(
    () => subjectAltNamesInputOf([...sans.generalNames, { registeredID: '1.2.3' }], 'csrPem'),
    'INVALID_ARGUMENT',
    /^csrPem: subject alternative name 5 is of a type this CA does not issue/,
  );
});
