import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError, loadConfig } from '../../../src/config/config.js';

const base = { HSM_PIN: 's3cret-pin' };

test('defaults: development mode on loopback, documented values', () => {
  const c = loadConfig({ ...base });
  assert.equal(c.devMode, true);
  assert.equal(c.host, '127.0.0.1');
  assert.equal(c.port, 8080);
  assert.equal(c.hsm.modulePath, '/usr/lib/softhsm/libsofthsm2.so');
  assert.equal(c.hsm.tokenLabel, 'hsm-signer');
  assert.equal(c.hsm.sessions, 16);
  assert.equal(c.hsm.threads, 4);
  assert.equal(c.requestDeadlineMs, 2000);
  assert.equal(c.bodyLimitBytes, 1024 * 1024);
});

test('a bad value fails at start with the variable name, never the PIN', () => {
  const bad: Record<string, string>[] = [
    { PORT: 'eighty' },
    { PORT: '70000' },
    { HSM_SESSIONS: '0' },
    { REQUEST_DEADLINE_MS: '-1' },
    { LOG_LEVEL: 'loud' },
    { WORKERS: '1.5' },
  ];
  for (const env of bad) {
    const name = Object.keys(env)[0]!;
    assert.throws(
      () => loadConfig({ ...base, ...env }),
      (e: Error) => e instanceof ConfigError && e.message.includes(name) && !e.message.includes('s3cret-pin'),
      name,
    );
  }
  assert.throws(() => loadConfig({}), /HSM_PIN/);
});

test('HSM_PIN_FILE is read, trailing newline dropped; unreadable file names the variable', () => {
  const f = join(mkdtempSync(join(tmpdir(), 'cfg-')), 'pin');
  writeFileSync(f, 'user:password\n');
  assert.equal(loadConfig({ HSM_PIN_FILE: f }).hsm.pin, 'user:password');
  assert.throws(() => loadConfig({ HSM_PIN_FILE: `${f}.missing` }), /HSM_PIN_FILE/);
});

test('development mode refuses a non-loopback HOST, and says so in one warning', () => {
  assert.throws(() => loadConfig({ ...base, HOST: '0.0.0.0' }), /HOST/);
  assert.deepEqual(loadConfig({ ...base }).warnings, [
    'development mode: no CLIENTS_FILE or TLS_CLIENT_CA_FILE, so no authentication; listening on loopback only',
  ]);
  assert.equal(loadConfig({ ...base, HOST: '0.0.0.0', ALLOW_REMOTE_DEV: 'true' }).host, '0.0.0.0');
});

test('production fails closed: no way to identify callers is a ConfigError naming both settings', () => {
  for (const env of [
    { NODE_ENV: 'production' },
    { NODE_ENV: 'production', HOST: '127.0.0.1' },
    { NODE_ENV: 'production', TLS_CERT_FILE: '/c.pem', TLS_KEY_FILE: '/k.pem' },
  ]) {
    assert.throws(
      () => loadConfig({ ...base, ...env }),
      (e: Error) => e instanceof ConfigError && /^CLIENTS_FILE: /.test(e.message) && e.message.includes('TLS_CLIENT_CA_FILE'),
    );
  }
  const c = loadConfig({ ...base, NODE_ENV: 'production', CLIENTS_FILE: '/clients.json', TLS_CERT_FILE: '/c.pem', TLS_KEY_FILE: '/k.pem' });
  assert.equal(c.devMode, false);
  assert.equal(c.host, '0.0.0.0');
  assert.deepEqual(c.tls, { certFile: '/c.pem', keyFile: '/k.pem' });
  assert.deepEqual(c.warnings, []);
  // Client certificates alone identify callers.
  const m = loadConfig({ ...base, NODE_ENV: 'production', TLS_CERT_FILE: '/c.pem', TLS_KEY_FILE: '/k.pem', TLS_CLIENT_CA_FILE: '/ca.pem' });
  assert.deepEqual(m.tls, { certFile: '/c.pem', keyFile: '/k.pem', clientCaFile: '/ca.pem' });
  assert.match(m.warnings.join(), /TLS_CLIENT_CA_FILE without CLIENTS_FILE/);
  // Outside production, a way to identify callers turns development mode off (and auth on).
  assert.equal(loadConfig({ ...base, CLIENTS_FILE: '/clients.json' }).devMode, false);
});

test('production on a non-loopback address needs TLS, unless ALLOW_PLAINTEXT=true (with one warning)', () => {
  const prod = { ...base, NODE_ENV: 'production', CLIENTS_FILE: '/clients.json' };
  for (const host of ['0.0.0.0', '::', '10.1.2.3', 'signer.internal']) {
    assert.throws(
      () => loadConfig({ ...prod, HOST: host }),
      (e: Error) => e instanceof ConfigError && /^TLS_CERT_FILE: /.test(e.message) && e.message.includes('ALLOW_PLAINTEXT'),
      host,
    );
  }
  assert.throws(() => loadConfig(prod), /TLS_CERT_FILE/, 'the default production HOST is 0.0.0.0');
  for (const host of ['127.0.0.1', '127.0.0.2', '::1', 'localhost']) assert.deepEqual(loadConfig({ ...prod, HOST: host }).warnings, [], host);
  const plain = loadConfig({ ...prod, ALLOW_PLAINTEXT: 'true' });
  assert.equal(plain.tls, undefined);
  assert.deepEqual(plain.warnings, ['ALLOW_PLAINTEXT=true: serving plain HTTP on a non-loopback address; TLS must be terminated in front of the service']);
  assert.throws(() => loadConfig({ ...prod, ALLOW_PLAINTEXT: 'yes' }), /ALLOW_PLAINTEXT/);
});

test('TLS settings come together: a certificate without its key, or a client CA without TLS, names what is missing', () => {
  assert.throws(() => loadConfig({ ...base, TLS_CERT_FILE: '/c.pem' }), /^ConfigError: TLS_KEY_FILE: /);
  assert.throws(() => loadConfig({ ...base, TLS_KEY_FILE: '/k.pem' }), /^ConfigError: TLS_CERT_FILE: /);
  assert.throws(() => loadConfig({ ...base, TLS_CLIENT_CA_FILE: '/ca.pem' }), /^ConfigError: TLS_CERT_FILE: /);
  assert.deepEqual(loadConfig({ ...base, TLS_CERT_FILE: '/c.pem', TLS_KEY_FILE: '/k.pem' }).tls, { certFile: '/c.pem', keyFile: '/k.pem' });
});

test('threads never exceed sessions', () => {
  assert.equal(loadConfig({ ...base, HSM_SESSIONS: '2' }).hsm.threads, 2);
  assert.equal(loadConfig({ ...base, HSM_SESSIONS: '64', HSM_THREADS: '64' }).hsm.threads, 64);
});

test('server limits: documented defaults; out of range or a headers timeout above the request timeout names the variable', () => {
  assert.deepEqual(loadConfig({ ...base }).server, {
    headersTimeoutMs: 10_000,
    requestTimeoutMs: 30_000,
    maxHeaderBytes: 16_384,
    keepAliveTimeoutMs: 65_000,
    maxRequestsPerSocket: 0,
  });
  const c = loadConfig({
    ...base,
    HEADERS_TIMEOUT_MS: '2000',
    REQUEST_TIMEOUT_MS: '3000',
    MAX_HEADER_BYTES: '4096',
    KEEP_ALIVE_TIMEOUT_MS: '5000',
    MAX_REQUESTS_PER_SOCKET: '100',
  });
  assert.deepEqual(c.server, { headersTimeoutMs: 2000, requestTimeoutMs: 3000, maxHeaderBytes: 4096, keepAliveTimeoutMs: 5000, maxRequestsPerSocket: 100 });
  const bad: Record<string, string>[] = [
    { HEADERS_TIMEOUT_MS: '10' },
    { REQUEST_TIMEOUT_MS: 'soon' },
    { MAX_HEADER_BYTES: '100' },
    { KEEP_ALIVE_TIMEOUT_MS: '0' },
    { MAX_REQUESTS_PER_SOCKET: '-1' },
  ];
  for (const env of bad) assert.throws(() => loadConfig({ ...base, ...env }), new RegExp(Object.keys(env)[0]!));
  assert.throws(() => loadConfig({ ...base, HEADERS_TIMEOUT_MS: '40000' }), /HEADERS_TIMEOUT_MS: must not exceed REQUEST_TIMEOUT_MS/);
});

test('AUDIT_LOG: off by default; a path or stdout; empty is refused by name', () => {
  assert.equal(loadConfig({ ...base }).auditLog, undefined);
  assert.equal(loadConfig({ ...base, AUDIT_LOG: '/var/log/hsm-signer/audit.log' }).auditLog, '/var/log/hsm-signer/audit.log');
  assert.equal(loadConfig({ ...base, AUDIT_LOG: 'stdout' }).auditLog, 'stdout');
  assert.throws(
    () => loadConfig({ ...base, AUDIT_LOG: '' }),
    (e: Error) => e instanceof ConfigError && e.message.includes('AUDIT_LOG'),
  );
});

test('CLIENT_MAX_IN_FLIGHT: 64 by default, 0 = no limit, a bad value refused by name', () => {
  assert.equal(loadConfig({ ...base }).clientMaxInFlight, 64);
  assert.equal(loadConfig({ ...base, CLIENT_MAX_IN_FLIGHT: '0' }).clientMaxInFlight, 0);
  for (const v of ['-1', 'many', '1.5']) {
    assert.throws(
      () => loadConfig({ ...base, CLIENT_MAX_IN_FLIGHT: v }),
      (e: Error) => e instanceof ConfigError && e.message.includes('CLIENT_MAX_IN_FLIGHT') && !e.message.includes('s3cret-pin'),
      v,
    );
  }
});

test('DRAIN_MS and LIVENESS_STALL_MS: documented defaults; out of range, or liveness not above the deadline, names the variable', () => {
  const c = loadConfig({ ...base });
  assert.equal(c.drainMs, 5000);
  assert.equal(c.livenessStallMs, 30_000);
  assert.equal(loadConfig({ ...base, DRAIN_MS: '0' }).drainMs, 0);
  assert.equal(loadConfig({ ...base, LIVENESS_STALL_MS: '2001' }).livenessStallMs, 2001);
  for (const env of [{ DRAIN_MS: '-1' }, { DRAIN_MS: 'soon' }, { DRAIN_MS: '600001' }, { LIVENESS_STALL_MS: '999' }, { LIVENESS_STALL_MS: '1.5' }]) {
    assert.throws(() => loadConfig({ ...base, ...env }), new RegExp(Object.keys(env)[0]!));
  }
  assert.throws(() => loadConfig({ ...base, LIVENESS_STALL_MS: '2000' }), /LIVENESS_STALL_MS: must be greater than REQUEST_DEADLINE_MS/);
  assert.equal(loadConfig({ ...base, REQUEST_DEADLINE_MS: '500', LIVENESS_STALL_MS: '1000' }).livenessStallMs, 1000);
});

test('ISSUANCE_DB: sqlite:<path> or a path (resolved), postgres URLs; a bad one names the variable, never the password', () => {
  assert.equal(loadConfig({ ...base }).inventory, undefined);
  assert.deepEqual(loadConfig({ ...base, ISSUANCE_DB: 'sqlite:/var/lib/hsm-signer/issuance.db' }).inventory, {
    kind: 'sqlite',
    path: '/var/lib/hsm-signer/issuance.db',
  });
  assert.deepEqual(loadConfig({ ...base, ISSUANCE_DB: 'data/issuance.db' }).inventory, { kind: 'sqlite', path: join(process.cwd(), 'data/issuance.db') });
  for (const url of ['postgres://signer:pa55word@db.internal:5432/issuance', 'postgresql://signer:pa55word@db.internal/issuance?sslmode=require']) {
    const t = loadConfig({ ...base, ISSUANCE_DB: url }).inventory;
    assert.equal(t?.kind, 'postgres');
    assert.ok(t?.kind === 'postgres' && t.url === url);
    assert.ok(t?.kind === 'postgres' && !t.redacted.includes('pa55word') && t.redacted.includes('db.internal'), t?.kind === 'postgres' ? t.redacted : '');
  }
  for (const bad of ['postgres://signer:pa55word@/', 'postgres://signer:pa55word@[bad', 'mysql://signer:pa55word@db/x', 'sqlite:']) {
    assert.throws(
      () => loadConfig({ ...base, ISSUANCE_DB: bad }),
      (e: Error) => e instanceof ConfigError && e.message.includes('ISSUANCE_DB') && !e.message.includes('pa55word'),
      bad,
    );
  }
});

test('ISSUANCE_DB_POOL_SIZE: PostgreSQL connections per worker (1 to 100); with SQLite it has no effect and says so', () => {
  const url = 'postgres://signer:pa55word@db.internal:5432/issuance';
  const pg = loadConfig({ ...base, ISSUANCE_DB: url }).inventory;
  assert.ok(pg?.kind === 'postgres' && pg.poolSize === undefined, "unset: the adapter's default");
  const sized = loadConfig({ ...base, ISSUANCE_DB: url, ISSUANCE_DB_POOL_SIZE: '12' });
  assert.ok(sized.inventory?.kind === 'postgres' && sized.inventory.poolSize === 12);
  assert.deepEqual(
    sized.warnings.filter((w) => w.includes('POOL')),
    [],
  );
  for (const bad of ['0', '101', 'four'])
    assert.throws(() => loadConfig({ ...base, ISSUANCE_DB: url, ISSUANCE_DB_POOL_SIZE: bad }), /ISSUANCE_DB_POOL_SIZE/, bad);
  const sqlite = loadConfig({ ...base, ISSUANCE_DB: 'sqlite:/var/lib/hsm-signer/issuance.db', ISSUANCE_DB_POOL_SIZE: '12' });
  assert.deepEqual(sqlite.inventory, { kind: 'sqlite', path: '/var/lib/hsm-signer/issuance.db' });
  assert.ok(
    sqlite.warnings.some((w) => /^ISSUANCE_DB_POOL_SIZE is set, but ISSUANCE_DB is not a PostgreSQL URL/.test(w)),
    JSON.stringify(sqlite.warnings),
  );
});

test('ISSUANCE_DB_FILE: the connection string from a file (a mounted secret); errors name the variable, never the content', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hsm-signer-config-'));
  const file = (name: string, content: string): string => {
    const path = join(dir, name);
    writeFileSync(path, content, { mode: 0o600 });
    return path;
  };
  const url = 'postgres://signer:pa55word@db.internal:5432/issuance';
  const t = loadConfig({ ...base, ISSUANCE_DB_FILE: file('url', `${url}\n`) }).inventory;
  assert.ok(t?.kind === 'postgres' && t.url === url && !t.redacted.includes('pa55word'), JSON.stringify(t?.kind));
  assert.deepEqual(loadConfig({ ...base, ISSUANCE_DB_FILE: file('sqlite', 'sqlite:/var/lib/hsm-signer/issuance.db') }).inventory, {
    kind: 'sqlite',
    path: '/var/lib/hsm-signer/issuance.db',
  });
  const refused: [Record<string, string>, RegExp][] = [
    [{ ISSUANCE_DB_FILE: join(dir, 'missing') }, /^ISSUANCE_DB_FILE: cannot read the file \(ENOENT\)$/],
    [{ ISSUANCE_DB_FILE: file('empty', '\n') }, /^ISSUANCE_DB_FILE: the file is empty$/],
    [{ ISSUANCE_DB_FILE: file('bad', 'postgres://signer:pa55word@/\n') }, /^ISSUANCE_DB_FILE: not a valid postgres:\/\/ URL/],
    [{ ISSUANCE_DB_FILE: file('other', 'mysql://signer:pa55word@db/x') }, /^ISSUANCE_DB_FILE: must be postgres/],
    [{ ISSUANCE_DB_FILE: file('both', url), ISSUANCE_DB: url }, /^ISSUANCE_DB_FILE: set ISSUANCE_DB or ISSUANCE_DB_FILE, not both$/],
  ];
  for (const [env, expected] of refused) {
    assert.throws(
      () => loadConfig({ ...base, ...env }),
      (e: Error) => e instanceof ConfigError && expected.test(e.message) && !e.message.includes('pa55word'),
      JSON.stringify(Object.keys(env)),
    );
  }
});
