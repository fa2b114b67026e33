import assert from 'node:assert/strict';
import { test } from 'node:test';
import { findToken, noTokenMessage, openToken, type TokenBinding } from '../../../src/hsm/pkcs11/findToken.js';

/** A slot list: each slot's token label, padded as PKCS#11 pads them. */
function fakeToken(labels: string[], loginFails?: number): TokenBinding<number> & { logins: number[] } {
  const logins: number[] = [];
  return {
    logins,
    C_GetSlotList: () => labels.map((_, i) => i),
    C_GetTokenInfo: (slot) => ({ label: labels[slot]!.padEnd(32, ' ') }),
    C_OpenSession: (slot) => 100 + slot,
    C_Login: (session) => {
      logins.push(session);
      if (loginFails !== undefined) throw Object.assign(new Error('login'), { code: loginFails });
    },
  };
}
const codes = { CKU_USER: 1, CKR_USER_ALREADY_LOGGED_IN: 0x100 };
const label = (labels: string[]) => (slot: number) => labels[slot]!;

test('finds the one token with the label, or the token at the slot index', () => {
  const labels = ['a', 'b', 'c'];
  assert.deepEqual(findToken([0, 1, 2], label(labels), { tokenLabel: 'b' }), { slot: 1 });
  assert.deepEqual(findToken([0, 1, 2], label(labels), { slotIndex: 2 }), { slot: 2 });
});

test('no token with the label, or no slot at the index: says how many tokens there are', () => {
  const labels = ['a', 'b'];
  const none = findToken([0, 1], label(labels), { tokenLabel: 'x' });
  assert.deepEqual(none, { noToken: true, tokens: 2, labelled: 0 });
  assert.equal(noTokenMessage({ tokenLabel: 'x' }, none as never, { label: 'HSM_TOKEN_LABEL' }), "no token labelled 'x' (HSM_TOKEN_LABEL); 2 token(s) present");
  const past = findToken([0, 1], label(labels), { slotIndex: 5 });
  assert.equal(noTokenMessage({ slotIndex: 5 }, past as never, { index: 'HSM_SLOT' }), 'no token in slot index 5 (HSM_SLOT); 2 token(s) present');
});

test('a label two tokens share is refused, naming the label and the count', () => {
  const labels = ['signer', 'other', 'signer'];
  const found = findToken([0, 1, 2], label(labels), { tokenLabel: 'signer' });
  assert.deepEqual(found, { noToken: true, tokens: 3, labelled: 2 });
  assert.match(noTokenMessage({ tokenLabel: 'signer' }, found as never), /^2 tokens are labelled 'signer': a label must name one token/);
});

test('openToken logs in on a session of its own on the token found; already logged in counts as logged in', () => {
  const t = fakeToken(['a', 'b']);
  assert.deepEqual(openToken(t, codes, { tokenLabel: 'b' }, 6, '1234'), { slot: 1, loginSession: 101 });
  assert.deepEqual(t.logins, [101]);
  assert.deepEqual(openToken(fakeToken(['a'], 0x100), codes, { tokenLabel: 'a' }, 6, '1234'), { slot: 0, loginSession: 100 });
  assert.throws(() => openToken(fakeToken(['a'], 0xa0), codes, { tokenLabel: 'a' }, 6, 'bad'), { code: 0xa0 });
});

test('openToken refuses an ambiguous label before opening any session', () => {
  const t = fakeToken(['a', 'a']);
  const r = openToken(t, codes, { tokenLabel: 'a' }, 6, '1234');
  assert.ok('noToken' in r && r.labelled === 2);
  assert.deepEqual(t.logins, []);
});
