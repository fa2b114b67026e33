/**
 * Failure codes that are not CK_RVs (negative, so no module can return them). Alone in a module
 * without imports: the HSM thread, which loads none of the service's code, encodes with them too.
 */
export const NOT_A_CKR = {
  /** The binding threw without a CK_RV (a bad argument: a bug). */
  BINDING_ERROR: -1,
  /** The HSM thread died under the call: its outcome is unknown. */
  THREAD_EXITED: -2,
} as const;
