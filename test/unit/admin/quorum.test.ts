import { generateKeyPairSync, sign } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { ApprovalState, approve, canonical, checkApprovals, loadApprovers, newRequest, QuorumError, readRequest } from '../../../src/admin/quorum.js';

/** The pure parts of quorum approval, with real keys from node:crypto (the CLI flow: test/integration/quorum.test.ts). */
const dir = mkdtempSync(join(tmpdir(), 'quorum-unit-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const file = (name: string, content: string): string => {
  writeFileSync(join(dir, name), content);
  return join(dir, name);
};
const pem = (k: ReturnType<typeof generateKeyPairSync>['publicKey']): string => k.export({ type: 'spki', format: 'pem' }).toString();
const ed = () => generateKeyPairSync('ed25519');
const p256 = () => generateKeyPairSync('ec', { namedCurve: 'P-256' });
const noWarn = (): void => assert.fail('no warning expected');

test('the approvers file: only Ed25519 and P-256 keys; quorum not above N', () => {
  const others = [ed(), ed(), ed()].map((k, i) => ({ name: `a${i}`, publicKeyPem: pem(k.publicKey) }));
  for (const [key, says] of [
    [generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey, /approvers.3.publicKeyPem: must be an Ed25519 or ECDSA P-256 key/],
    [generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey, /approvers.3.publicKeyPem: must be an Ed25519 or ECDSA P-256 key/],
  ] as const) {
    const f = file('bad.json', JSON.stringify({ quorum: 1, approvers: [...others, { name: 'x', publicKeyPem: pem(key) }] }));
    assert.throws(() => loadApprovers(f, false, noWarn), says);
  }
  assert.throws(
    () => loadApprovers(file('big.json', JSON.stringify({ quorum: 4, approvers: others })), true, noWarn),
    /quorum 4 is more than the 3 approver\(s\)/,
  );
  assert.throws(() => loadApprovers(file('junk.json', '{'), false, noWarn), QuorumError);
});

test('requests: canonical bytes only, at most 24 h; approvals by name or fingerprint; every approval must hold', () => {
  const keys = [ed(), p256(), ed(), p256()];
  const set = loadApprovers(
    file('ok.json', JSON.stringify({ quorum: 2, approvers: keys.map((k, i) => ({ name: `a${i}`, publicKeyPem: pem(k.publicKey) })) })),
    false,
    noWarn,
  );
  const facts = { operation: 'retire', keyName: 'k', keyVersion: 1, keySpec: null, tokenLabel: 't' };
  const r = newRequest(facts, 600);
  const text = canonical(r);
  assert.throws(() => readRequest(file('pretty.json', JSON.stringify(JSON.parse(text), null, 2))), /not in canonical form/);
  const req = readRequest(file('req.json', text));
  const byName = file('a0.json', JSON.stringify({ approver: 'a0', signature: sign(null, Buffer.from(text), keys[0]?.privateKey ?? '').toString('base64') }));
  const byPrint = file('a1.json', JSON.stringify(approve(keys[1]?.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() ?? '', text)));
  assert.deepEqual(checkApprovals(set, req, facts, [byName, byPrint], new Set()), ['a0', 'a1']);
  const junk = file('junk-sig.json', JSON.stringify({ approver: 'a2', signature: 'AAAA' }));
  assert.throws(() => checkApprovals(set, req, facts, [byName, byPrint, junk], new Set()), /a2's signature does not match this request/);
  const long = { ...newRequest(facts, 600), expiresAt: new Date(Date.now() + 25 * 3600e3).toISOString() };
  assert.throws(() => checkApprovals(set, { request: long, text: canonical(long) }, facts, [byName], new Set()), /valid for more than 24 h/);
});

test('the state file: used nonces survive, expired ones are dropped; a damaged file is refused', () => {
  const f = join(dir, 'state.json');
  const facts = { operation: 'rotate', keyName: 'k', keyVersion: null, keySpec: null, tokenLabel: 't' };
  const old = newRequest(facts, 1, new Date(Date.now() - 10_000));
  const fresh = newRequest(facts, 600);
  ApprovalState.load(f).markUsed(old, new Date(Date.now() - 9_000));
  assert.ok(ApprovalState.load(f).usedNonces().has(old.nonce));
  ApprovalState.load(f).markUsed(fresh);
  assert.deepEqual([...ApprovalState.load(f).usedNonces()], [fresh.nonce]);
  writeFileSync(f, '{"used": 1}');
  assert.throws(() => ApprovalState.load(f), /HSM_APPROVALS_STATE: not a state file/);
  assert.equal(readFileSync(f, 'utf8'), '{"used": 1}');
});
