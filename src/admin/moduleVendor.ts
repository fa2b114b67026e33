import { basename } from 'node:path';

/**
 * What the admin CLI must tell an operator about a vendor's PKCS#11 module, as data: a vendor
 * is recognized by its module's file name (or named by HSM_MODULE_VENDOR, for a renamed copy),
 * and says what a new key needs before the service can sign with it.
 */
export interface ModuleVendor {
  readonly name: string;
  readonly moduleFiles: readonly string[];
  /**
   * A new private key is owned by the key-manager user and must be shared with the service's
   * signing user: the commands that do it, for the private key's label and the signing user.
   */
  readonly shareCommands?: (label: string, signingUser: string) => string[];
  /** Where those commands run, for the sentence before them. */
  readonly shareTool?: string;
}

export const MODULE_VENDORS: readonly ModuleVendor[] = [
  {
    name: 'cloudhsm',
    moduleFiles: ['libcloudhsm_pkcs11.so'],
    // CloudHSM CLI (SDK 5), as the key's owner; a key is shared with at most 7 users besides it.
    shareCommands: (label, user) => [`key share --filter attr.label=${label} attr.class=private-key --username ${user} --role crypto-user`],
    shareTool: 'CloudHSM CLI, logged in as the crypto user that owns the key (the one hsm-signer-admin logs in as)',
  },
];

/** The vendor whose module this is: named by `override` (HSM_MODULE_VENDOR; `none` for none), else by the module's file name. */
export function moduleVendor(modulePath: string, override?: string): ModuleVendor | undefined {
  if (override !== undefined && override !== '') {
    if (override === 'none') return undefined;
    const named = MODULE_VENDORS.find((v) => v.name === override);
    if (!named) throw new RangeError(`HSM_MODULE_VENDOR: must be one of none, ${MODULE_VENDORS.map((v) => v.name).join(', ')}`);
    return named;
  }
  const file = basename(modulePath);
  return MODULE_VENDORS.find((v) => v.moduleFiles.includes(file));
}

/**
 * The lines to print after a key version was created: nothing for a module whose keys every
 * user of the token may use, else the vendor's share commands (or what to set to get them).
 */
export function keySharingAdvice(vendor: ModuleVendor | undefined, label: string, signingUser: string | undefined): string[] {
  if (!vendor?.shareCommands) return [];
  if (signingUser === undefined || signingUser === '') {
    return [
      `the service cannot sign with ${label} until it is shared with its signing user; set HSM_SIGNER_USER to that user's name to get the exact command, which has this form (${vendor.shareTool}):`,
      ...vendor.shareCommands(label, '<signing user>').map((c) => `  ${c}`),
    ];
  }
  return [
    `the service cannot sign with ${label} until it is shared with ${signingUser}; run (${vendor.shareTool}):`,
    ...vendor.shareCommands(label, signingUser).map((c) => `  ${c}`),
  ];
}
