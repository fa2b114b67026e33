import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { CKR, isPkcs11Failure } from '../../src/hsm/errors.js';
import type { Handle } from '../../src/hsm/pkcs11/AsyncPkcs11.js';
import { P11 } from '../../src/hsm/pkcs11/constants.js';
import { ThreadedPkcs11 } from '../../src/hsm/pkcs11/ThreadedPkcs11.js';
import { createTestToken, type TestToken } from '../support/testToken.js';

/** The CK_RV of a failed call reaches the service whatever shape the binding threw it in. */
let token: TestToken;
let p11: ThreadedPkcs11;
let session: Handle;

before(async () => {
  token = await createTestToken();
  p11 = await ThreadedPkcs11.start(token.modulePath, 1);
  let slot: Handle | undefined;
  for (const s of await p11.getSlotList(true)) if ((await p11.getTokenLabel(s)) === token.label) slot = s;
  session = await p11.openSession(slot!, 0x6);
});
after(async () => {
  await p11?.close();
  token?.cleanup();
});

test('a refused C_CreateObject fails with its CK_RV, not as a binding error (which would re-initialize the module)', async () => {
  // Found by the fuzz tests' overlapping attaches: SoftHSMv2 refused a C_CreateObject, pkcs11js threw it without its code,
  // and the service took the failure for a lost connection. A certificate object without its value is refused by any module.
  const incomplete = [
    { type: P11.CKA_CLASS, value: P11.CKO_CERTIFICATE },
    { type: P11.CKA_CERTIFICATE_TYPE, value: P11.CKC_X_509 },
    { type: P11.CKA_TOKEN, value: false },
  ];
  const e = await p11.createObject(session, incomplete).then(
    () => assert.fail('created an incomplete certificate object'),
    (x: unknown) => x,
  );
  assert.ok(isPkcs11Failure(e), String(e));
  assert.equal(e.code, CKR.TEMPLATE_INCOMPLETE, String(e));
});
