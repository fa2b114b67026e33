/**
 * The local token that `npm start`, the tests and the load test create for themselves: both of its
 * PINs work, and neither ever appears in a command line (which every user of the machine can read
 * in `ps`): softhsm2-util takes PINs only as arguments, so the token is initialized through PKCS#11
 * in a child process that reads them from its stdin.
 */
import childProcess from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
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
  const originals = { spawnSync: childProcess.spawnSync, execFileSync: childProcess.execFileSync, spawn: childProcess.spawn, execFile: childProcess.execFile };
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
  const recording = recordingCommandLines();
  try {
    const token = ensureLocalToken(dir, 'local-token-test');
    recording.restore();
    const soPin = readFileSync(join(dir, 'so.pin'), 'utf8');
    assert.equal(token.pin, readFileSync(token.pinFile, 'utf8'));
    assert.ok(recording.lines.length > 0, 'the token was made by child processes');
    for (const line of recording.lines) {
      for (const arg of line) {
        assert.ok(!arg.includes(token.pin) && !arg.includes(soPin), `a PIN on the command line of ${line[0]}`);
      }
    }

    // Same process, same token: the second call finds it and initializes nothing.
    const again = recordingCommandLines();
    ensureLocalToken(dir, 'local-token-test');
    again.restore();
    assert.ok(again.lines.every((l) => l[0] !== process.execPath), 'an existing token is not initialized again');

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
      assert.throws(() => lib.C_Login(session, pkcs11js.CKU_USER, 'not-the-pin'), (e: { code?: number }) => e.code === pkcs11js.CKR_PIN_INCORRECT);
      lib.C_CloseSession(session);
    } finally {
      lib.C_Finalize();
    }
  } finally {
    recording.restore();
    rmSync(dir, { recursive: true, force: true });
  }
});
