import { invalid } from '../errors.js';

/** PEM (RFC 7468) reading and writing. */

export const MAX_PEM_LENGTH = 256 * 1024;

export interface PemBlock {
  readonly label: string;
  readonly der: Buffer;
}

const BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END ([A-Z0-9 ]+)-----/g;
const BASE64_BODY = /^[A-Za-z0-9+/]*={0,2}$/;

/**
 * The PEM blocks of `text`, in order. Text outside blocks is ignored (RFC 7468 explanatory
 * text, e.g. openssl's "subject=" lines). Anything malformed is INVALID_ARGUMENT naming `field`.
 */
export function pemBlocks(text: unknown, field: string): PemBlock[] {
  if (typeof text !== 'string') throw invalid(`${field}: must be a PEM string`);
  if (text.length > MAX_PEM_LENGTH) throw invalid(`${field}: longer than ${MAX_PEM_LENGTH} characters`);
  const blocks: PemBlock[] = [];
  let outside = '';
  let last = 0;
  for (const m of text.matchAll(BLOCK)) {
    outside += text.slice(last, m.index);
    last = m.index + m[0].length;
    const [, begin, body = '', end] = m;
    const n = blocks.length + 1;
    if (begin !== end) throw invalid(`${field}: PEM block ${n} begins with "${begin}" but ends with "${end}"`);
    if (body.includes(':')) throw invalid(`${field}: PEM block ${n} has headers; encrypted or legacy PEM is not supported`);
    const b64 = body.replace(/[\s]+/g, '');
    if (b64.length === 0 || b64.length % 4 !== 0 || !BASE64_BODY.test(b64)) {
      throw invalid(`${field}: PEM block ${n} ("${begin}") is not valid base64`);
    }
    blocks.push({ label: begin!, der: Buffer.from(b64, 'base64') });
  }
  outside += text.slice(last);
  if (/-----(BEGIN|END) /.test(outside)) throw invalid(`${field}: has an unterminated or malformed PEM block`);
  if (blocks.length === 0) throw invalid(`${field}: no PEM block found`);
  return blocks;
}

export function toPem(label: string, der: Uint8Array): string {
  const b64 = Buffer.from(der).toString('base64');
  return `-----BEGIN ${label}-----\n${b64.replace(/(.{64})/g, '$1\n').replace(/\n$/, '')}\n-----END ${label}-----\n`;
}
