/**
 * Other processes write to the token while the service reads it: the key-manager CLI creating
 * and rotating keys, other instances storing certificates. SoftHSMv2 writes a new object in
 * steps that another process can see half done (src/hsm/pkcs11/tokenObjects.ts says how), and
 * reading one crashed the service process inside pkcs11js. Here the service's own key scan runs
 * back to back, the key-manager CLI lists the keys, and callers sign, while two processes
 * generate key pairs on the same token.
 */
import { createHash, createPublicKey, verify } from 'node:crypto';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import request from 'supertest';
import { P11 } from '../../src/hsm/pkcs11/constants.js';
import { ThreadedPkcs11 } from '../../src/hsm/pkcs11/ThreadedPkcs11.js';
import { readPublicKeys } from '../../src/hsm/pkcs11/keyObjects.js';
import { tokenObjects } from '../../src/hsm/pkcs11/tokenObjects.js';
import { addTokenObjects, runAdmin } from '../support/adminCli.js';
import { createTestToken, startTestService } from '../support/testToken.js';

test('the key scan and signing go on while two other processes generate keys on the token', { timeout: 180_000 }, async () => {
  const token = await createTestToken([{ name: 'steady', spec: 'ECC_NIST_P256' }]);
  const svc = await startTestService(token);
  try {
    const message = Buffer.from('steady');
    const body = { algorithm: 'ECDSA_SHA_256', digest: createHash('sha256').update(message).digest('base64') };
    const publicKey = createPublicKey((await request(svc.app).get('/v1/keys/steady').expect(200)).body.versions[0].publicKeyPem);
    let writing = true;
    let scans = 0;
    let failedScans = 0;
    const statuses = new Map<number, number>();
    const signer = async (): Promise<void> => {
      while (writing) {
        const r = await request(svc.app).post('/v1/keys/steady/sign').send(body);
        statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
        if (r.status === 200) assert.ok(verify('sha256', message, publicKey, Buffer.from(r.body.signature, 'base64')), 'a signature that verifies');
      }
    };
    const scanner = async (): Promise<void> => {
      while (writing) {
        // A scan that meets an object SoftHSMv2 is rewriting may fail with an HSM error (the next one
        // reads it whole); what must not happen is a crash.
        await svc.keyManager.keys.refresh().then(
          () => scans++,
          () => failedScans++,
        );
      }
    };
    // The key-manager CLI lists the keys (its own scan, in its own process) while the others write.
    const listings: { code: number; signal?: string }[] = [];
    const lister = async (): Promise<void> => {
      while (writing) {
        const r = await runAdmin(token, ['keys', 'list']);
        listings.push({ code: r.code, ...(r.signal ? { signal: r.signal } : {}) });
      }
    };
    const readers = [scanner(), lister(), ...Array.from({ length: 4 }, signer)];
    for (let round = 0; round < 2; round++) await Promise.all([addTokenObjects(token, { ecPairs: 30 }), addTokenObjects(token, { ecPairs: 30 })]);
    writing = false;
    await Promise.all(readers);

    assert.ok(scans > 10 && scans > failedScans, `${scans} scans, ${failedScans} failed`);
    // A listing that meets an object being rewritten may exit 1 with the HSM's error; none may crash.
    assert.ok(listings.length > 0 && listings.every((l) => l.signal === undefined) && listings.some((l) => l.code === 0), JSON.stringify(listings));
    // Every answer is a good signature; a shared machine's stall may turn one into an honest 504, never a 500.
    assert.deepEqual(
      [...statuses.keys()].filter((s) => s !== 200 && s !== 504),
      [],
      JSON.stringify([...statuses]),
    );
    assert.ok((statuses.get(200) ?? 0) > 0);
    // The scan serves what the writers made once they are done.
    await svc.keyManager.keys.refresh();
    const names = (await request(svc.app).get('/v1/keys').expect(200)).body.keys.map((k: { name: string }) => k.name);
    assert.ok(names.includes('decoy-0') && names.includes('decoy-29'), JSON.stringify(names.slice(0, 5)));
  } finally {
    await svc.close();
    token.cleanup();
  }
});

test('the key scans read no key pair another process is still writing', { timeout: 180_000 }, async () => {
  // The reads the service's key scan and the admin's listing make (private keys, then the public
  // keys of those found), back to back on two HSM threads, with no HTTP in between. Before the
  // templates asked for CKA_TOKEN, this crashed the process within a round of the writers; so
  // did reading every public key's CKA_EC_POINT, which SoftHSMv2 writes after the public key can
  // be found (tokenObjects.ts).
  const token = await createTestToken();
  const p11 = await ThreadedPkcs11.start(token.modulePath, 2);
  try {
    const connected = await p11.connect({ tokenLabel: token.label, pin: token.pin, flags: P11.CKF_SERIAL_SESSION, sessions: 2, finalizeFirst: false });
    assert.ok('sessions' in connected);
    let writing = true;
    let reads = 0;
    let failed = 0;
    const reader = async (session: Buffer): Promise<void> => {
      while (writing) {
        try {
          const [privates = [], certificates = []] = await p11.findAndRead(session, [
            { template: tokenObjects(P11.CKO_PRIVATE_KEY), types: [P11.CKA_LABEL, P11.CKA_ID, P11.CKA_KEY_TYPE] },
            { template: tokenObjects(P11.CKO_CERTIFICATE), types: [P11.CKA_ID] },
          ]);
          const publics = await readPublicKeys(p11, session, privates);
          reads += privates.length + certificates.length + [...publics.values()].filter((r) => r.pub ?? r.own).length;
        } catch {
          // An object SoftHSMv2 is rewriting can answer CKR_OBJECT_HANDLE_INVALID: an error, which the scan survives.
          failed++;
        }
        await new Promise(setImmediate);
      }
    };
    const readers = connected.sessions.map(reader);
    for (let round = 0; round < 2; round++) await Promise.all([addTokenObjects(token, { ecPairs: 30 }), addTokenObjects(token, { ecPairs: 30 })]);
    writing = false;
    await Promise.all(readers);
    assert.ok(reads > 1000, `${reads} objects read, ${failed} reads failed`);
  } finally {
    await p11.close();
    token.cleanup();
  }
});
