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

test('server limits: documented defaults; out of range or a headers timeout above the request timeout names the variable', () => {
  assert.deepEqual(loadConfig({ ...base }).server, { headersTimeoutMs: 10_000, requestTimeoutMs: 30_000, maxHeaderBytes: 16_384, keepAliveTimeoutMs: 65_000, maxRequestsPerSocket: 0 });
  const c = loadConfig({ ...base, HEADERS_TIMEOUT_MS: '2000', REQUEST_TIMEOUT_MS: '3000', MAX_HEADER_BYTES: '4096', KEEP_ALIVE_TIMEOUT_MS: '5000', MAX_REQUESTS_PER_SOCKET: '100' });
  assert.deepEqual(c.server, { headersTimeoutMs: 2000, requestTimeoutMs: 3000, maxHeaderBytes: 4096, keepAliveTimeoutMs: 5000, maxRequestsPerSocket: 100 });
  const bad: Record<string, string>[] = [{ HEADERS_TIMEOUT_MS: '10' }, { REQUEST_TIMEOUT_MS: 'soon' }, { MAX_HEADER_BYTES: '100' }, { KEEP_ALIVE_TIMEOUT_MS: '0' }, { MAX_REQUESTS_PER_SOCKET: '-1' }];
  for (const env of bad) assert.throws(() => loadConfig({ ...base, ...env }), new RegExp(Object.keys(env)[0]!));
  assert.throws(() => loadConfig({ ...base, HEADERS_TIMEOUT_MS: '40000' }), /HEADERS_TIMEOUT_MS: must not exceed REQUEST_TIMEOUT_MS/);
});
