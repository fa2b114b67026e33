/**
 * A signing key that another tool put on the token in a form the service cannot serve must not be
 * a bare 404 nobody can explain: the key scan names it in the log, once, with the reason, and
 * serves every other key.
 */
import { createHash } from 'node:crypto';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import request from 'supertest';
import { addTokenObjects, admin } from '../support/adminCli.js';
import { createTestToken, startTestService } from '../support/testToken.js';

test('a signing key the service cannot serve is logged once with the reason; the others are served', { timeout: 60_000 }, async () => {
  const token = await createTestToken([{ name: 'good-ec', spec: 'ECC_NIST_P256' }]);
  try {
    // orphan-ec: an EC private key without its public-key object; k1-ec: a key on secp256k1.
    await addTokenObjects(token, { unservable: true });
    const lines: Record<string, unknown>[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
    const svc = await startTestService(token, {}, logger);
    try {
      const body = { algorithm: 'ECDSA_SHA_256', digest: createHash('sha256').update('x').digest('base64') };
      await request(svc.app).post('/v1/keys/good-ec/sign').send(body).expect(200);
      // A miss rescans the token (at most once a second). A key created meanwhile (by the admin CLI,
      // its own process) being served afterwards proves that the rescan ran, and that scan must not
      // report the unservable objects again.
      await request(svc.app).post('/v1/keys/orphan-ec/sign').send(body).expect(404);
      await admin(token, 'keys', 'create', '--name', 'late-ec', '--spec', 'ECC_NIST_P256');
      await new Promise((r) => setTimeout(r, 1100));
      await request(svc.app).get('/v1/keys/k1-ec').expect(404);
      const names = (await request(svc.app).get('/v1/keys').expect(200)).body.keys.map((k: { name: string }) => k.name);
      assert.deepEqual(names, ['good-ec', 'late-ec'], 'the rescan ran');

      const skipped = lines.filter((l) => l['msg'] === 'a signing key on the token is not served');
      assert.deepEqual(skipped.map((l) => l['label']).sort(), ['k1-ec', 'orphan-ec'], JSON.stringify(lines));
      const reason = (label: string): string => String(skipped.find((l) => l['label'] === label)?.['reason']);
      assert.match(reason('orphan-ec'), /no public-key object has its CKA_ID/);
      assert.match(reason('k1-ec'), /key size or curve is not one the service signs with/);
      assert.ok(!JSON.stringify(lines).includes(token.pin), 'no PIN in the log');
    } finally {
      await svc.close();
    }
  } finally {
    token.cleanup();
  }
});
