/**
 * Which token to use, and logging in on it: one function for the service's HSM threads and for
 * the harness's direct line to a token. Pure: it imports nothing, so the HSM thread (which runs
 * alone, without the service's modules) can bundle it.
 */

/** By label, or by index in the list of slots with a token present. */
export interface TokenSelector {
  readonly tokenLabel?: string | undefined;
  readonly slotIndex?: number | undefined;
}

/** No token to use: `tokens` are present, `labelled` of them carry the label asked for (2 or more: ambiguous). */
export interface TokenMissing {
  readonly noToken: true;
  readonly tokens: number;
  readonly labelled: number;
}

/**
 * The slot of the token asked for. A label two tokens share names neither: taking the first or
 * the last would sign with keys of a token nobody chose, so it is refused like a missing one.
 */
export function findToken<S>(slots: readonly S[], labelOf: (slot: S) => string, want: TokenSelector): { readonly slot: S } | TokenMissing {
  if (want.slotIndex !== undefined) {
    const slot = slots[want.slotIndex];
    return slot !== undefined ? { slot } : { noToken: true, tokens: slots.length, labelled: 0 };
  }
  const labelled = slots.filter((s) => labelOf(s) === want.tokenLabel);
  const [slot] = labelled;
  return labelled.length === 1 && slot !== undefined ? { slot } : { noToken: true, tokens: slots.length, labelled: labelled.length };
}

/** Why no token was found; `source` names where the label or index came from (an environment variable). */
export function noTokenMessage(want: TokenSelector, m: TokenMissing, source: { readonly label?: string; readonly index?: string } = {}): string {
  const from = (name: string | undefined): string => (name ? ` (${name})` : '');
  if (want.slotIndex !== undefined) return `no token in slot index ${want.slotIndex}${from(source.index)}; ${m.tokens} token(s) present`;
  if (m.labelled > 1) {
    return `${m.labelled} tokens are labelled '${want.tokenLabel}'${from(source.label)}: a label must name one token; give each token its own label or choose one by slot index`;
  }
  return `no token labelled '${want.tokenLabel}'${from(source.label)}; ${m.tokens} token(s) present`;
}

/** The synchronous pkcs11js calls that find a token and log in. */
export interface TokenBinding<S> {
  C_GetSlotList(tokenPresent: boolean): S[];
  C_GetTokenInfo(slot: S): { label: string };
  C_OpenSession(slot: S, flags: number): S;
  C_Login(session: S, userType: number, pin: string): void;
}

/** pkcs11js's values for the user type and the one login failure that is a success (passed in: this module loads no binding). */
export interface LoginCodes {
  readonly CKU_USER: number;
  readonly CKR_USER_ALREADY_LOGGED_IN: number;
}

/**
 * Finds the token and logs the user in on a session of its own. Login is per application, not per
 * session: "already logged in" (another part of the process did it) is a success.
 */
export function openToken<S>(
  lib: TokenBinding<S>,
  codes: LoginCodes,
  want: TokenSelector,
  flags: number,
  pin: string,
): { readonly slot: S; readonly loginSession: S } | TokenMissing {
  // PKCS#11 pads token labels with spaces to 32 bytes.
  const found = findToken(lib.C_GetSlotList(true), (s) => lib.C_GetTokenInfo(s).label.trim(), want);
  if ('noToken' in found) return found;
  const loginSession = lib.C_OpenSession(found.slot, flags);
  try {
    lib.C_Login(loginSession, codes.CKU_USER, pin);
  } catch (e) {
    if ((e as { code?: number }).code !== codes.CKR_USER_ALREADY_LOGGED_IN) throw e;
  }
  return { slot: found.slot, loginSession };
}
