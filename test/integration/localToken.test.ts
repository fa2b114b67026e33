/**
 * The local token that `npm start`, the tests and the load test create for themselves: both of its
 * PINs work, and neither ever appears in a command line (which every user of the machine can read
 * in `ps`): softhsm2-util takes PINs only as arguments, so the token is initialized through PKCS#11
 * in a child process that reads them from its stdin.
 */
import childProcess from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire, syncBuiltinESMExports } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type * as Pkcs11Types from 'pkcs11js';
import { ensureLocalToken } from '../../src/dev/softHsm.js';

const pkcs11js = createRequire(import.meta.url)('pkcs11js') as typeof Pkcs11Types;

/** Records the arguments of every child process started through node:child_process meanwhile. */
function recordingCommandLines(): { lines: string[][]; restore(): void } {
  const lines: string[][] = [];
  const originals = {
    spawnSync: childProcess.spawnSync,
    spawn: childProcess.spawn,
    execFileSync: childProcess.execFileSync,
    execFile: childProcess.execFile,
    execSync: childProcess.execSync,
    exec: childProcess.exec,
    fork: childProcess.fork,
  };
  for (const [name, original] of Object.entries(originals)) {
    (childProcess as unknown as Record<string, unknown>)[name] = (file: string, args?: unknown, ...rest: unknown[]) => {
      lines.push([file, ...(Array.isArray(args) ? args.map(String) : [])]);
      return (original as (...a: unknown[]) => unknown)(file, args, ...rest);
    };
  }
  syncBuiltinESMExports();
  return {
    lines,
    restore: () => {
      Object.assign(childProcess, originals);
      syncBuiltinESMExports();
    },
  };
}

test('a new local token: the user and SO PINs from its files log in, and no command line carried either', { timeout: 60_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'hsm-signer-localtoken-'));
  const conf = process.env.SOFTHSM2_CONF;
  const recording = recordingCommandLines();
  try {
    const token = ensureLocalToken(dir, 'local-token-test');
    recording.restore();
    const soPin = readFileSync(join(dir, 'so.pin'), 'utf8');
    assert.equal(token.pin, readFileSync(token.pinFile, 'utf8'));
    const inits = recording.lines.filter((l) => l[0] === process.execPath);
    assert.equal(inits.length, 1, 'one child initialized the token (a node process, through PKCS#11)');
    assert.ok(inits[0]!.includes('-e'));
    for (const line of recording.lines) {
      for (const arg of line) {
        assert.ok(!arg.includes(token.pin) && !arg.includes(soPin), `a PIN on the command line of ${line[0]}`);
      }
    }

    // Same process, same token: the second call finds it and initializes nothing.
    const again = recordingCommandLines();
    ensureLocalToken(dir, 'local-token-test');
    again.restore();
    assert.deepEqual(again.lines, [['softhsm2-util', '--show-slots']], 'an existing token is only looked up');

    process.env.SOFTHSM2_CONF = token.conf;
    const lib = new pkcs11js.PKCS11();
    lib.load(token.modulePath);
    lib.C_Initialize();
    try {
      const slot = lib.C_GetSlotList(true).find((s) => lib.C_GetTokenInfo(s).label.trim() === 'local-token-test');
      assert.ok(slot, 'the token is there under its label');
      const session = lib.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
      lib.C_Login(session, pkcs11js.CKU_USER, token.pin);
      lib.C_Logout(session);
      lib.C_Login(session, pkcs11js.CKU_SO, soPin);
      lib.C_Logout(session);
      assert.throws(
        () => lib.C_Login(session, pkcs11js.CKU_USER, 'not-the-pin'),
        (e: { code?: number }) => e.code === pkcs11js.CKR_PIN_INCORRECT,
      );
      lib.C_CloseSession(session);
    } finally {
      lib.C_Finalize();
    }
  } finally {
    recording.restore();
    if (conf === undefined) delete process.env.SOFTHSM2_CONF;
    else process.env.SOFTHSM2_CONF = conf;
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a token that cannot be initialized: the error names the PKCS#11 failure, never a PIN', { timeout: 60_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'hsm-signer-localtoken-'));
  try {
    // SoftHSMv2 wants 4 to 255 characters: C_InitToken refuses this SO PIN (long, so that no path
    // or message can contain it by chance).
    const soPin = `so-pin-${'7Qz'.repeat(100)}`;
    writeFileSync(join(dir, 'so.pin'), soPin, { mode: 0o600 });
    assert.throws(
      () => ensureLocalToken(dir, 'bad-pin-token'),
      (e: Error) => {
        assert.match(e.message, /could not initialize the SoftHSMv2 token bad-pin-token: .*C_InitToken/);
        assert.match(e.message, /remove .*tokens and run this again/);
        assert.ok(!e.message.includes('7Qz7Qz') && !e.message.includes(readFileSync(join(dir, 'user.pin'), 'utf8')), 'no PIN in the error');
        return true;
      },
    );
    assert.throws(() => ensureLocalToken(dir, 'a-label-that-is-longer-than-32-bytes'), /at most 32 bytes/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
