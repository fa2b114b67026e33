import { writeFileSync } from 'node:fs';
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { ConfigError } from '../../../src/config/config.js';
import { readTlsFiles } from '../../../src/config/tlsFiles.js';
import { opensslOk } from '../../unit/pki/openssl.js';
import { TestPki } from '../../support/tlsPki.js';

let pki: TestPki;
before(async () => {
  pki = await TestPki.create();
});
after(() => pki?.remove());

/** The base64 lines of a PEM: none may appear in an error. */
const bodyLines = (pem: string): string[] => pem.split('\n').filter((l) => l && !l.startsWith('-----'));

function refused(fn: () => unknown, variable: string, secret: string): void {
  assert.throws(fn, (e: Error) => {
    assert.ok(e instanceof ConfigError, String(e));
    assert.ok(e.message.startsWith(`${variable}: `), e.message);
    for (const l of bodyLines(secret)) assert.ok(!e.message.includes(l.slice(0, 16)), 'no key material in the message');
    return true;
  });
}

test('readTlsFiles: certificate, key and client CA, checked', () => {
  const m = readTlsFiles({ certFile: pki.server.certFile, keyFile: pki.server.keyFile, clientCaFile: pki.caFile });
  assert.equal(m.cert.toString(), pki.server.cert);
  assert.equal(m.key.toString(), pki.server.key);
  assert.equal(m.ca?.toString(), pki.ca);
  assert.equal(readTlsFiles({ certFile: pki.server.certFile, keyFile: pki.server.keyFile }).ca, undefined);
});

test('readTlsFiles: each problem names its variable, never the content', async () => {
  const { certFile, keyFile, key } = pki.server;
  const other = await pki.leaf('other', { subject: '/CN=other' });
  refused(() => readTlsFiles({ certFile: `${certFile}.missing`, keyFile }), 'TLS_CERT_FILE', key);
  refused(() => readTlsFiles({ certFile, keyFile: `${keyFile}.missing` }), 'TLS_KEY_FILE', key);
  // The key where the certificate belongs, and the other way round.
  refused(() => readTlsFiles({ certFile: keyFile, keyFile }), 'TLS_CERT_FILE', key);
  refused(() => readTlsFiles({ certFile, keyFile: certFile }), 'TLS_KEY_FILE', key);
  // A key of another certificate.
  refused(() => readTlsFiles({ certFile, keyFile: other.keyFile }), 'TLS_KEY_FILE', other.key);
  // An encrypted key (the service has no passphrase).
  await opensslOk(pki.dir.path, 'pkey', '-in', keyFile, '-aes256', '-passout', 'pass:secret-pass', '-out', 'encrypted.key');
  refused(() => readTlsFiles({ certFile, keyFile: pki.dir.file('encrypted.key') }), 'TLS_KEY_FILE', key);
  // A CA file with no certificate in it (node would silently trust nothing, or the default roots).
  writeFileSync(pki.dir.file('empty-ca.pem'), 'not a certificate\n');
  refused(() => readTlsFiles({ certFile, keyFile, clientCaFile: pki.dir.file('empty-ca.pem') }), 'TLS_CLIENT_CA_FILE', key);
  refused(() => readTlsFiles({ certFile, keyFile, clientCaFile: keyFile }), 'TLS_CLIENT_CA_FILE', key);
});
