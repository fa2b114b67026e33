import { invalid, type ServiceError } from '../errors.js';

/** PEM (RFC 7468) reading and writing. */

export const MAX_PEM_LENGTH = 256 * 1024;

export interface PemBlock {
  readonly label: string;
  readonly der: Buffer;
}

const BEGIN = '-----BEGIN ';
const END = '-----END ';
const DASHES = '-----';
const LABEL = /^[A-Z0-9 ]+$/;
const BASE64_BODY = /^[A-Za-z0-9+/]*={0,2}$/;

/**
 * The PEM blocks of `text`, in order. Text outside blocks is ignored (RFC 7468 explanatory
 * text, e.g. openssl's "subject=" lines). Anything malformed is INVALID_ARGUMENT naming `field`.
 * One pass with indexOf: a regular expression over many unterminated BEGIN lines took time
 * quadratic in the input (about a second at the length limit), on the event loop.
 */
export function pemBlocks(text: unknown, field: string): PemBlock[] {
  if (typeof text !== 'string') throw invalid(`${field}: must be a PEM string`);
  if (text.length > MAX_PEM_LENGTH) throw invalid(`${field}: longer than ${MAX_PEM_LENGTH} characters`);
  const malformed = (): ServiceError => invalid(`${field}: has an unterminated or malformed PEM block`);
  const blocks: PemBlock[] = [];
  let pos = 0;
  for (let b = text.indexOf(BEGIN); b >= 0; b = text.indexOf(BEGIN, pos)) {
    // Between blocks (and after the last) no BEGIN can remain, the loop found them all; an END can.
    if (text.slice(pos, b).includes(END)) throw malformed();
    const beginEnd = text.indexOf(DASHES, b + BEGIN.length);
    const e = beginEnd < 0 ? -1 : text.indexOf(END, beginEnd + DASHES.length);
    const endEnd = e < 0 ? -1 : text.indexOf(DASHES, e + END.length);
    if (endEnd < 0) throw malformed();
    const begin = text.slice(b + BEGIN.length, beginEnd);
    const end = text.slice(e + END.length, endEnd);
    if (!LABEL.test(begin) || !LABEL.test(end)) throw malformed();
    const body = text.slice(beginEnd + DASHES.length, e);
    pos = endEnd + DASHES.length;
    const n = blocks.length + 1;
    if (begin !== end) throw invalid(`${field}: PEM block ${n} begins with "${begin.slice(0, 64)}" but ends with "${end.slice(0, 64)}"`);
    if (body.includes(':')) throw invalid(`${field}: PEM block ${n} has headers; encrypted or legacy PEM is not supported`);
    const b64 = body.replace(/[\s]+/g, '');
    if (b64.length === 0 || b64.length % 4 !== 0 || !BASE64_BODY.test(b64)) {
      throw invalid(`${field}: PEM block ${n} ("${begin.slice(0, 64)}") is not valid base64`);
    }
    blocks.push({ label: begin, der: Buffer.from(b64, 'base64') });
  }
  if (text.slice(pos).includes(END)) throw malformed();
  if (blocks.length === 0) throw invalid(`${field}: no PEM block found`);
  return blocks;
}

export function toPem(label: string, der: Uint8Array): string {
  const b64 = Buffer.from(der).toString('base64');
  return `-----BEGIN ${label}-----\n${b64.replace(/(.{64})/g, '$1\n').replace(/\n$/, '')}\n-----END ${label}-----\n`;
}
