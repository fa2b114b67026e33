import type { z } from 'zod';
import { invalid, type ServiceError } from '../errors.js';
import { isKeyName } from '../hsm/keyLabel.js';
import { canonicalSerial } from '../pki/serialNumber.js';
import type { SignInput, VerifyInput } from '../service/SigningService.js';
import type { ListIssuedInput } from '../service/PkiService.js';
import {
  batchBody,
  batchItem,
  CERTIFICATE_STATUSES,
  certificateStatusQuery,
  cursorQuery,
  DEFAULT_LIST_LIMIT,
  expiresBeforeQuery,
  limitQuery,
  MAX_LIST_LIMIT,
  SERIAL_PATTERN,
  signBody,
  verifyBody,
} from './schemas/requests.js';

function describe(error: z.ZodError, prefix = ''): string {
  const issue = error.issues[0];
  // zod reports at least one issue on failure; without one the request is still refused (400), without the detail.
  if (issue === undefined) return `${prefix || 'body'}: is not valid`;
  const path = [prefix, ...issue.path.map(String)].filter(Boolean).join('.') || 'body';
  if (issue.code === 'unrecognized_keys') return `${path}: unknown field(s) ${issue.keys.map((k) => `'${k}'`).join(', ')}`;
  if (issue.code === 'invalid_type')
    return `${path}: must be ${issue.expected === 'object' && !prefix && path === 'body' ? 'a JSON object' : `a ${issue.expected}`}`;
  return `${path}: ${issue.message}`;
}

function parse<T>(schema: z.ZodType<T>, body: unknown, prefix = ''): T {
  const r = schema.safeParse(body);
  if (!r.success) throw invalid(describe(r.error, prefix));
  return r.data;
}

/** A body checked against a (strict) schema: the first problem is a 400 naming the field. */
export function parseBody<T>(schema: z.ZodType<T>, body: unknown): T {
  return parse(schema, body);
}

export function keyName(value: unknown, field = 'name'): string {
  if (!isKeyName(value)) throw invalid(`${field}: must be 1 to 64 characters of A-Z a-z 0-9 . _ - starting with a letter or digit`);
  return value;
}

type Parsed = z.infer<typeof signBody>;
const toSignInput = (name: string, b: Parsed): SignInput => ({
  keyName: name,
  algorithm: b.algorithm as SignInput['algorithm'],
  ...(b.message !== undefined ? { message: b.message } : {}),
  ...(b.digest !== undefined ? { digest: b.digest } : {}),
  ...(b.keyVersion !== undefined ? { keyVersion: b.keyVersion } : {}),
  ...(b.signatureFormat !== undefined ? { signatureFormat: b.signatureFormat } : {}),
});

export function parseSign(name: string, body: unknown): SignInput {
  return toSignInput(name, parse(signBody, body));
}

export function parseVerify(name: string, body: unknown): VerifyInput {
  const b = parse(verifyBody, body);
  return { ...toSignInput(name, b), signature: b.signature };
}

/** The batch, with each malformed item replaced by its own error (one bad item does not fail the rest). */
export function parseBatch(body: unknown): (SignInput | ServiceError)[] {
  const { requests } = parse(batchBody, body);
  return requests.map((item, i) => {
    try {
      const b = parse(batchItem, item, `requests[${i}]`);
      return toSignInput(keyName(b.keyName, `requests[${i}].keyName`), b);
    } catch (e) {
      return e as ServiceError;
    }
  });
}

export function parseKeyVersionQuery(value: unknown): number | undefined {
  if (value === undefined) return undefined;
  const n = typeof value === 'string' && /^[1-9][0-9]{0,8}$/.test(value) ? Number(value) : NaN;
  if (Number.isNaN(n)) throw invalid('keyVersion: must be a positive integer');
  return n;
}

/** One query parameter's value: a string given once, or undefined. */
function single(query: Record<string, unknown>, field: string): string | undefined {
  const v = query[field];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw invalid(`${field}: must be given once`);
  return v;
}

/** GET /v1/keys/{name}/certificates?status=&expiresBefore=&limit=&cursor= */
export function parseListQuery(query: Record<string, unknown>): ListIssuedInput {
  const status = single(query, 'status');
  const expiresBefore = single(query, 'expiresBefore');
  const limit = single(query, 'limit');
  const cursor = single(query, 'cursor');
  if (status !== undefined && !certificateStatusQuery.safeParse(status).success) throw invalid(`status: must be one of ${CERTIFICATE_STATUSES.join(', ')}`);
  if (expiresBefore !== undefined && !expiresBeforeQuery.safeParse(expiresBefore).success) {
    throw invalid('expiresBefore: must be an RFC 3339 date-time, e.g. 2027-01-01T00:00:00Z');
  }
  if (limit !== undefined && (!/^[0-9]{1,4}$/.test(limit) || !limitQuery.safeParse(limit).success)) {
    throw invalid(`limit: must be an integer from 1 to ${MAX_LIST_LIMIT}`);
  }
  if (cursor !== undefined && !cursorQuery.safeParse(cursor).success) throw invalid("cursor: must be the previous page's nextCursor");
  return {
    limit: limit !== undefined ? Number(limit) : DEFAULT_LIST_LIMIT,
    ...(status !== undefined ? { status: status as ListIssuedInput['status'] & string } : {}),
    ...(expiresBefore !== undefined ? { expiresBefore: new Date(expiresBefore) } : {}),
    ...(cursor !== undefined ? { cursor } : {}),
  };
}

/** A serial number in hex, any case, leading zeros tolerated -> upper-case without leading zeros, as the inventory keeps it. */
export function parseSerial(value: unknown, field = 'serial'): string {
  if (typeof value !== 'string' || !SERIAL_PATTERN.test(value)) throw invalid(`${field}: must be the serial number in hex (1 to 64 digits 0-9 A-F)`);
  return canonicalSerial(value);
}
