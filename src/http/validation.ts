import { z } from 'zod';
import { isSigningAlgorithm, SIGNING_ALGORITHMS } from '../crypto/algorithms.js';
import { invalid, type ServiceError } from '../errors.js';
import { isKeyName } from '../hsm/keyLabel.js';
import type { SignInput, VerifyInput } from '../service/SigningService.js';

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Standard base64 with padding (RFC 4648 §4); anything else is a 400 naming the field. */
const base64 = z
  .string()
  .regex(BASE64, 'must be standard base64 with padding')
  .transform((s) => Buffer.from(s, 'base64'));

const algorithm = z.string().refine(isSigningAlgorithm, { message: `must be one of ${SIGNING_ALGORITHMS.join(', ')}` });
export const keyVersion = z.number().int().min(1).max(999_999_999);
const signatureFormat = z.enum(['der', 'raw']);

const signFields = {
  algorithm,
  message: base64.optional(),
  digest: base64.optional(),
  keyVersion: keyVersion.optional(),
  signatureFormat: signatureFormat.optional(),
};

const exactlyOne = (v: { message?: unknown; digest?: unknown }): boolean => (v.message === undefined) !== (v.digest === undefined);
const oneOfMessage = { message: 'send exactly one of message and digest', path: ['message'] };

const signBody = z.strictObject(signFields).refine(exactlyOne, oneOfMessage);
const verifyBody = z.strictObject({ ...signFields, signature: base64 }).refine(exactlyOne, oneOfMessage);
const batchItem = z.strictObject({ ...signFields, keyName: z.string() }).refine(exactlyOne, oneOfMessage);
const batchBody = z.strictObject({ requests: z.array(z.unknown()).min(1, 'must hold 1 to 256 items').max(256, 'must hold 1 to 256 items') });

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
