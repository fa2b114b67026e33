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
  const bad: Record<string, string>[] = [{ PORT: 'eighty' }, { PORT: '70000' }, { HSM_SESSIONS: '0' }, { REQUEST_DEADLINE_MS: '-1' }, { LOG_LEVEL: 'loud' }, { WORKERS: '1.5' }];
  for (const env of bad) {
    const name = Object.keys(env)[0]!;
    assert.throws(() => loadConfig({ ...base, ...env }), (e: Error) => e instanceof ConfigError && e.message.includes(name) && !e.message.includes('s3cret-pin'), name);
  }
  assert.throws(() => loadConfig({}), /HSM_PIN/);
});

test('HSM_PIN_FILE is read, trailing newline dropped; unreadable file names the variable', () => {
  const f = join(mkdtempSync(join(tmpdir(), 'cfg-')), 'pin');
  writeFileSync(f, 'user:password\n');
  assert.equal(loadConfig({ HSM_PIN_FILE: f }).hsm.pin, 'user:password');
  assert.throws(() => loadConfig({ HSM_PIN_FILE: `${f}.missing` }), /HSM_PIN_FILE/);
});

test('development mode refuses a non-loopback HOST; production does not', () => {
  assert.throws(() => loadConfig({ ...base, HOST: '0.0.0.0' }), /HOST/);
  assert.equal(loadConfig({ ...base, NODE_ENV: 'production' }).host, '0.0.0.0');
  assert.equal(loadConfig({ ...base, NODE_ENV: 'production' }).devMode, false);
});

test('threads never exceed sessions', () => {
  assert.equal(loadConfig({ ...base, HSM_SESSIONS: '2' }).hsm.threads, 2);
  assert.equal(loadConfig({ ...base, HSM_SESSIONS: '64', HSM_THREADS: '64' }).hsm.threads, 64);
});

test('AUDIT_LOG: off by default; a path or stdout; empty is refused by name', () => {
  assert.equal(loadConfig({ ...base }).auditLog, undefined);
  assert.equal(loadConfig({ ...base, AUDIT_LOG: '/var/log/hsm-signer/audit.log' }).auditLog, '/var/log/hsm-signer/audit.log');
  assert.equal(loadConfig({ ...base, AUDIT_LOG: 'stdout' }).auditLog, 'stdout');
  assert.throws(() => loadConfig({ ...base, AUDIT_LOG: '' }), (e: Error) => e instanceof ConfigError && e.message.includes('AUDIT_LOG'));
});

test('CLIENT_MAX_IN_FLIGHT: 64 by default, 0 = no limit, a bad value refused by name', () => {
  assert.equal(loadConfig({ ...base }).clientMaxInFlight, 64);
  assert.equal(loadConfig({ ...base, CLIENT_MAX_IN_FLIGHT: '0' }).clientMaxInFlight, 0);
  for (const v of ['-1', 'many', '1.5']) {
    assert.throws(() => loadConfig({ ...base, CLIENT_MAX_IN_FLIGHT: v }), (e: Error) => e instanceof ConfigError && e.message.includes('CLIENT_MAX_IN_FLIGHT') && !e.message.includes('s3cret-pin'), v);
  }
});
