import { Writable } from 'node:stream';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createLogger } from '../../src/logger.js';

test('the logger redacts authorization headers and PIN-like fields wherever they are passed', () => {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString());
      cb();
    },
  });
  const log = createLogger('info', sink);
  const secrets = ['Bearer tok-A', 'Bearer tok-B', 'Bearer tok-C', 'pin-1', 'pin-2', 'pin-3', 'pin-4', 'pin-5', 'admin-pin', 'tok-D', 'pw'];
  log.info({ req: { method: 'POST', headers: { authorization: secrets[0], 'x-request-id': 'r1' } } }, 'request');
  log.info({ headers: { authorization: secrets[1] } }, 'headers');
  log.info({ authorization: secrets[2] }, 'header');
  log.info({ pin: secrets[3] }, 'pin');
  log.info({ hsm: { pin: secrets[4], tokenLabel: 'hsm-signer' } }, 'hsm');
  log.info({ config: { hsm: { pin: secrets[5] } } }, 'config');
  log.info({ HSM_PIN: secrets[6] }, 'env var');
  log.info({ env: { HSM_PIN: secrets[7], HSM_ADMIN_PIN: secrets[8] } }, 'env');
  log.info({ client: { token: secrets[9], password: secrets[10] } }, 'client');
  assert.equal(lines.length, 9);
  const all = lines.join('');
  for (const s of secrets) assert.ok(!all.includes(s), `${s} is redacted`);
  assert.equal((all.match(/\[redacted\]/g) ?? []).length, secrets.length);
  assert.match(all, /"x-request-id":"r1"/, 'the rest is kept');
  assert.match(all, /"tokenLabel":"hsm-signer"/);
});
