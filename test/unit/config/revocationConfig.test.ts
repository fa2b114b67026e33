import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError, loadConfig } from '../../../src/config/config.js';
import { revocationUrls } from '../../../src/service/PkiService.js';

const base = { HSM_PIN: 's3cret-pin' };

test('CRL_VALIDITY_HOURS (default 24), CRL_URL_BASE and OCSP_URL_BASE', () => {
  assert.deepEqual(loadConfig(base).revocation, { crlValidityHours: 24 });
  const c = loadConfig({ ...base, CRL_VALIDITY_HOURS: '6', CRL_URL_BASE: 'https://pki.example.com/ca/', OCSP_URL_BASE: 'http://ocsp.example.com' });
  assert.deepEqual(c.revocation, { crlValidityHours: 6, crlUrlBase: 'https://pki.example.com/ca/', ocspUrlBase: 'http://ocsp.example.com' });
  assert.deepEqual(revocationUrls('issuing-ca', 2, c.revocation), {
    crlUrl: 'https://pki.example.com/ca/v1/keys/issuing-ca/crl?keyVersion=2',
    ocspUrl: 'http://ocsp.example.com/ocsp/issuing-ca',
  });
  for (const [name, value] of [
    ['CRL_VALIDITY_HOURS', '0'],
    ['CRL_VALIDITY_HOURS', 'a day'],
    ['CRL_URL_BASE', 'ftp://pki.example.com'],
    ['CRL_URL_BASE', 'not a url'],
    ['OCSP_URL_BASE', 'https://user:pw@ocsp.example.com'],
    ['OCSP_URL_BASE', 'https://ocsp.example.com/?x=1'],
  ] as const) {
    assert.throws(
      () => loadConfig({ ...base, [name]: value }),
      (e: Error) => e instanceof ConfigError && e.message.includes(name) && !e.message.includes('pw@'),
      `${name}=${value}`,
    );
  }
});
