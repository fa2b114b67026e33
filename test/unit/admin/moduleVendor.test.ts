import assert from 'node:assert/strict';
import { test } from 'node:test';
import { keySharingAdvice, moduleVendor } from '../../../src/admin/moduleVendor.js';
import { usabilityColumn } from '../../../src/admin/serviceUsability.js';

test("CloudHSM's module is recognized by its file name; SoftHSMv2's and others are not", () => {
  assert.equal(moduleVendor('/opt/cloudhsm/lib/libcloudhsm_pkcs11.so')?.name, 'cloudhsm');
  assert.equal(moduleVendor('/usr/lib/softhsm/libsofthsm2.so'), undefined);
  assert.equal(moduleVendor('/opt/x/libcloudhsm_pkcs11.so.bak'), undefined);
});

test('HSM_MODULE_VENDOR names the vendor of a renamed module, or none; an unknown name is refused by name', () => {
  assert.equal(moduleVendor('/usr/lib/softhsm/libsofthsm2.so', 'cloudhsm')?.name, 'cloudhsm');
  assert.equal(moduleVendor('/opt/cloudhsm/lib/libcloudhsm_pkcs11.so', 'none'), undefined);
  assert.equal(moduleVendor('/opt/cloudhsm/lib/libcloudhsm_pkcs11.so', '')?.name, 'cloudhsm');
  assert.throws(() => moduleVendor('/x.so', 'thales'), /^RangeError: HSM_MODULE_VENDOR: must be one of none, cloudhsm$/);
});

test('the share command names the private key by its label on the token, and the signing user as a crypto user', () => {
  const cloud = moduleVendor('/opt/cloudhsm/lib/libcloudhsm_pkcs11.so');
  const lines = keySharingAdvice(cloud, 'payments/v2', 'signer');
  assert.equal(lines.at(-1), '  key share --filter attr.label=payments/v2 attr.class=private-key --username signer --role crypto-user');
  assert.match(lines[0] ?? '', /cannot sign with payments\/v2 until it is shared with signer/);
  const unset = keySharingAdvice(cloud, 'payments/v2', undefined);
  assert.match(unset[0] ?? '', /set HSM_SIGNER_USER/);
  assert.equal(unset.at(-1), '  key share --filter attr.label=payments/v2 attr.class=private-key --username <signing user> --role crypto-user');
  assert.deepEqual(keySharingAdvice(undefined, 'payments/v2', 'signer'), [], 'SoftHSMv2: nothing to share');
});

test('the keys list column', () => {
  assert.equal(usabilityColumn({ served: true, usable: true }), 'usable');
  assert.equal(usabilityColumn({ served: true, usable: false, unusableReason: 'CKR_KEY_HANDLE_INVALID' }), 'not usable (CKR_KEY_HANDLE_INVALID)');
  assert.match(usabilityColumn({ served: false }), /^not served/);
  assert.match(usabilityColumn({ served: true }), /unknown/);
});
