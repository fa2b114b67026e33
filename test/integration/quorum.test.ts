import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { runAdmin, type CliResult } from '../support/adminCli.js';
import { createTestToken, type TestToken } from '../support/testToken.js';
import { TempDir } from '../unit/pki/openssl.js';

/**
 * M-of-N approval of `keys retire` (and `keys rotate` when HSM_QUORUM_OPERATIONS lists it), with
 * approver keys made by openssl and approvals signed by openssl and by `hsm-signer-admin approve`,
 * against a real SoftHSMv2 token. Quorum 2 of 4 approvers (alice, carol: Ed25519; bob, dave: P-256).
 */
let token: TestToken;
let dir: TempDir;
let env: Record<string, string>;

const openssl = (...args: string[]): Buffer => execFileSync('openssl', args);

function newKey(name: string, kind: 'ed25519' | 'p256'): { key: string; pub: string } {
  const key = dir.file(`${name}.pem`);
  if (kind === 'ed25519') openssl('genpkey', '-algorithm', 'ed25519', '-out', key);
  else openssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', key);
  return { key, pub: openssl('pkey', '-in', key, '-pubout').toString() };
}

const keys: Record<string, { key: string; pub: string }> = {};

before(async () => {
  token = await createTestToken([{ name: 'pay', spec: 'ECC_NIST_P256' }]);
  const a = await token.admin();
  try {
    await a.rotateKey('pay');
    await a.rotateKey('pay');
  } finally {
    await a.close();
  }
  dir = await TempDir.create();
  for (const [n, kind] of [
    ['alice', 'ed25519'],
    ['bob', 'p256'],
    ['carol', 'ed25519'],
    ['dave', 'p256'],
    ['eve', 'ed25519'],
  ] as const)
    keys[n] = newKey(n, kind);
  const approvers = ['alice', 'bob', 'carol', 'dave'].map((name) => ({ name, publicKeyPem: keys[name]?.pub }));
  await dir.write('approvers.json', JSON.stringify({ quorum: 2, approvers }));
  env = { HSM_APPROVERS_FILE: dir.file('approvers.json'), AUDIT_LOG: dir.file('audit.log') };
});
after(async () => {
  await dir?.remove();
  token?.cleanup();
});

let seq = 0;
/** `keys retire` without approvals: the request it prints, saved as a file. */
async function requestFor(version: number, extra: string[] = []): Promise<{ file: string; text: string }> {
  const r = await runAdmin(token, ['keys', 'retire', '--name', 'pay', '--version', String(version), ...extra], env);
  assert.equal(r.code, 2, r.stderr);
  const sha = /approval request printed \(SHA-256 ([0-9a-f]{64})\): 2 of 4 approvers must sign it/.exec(r.stderr);
  assert.ok(sha, r.stderr);
  assert.equal(createHash('sha256').update(r.stdout).digest('hex'), sha[1]);
  const file = await dir.write(`request-${++seq}.json`, r.stdout);
  return { file, text: r.stdout };
}

/** An approval signed by openssl: Ed25519 over the raw bytes, P-256 with SHA-256 (DER). */
async function opensslApproval(approver: string, requestFile: string): Promise<string> {
  const k = keys[approver]?.key ?? '';
  const sig =
    approver === 'bob' || approver === 'dave'
      ? openssl('dgst', '-sha256', '-sign', k, requestFile)
      : openssl('pkeyutl', '-sign', '-inkey', k, '-rawin', '-in', requestFile);
  return dir.write(`approval-${++seq}.json`, JSON.stringify({ approver, signature: sig.toString('base64') }));
}

async function cliApproval(approver: string, requestFile: string): Promise<string> {
  const r = await runAdmin(token, ['approve', '--key', keys[approver]?.key ?? '', requestFile], {});
  assert.equal(r.code, 0, r.stderr);
  return dir.write(`approval-${++seq}.json`, r.stdout);
}

const retire = (version: number, request: string, approvals: string[], e: Record<string, string> = env): Promise<CliResult> =>
  runAdmin(
    token,
    ['keys', 'retire', '--name', 'pay', '--version', String(version), '--confirm', '--request', request, ...approvals.flatMap((a) => ['--approvals', a])],
    e,
  );

function refused(r: CliResult, reason: RegExp): void {
  assert.equal(r.code, 2, `expected a refusal, got ${r.code}: ${r.stdout}${r.stderr}`);
  assert.match(r.stderr, reason);
}

async function versions(): Promise<number[]> {
  const r = await runAdmin(token, ['keys', 'list', '--json'], env);
  assert.equal(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout) as { keys: { version: number }[] }).keys.map((k) => k.version);
}

describe('the approvers file', () => {
  test('fewer than quorum + 2 approvers: refused, or a warning with --allow-small-quorum; duplicate keys refused', async () => {
    const three = JSON.stringify({ quorum: 2, approvers: ['alice', 'bob', 'carol'].map((name) => ({ name, publicKeyPem: keys[name]?.pub })) });
    const small = { ...env, HSM_APPROVERS_FILE: await dir.write('small.json', three) };
    refused(
      await runAdmin(token, ['keys', 'retire', '--name', 'pay', '--version', '1'], small),
      /3 approver\(s\) for a quorum of 2: fewer than quorum \+ 2.*add --allow-small-quorum/,
    );
    const allowed = await runAdmin(token, ['keys', 'retire', '--name', 'pay', '--version', '1', '--allow-small-quorum'], small);
    assert.equal(allowed.code, 2);
    assert.match(allowed.stderr, /warning: 3 approver\(s\) for a quorum of 2/);
    assert.match(allowed.stderr, /approval request printed/);

    const dup = JSON.stringify({
      quorum: 1,
      approvers: [
        { name: 'alice', publicKeyPem: keys.alice?.pub },
        { name: 'bob', publicKeyPem: keys.bob?.pub },
        { name: 'alice2', publicKeyPem: keys.alice?.pub },
      ],
    });
    refused(
      await runAdmin(token, ['keys', 'retire', '--name', 'pay', '--version', '1'], { ...env, HSM_APPROVERS_FILE: await dir.write('dup.json', dup) }),
      /approvers.2 \(alice2\) has the same key as alice/,
    );
  });
});

describe('keys retire with a quorum', () => {
  test('the request is canonical JSON naming the operation, key, version and token, expiring within 24 h', async () => {
    const { text } = await requestFor(1);
    const r = JSON.parse(text) as Record<string, unknown>;
    assert.deepEqual(Object.keys(r), ['type', 'operation', 'keyName', 'keyVersion', 'keySpec', 'tokenLabel', 'nonce', 'createdAt', 'expiresAt']);
    assert.equal(text, `${JSON.stringify(r)}\n`);
    assert.deepEqual([r.operation, r.keyName, r.keyVersion, r.keySpec, r.tokenLabel], ['retire', 'pay', 1, null, token.label]);
    assert.equal(Date.parse(String(r.expiresAt)) - Date.parse(String(r.createdAt)), 24 * 3600 * 1000);
  });

  test('every refusal names its reason, and the key stays', async () => {
    const req = await requestFor(1);
    const alice = await opensslApproval('alice', req.file);
    const bob = await opensslApproval('bob', req.file);
    const eve = await opensslApproval('eve', req.file);
    const aliceAgain = await cliApproval('alice', req.file);
    const eveAsCarol = await dir.write('eve-as-carol.json', JSON.stringify({ approver: 'carol', signature: JSON.parse(readFileSync(eve, 'utf8')).signature }));
    /** Requests made (and properly signed) for another token and another key. */
    const otherRequest = async (field: string, value: string): Promise<[string, string[]]> => {
      const other = await dir.write(`other-${field}.json`, `${JSON.stringify({ ...JSON.parse(req.text), [field]: value })}\n`);
      return [other, [await opensslApproval('alice', other), await opensslApproval('bob', other)]];
    };
    const [otherToken, otherKey] = [await otherRequest('tokenLabel', 'other-token'), await otherRequest('keyName', 'other')];
    // A tampered request: valid longer than the approvers signed.
    const tampered = await dir.write('tampered.json', req.text.replace(/"expiresAt":"[^"]+"/, `"expiresAt":"${new Date(Date.now() + 3600e3).toISOString()}"`));
    assert.notEqual(readFileSync(tampered, 'utf8'), req.text);
    const short = await requestFor(1, ['--expires-in', '1']);
    const shortApprovals = [await opensslApproval('alice', short.file), await opensslApproval('bob', short.file)];
    await new Promise((r) => setTimeout(r, 1100));
    // None of these changes anything, so they run at once (the CLI's AdminLock serializes their HSM sessions).
    const cases: [Promise<CliResult>, RegExp][] = [
      [retire(1, req.file, [alice]), /too few approvals: 1 valid, the quorum is 2/],
      // the same approver twice (once by openssl, once by `approve`, which names the key by fingerprint)
      [retire(1, req.file, [alice, aliceAgain]), /duplicate approver alice/],
      // a key not in the approvers file, named as an approver or not
      [retire(1, req.file, [alice, eve]), /unknown approver "eve"/],
      [retire(1, req.file, [alice, eveAsCarol]), /carol's signature does not match this request/],
      [retire(2, req.file, [alice, bob]), /wrong request: it approves keyVersion 1, this command is for 2/],
      [retire(1, otherToken[0], otherToken[1]), /wrong request: it approves tokenLabel "other-token"/],
      [retire(1, otherKey[0], otherKey[1]), /wrong request: it approves keyName "other"/],
      [retire(1, tampered, [alice, bob]), /alice's signature does not match this request/],
      [retire(1, short.file, shortApprovals), /expired request: it expired at /],
    ];
    const results = await Promise.all(cases.map(([p]) => p));
    for (const [i, r] of results.entries()) refused(r, cases[i]?.[1] ?? /never/);
    assert.deepEqual(await versions(), [1, 2, 3]);
  });

  test('M approvals from distinct approvers retire the version; the audit record names them; its nonce is recorded as used', async () => {
    const req = await requestFor(1);
    const approvals = [await opensslApproval('alice', req.file), await opensslApproval('bob', req.file), await cliApproval('dave', req.file)];
    const ok = await retire(1, req.file, approvals);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stderr, /approved by alice, bob, dave/);
    assert.match(ok.stdout, /^retired pay version 1 /);
    assert.deepEqual(await versions(), [2, 3]);
    const audit = readFileSync(dir.file('audit.log'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const last = audit.at(-1);
    assert.deepEqual([last?.operation, last?.keyVersion, last?.outcome, last?.approvers], ['retire', 1, 'ok', ['alice', 'bob', 'dave']]);
    const state = JSON.parse(readFileSync(dir.file('approvals-state.json'), 'utf8')) as { used: Record<string, string> };
    assert.ok(JSON.parse(req.text).nonce in state.used);
  });

  test('rotate, when HSM_QUORUM_OPERATIONS lists it: a replayed request is refused', async () => {
    refused(await runAdmin(token, ['keys', 'rotate', '--name', 'pay', '--approvals', 'x.json'], env), /--approvals: 'keys rotate' needs no approvals here/);
    const e = { ...env, HSM_QUORUM_OPERATIONS: 'rotate' };
    const asked = await runAdmin(token, ['keys', 'rotate', '--name', 'pay'], e);
    assert.equal(asked.code, 2, asked.stderr);
    assert.equal(JSON.parse(asked.stdout).operation, 'rotate');
    const file = await dir.write('rotate.json', asked.stdout);
    // `--approvals A B`: the files after the first come as positionals.
    const approvals = ['--approvals', await opensslApproval('carol', file), await opensslApproval('dave', file)];
    const ok = await runAdmin(token, ['keys', 'rotate', '--name', 'pay', '--request', file, ...approvals], e);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /version 4/);
    refused(
      await runAdmin(token, ['keys', 'rotate', '--name', 'pay', '--request', file, ...approvals], e),
      /replayed request: nonce [0-9a-f]{32} has been used before/,
    );
    assert.deepEqual(await versions(), [2, 3, 4]);
  });
});
