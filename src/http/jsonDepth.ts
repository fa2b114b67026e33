/** Deepest nesting of arrays and objects a request body may have; the API's bodies need 4. */
export const MAX_JSON_DEPTH = 32;

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN = new Set([0x5b, 0x7b]); // [ {
const CLOSE = new Set([0x5d, 0x7d]); // ] }

/**
 * Whether UTF-8 JSON text nests arrays and objects deeper than `max`: brackets are counted outside
 * strings in one pass over the bytes, before anything parses the text, so a 100,000-deep body
 * costs a scan and no parse, no recursion and no allocation. It is not a validator: whatever
 * else is wrong with the text is left to JSON.parse. (In UTF-8 every byte of a multi-byte
 * character is >= 0x80, so none is taken for a bracket, a quote or a backslash.)
 */
export function jsonDepthExceeds(text: Uint8Array, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === undefined) break; // never inside i < text.length; the end of the text, as the loop condition says
    if (inString) {
      if (c === BACKSLASH) i++;
      else if (c === QUOTE) inString = false;
    } else if (c === QUOTE) {
      inString = true;
    } else if (OPEN.has(c)) {
      if (++depth > max) return true;
    } else if (CLOSE.has(c)) {
      depth--;
    }
  }
  return false;
}
