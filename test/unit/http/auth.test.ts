import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { ConfigError } from '../../../src/config/config.js';
import { ClientRegistry, loadClients } from '../../../src/http/auth.js';

const dir = mkdtempSync(join(tmpdir(), 'clients-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const HASH = 'ab'.repeat(32);
const allow = [{ keys: '*', operations: ['read'] }];

function file(clients: unknown[]): string {
  const f = join(dir, `c${Math.random()}.json`);
  writeFileSync(f, JSON.stringify({ clients }));
  return f;
}

function refused(clients: unknown[], message: RegExp): void {
  assert.throws(
    () => loadClients(file(clients)),
    (e: Error) => {
      assert.ok(e instanceof ConfigError, String(e));
      assert.match(e.message, message);
      assert.ok(!e.message.includes(HASH), 'no token hash in the message');
      return true;
    },
  );
}

test('clients file: an entry names its client by token, certificate subject, certificate SAN, or token and certificate', () => {
  const clients = loadClients(
    file([
      { name: 'tok', tokenSha256: HASH, allow },
      { name: 'subj', certificate: { subject: 'cn=payments-api, o=Example' }, allow },
      { name: 'uri', certificate: { san: 'spiffe://example/payments-api' }, allow },
      { name: 'dns', certificate: { san: 'Worker.Example.com' }, allow },
      { name: 'both', tokenSha256: 'cd'.repeat(32), certificate: { subject: 'CN=both' }, allow },
    ]),
  );
  assert.deepEqual(
    clients.map((c) => [c.name, c.tokenHash !== undefined, c.certificate]),
    [
      ['tok', true, undefined],
      ['subj', false, { subject: 'CN=payments-api,O=Example' }],
      ['uri', false, { uri: 'spiffe://example/payments-api' }],
      ['dns', false, { dns: 'worker.example.com' }],
      ['both', true, { subject: 'CN=both' }],
    ],
  );
});

test('clients file: each problem is a ConfigError naming CLIENTS_FILE and the entry', () => {
  refused([{ name: 'none', allow }], /^CLIENTS_FILE: clients\.0: give tokenSha256, certificate or both$/);
  refused(
    [{ name: 'two', certificate: { subject: 'CN=a', san: 'a.example' }, allow }],
    /^CLIENTS_FILE: clients\.0\.certificate: give exactly one of subject and san$/,
  );
  refused([{ name: 'empty', certificate: {}, allow }], /^CLIENTS_FILE: clients\.0\.certificate: give exactly one of subject and san$/);
  refused([{ name: 'extra', certificate: { issuer: 'CN=x' }, allow }], /^CLIENTS_FILE: clients\.0\.certificate: .*issuer/);
  refused([{ name: 'bad-dn', certificate: { subject: 'CN=a,XX=b' }, allow }], /^CLIENTS_FILE: clients\.0\.certificate\.subject: unknown attribute type "XX"/);
  refused(
    [{ name: 'bad-dns', certificate: { san: 'not a name' }, allow }],
    /^CLIENTS_FILE: clients\.0\.certificate\.san: as a DNS name must be ASCII without spaces/,
  );
  refused([{ name: 'bad-uri', certificate: { san: 'http://[bad' }, allow }], /^CLIENTS_FILE: clients\.0\.certificate\.san: is neither a URI nor a DNS name$/);
  refused(
    [
      { name: 'a', tokenSha256: HASH, allow },
      { name: 'b', tokenSha256: HASH.toUpperCase(), allow },
    ],
    /^CLIENTS_FILE: clients\.1\.tokenSha256: the same as clients\.0's$/,
  );
  refused(
    [
      { name: 'a', certificate: { subject: 'CN=x,O=y' }, allow },
      { name: 'b', certificate: { subject: 'cn=x, o=y' }, allow },
    ],
    /^CLIENTS_FILE: clients\.1\.certificate: the same as clients\.0's$/,
  );
  // The per-client limit and the audit trail know a client by its name.
  refused(
    [
      { name: 'a', tokenSha256: HASH, allow },
      { name: 'a', certificate: { subject: 'CN=x,O=y' }, allow },
    ],
    /^CLIENTS_FILE: clients\.1\.name: the same as clients\.0's$/,
  );
  refused([{ name: 'short', tokenSha256: 'abc', allow }], /^CLIENTS_FILE: clients\.0\.tokenSha256: must be 64 hex characters$/);
  const broken = join(dir, 'broken.json');
  writeFileSync(broken, `{"clients": [{"name": "x", "tokenSha256": "${HASH}"`);
  assert.throws(
    () => loadClients(broken),
    (e: Error) => e instanceof ConfigError && e.message === 'CLIENTS_FILE: cannot read it as JSON (invalid JSON)',
  );
});

test('ClientRegistry.reload keeps the clients it had when the new file does not load', () => {
  const f = file([{ name: 'a', tokenSha256: HASH, allow }]);
  const registry = new ClientRegistry(f);
  writeFileSync(f, '{"clients": [');
  assert.throws(() => registry.reload(), /^ConfigError: CLIENTS_FILE: /);
  assert.equal(registry.size, 1);
  writeFileSync(
    f,
    JSON.stringify({
      clients: [
        { name: 'a', tokenSha256: HASH, allow },
        { name: 'b', certificate: { subject: 'CN=b' }, allow },
      ],
    }),
  );
  registry.reload();
  assert.equal(registry.size, 2);
});
