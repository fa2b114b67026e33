/**
 * The one form a serial number is kept and looked up in: upper-case hex without leading zeros
 * ('0' for zero), whatever form a caller typed or a library printed.
 */
export function canonicalSerial(hex: string): string {
  return hex.toUpperCase().replace(/^0+(?=.)/, '');
}

/**
 * A canonical serial number as every answer shows it: upper-case hex in whole bytes, as openssl and
 * node:crypto print it and as the issuing answer gives it (`0A1B`, not `A1B`).
 */
export function serialForDisplay(canonical: string): string {
  return canonical.length % 2 === 1 ? `0${canonical}` : canonical;
}
