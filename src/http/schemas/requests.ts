import { z } from 'zod';
import { isSigningAlgorithm, SIGNING_ALGORITHMS } from '../../crypto/algorithms.js';
import { KEY_NAME_PATTERN } from '../../hsm/keyLabel.js';
import { MAX_PATH_LENGTH } from '../../pki/createCsr.js';
import { CERTIFICATE_PROFILES, MAX_VALIDITY_DAYS } from '../../pki/issueCertificate.js';
import { MAX_SAN_ENTRIES } from '../../pki/subjectAltNames.js';
import { REVOCATION_REASONS, type RevocationReason } from '../../inventory/CertificateInventory.js';

/**
 * The request bodies as validation.ts and the routers check them, and as /openapi.json documents
 * them (openapi.ts converts these with z.toJSONSchema). What JSON Schema cannot see in a zod
 * refine is stated next to it with .meta(), which only the document reads.
 */

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Standard base64 with padding (RFC 4648 §4); anything else is a 400 naming the field. */
const base64 = z
  .string()
  .regex(BASE64, 'must be standard base64 with padding')
  .transform((s) => Buffer.from(s, 'base64'))
  .meta({ contentEncoding: 'base64', description: 'standard base64 with padding' });

// A refine, so that a non-string keeps zod's "must be a string"; the document lists the values.
const algorithm = z
  .string()
  .refine(isSigningAlgorithm, { message: `must be one of ${SIGNING_ALGORITHMS.join(', ')}` })
  .meta({ enum: [...SIGNING_ALGORITHMS] });
export const keyVersion = z.number().int().min(1).max(999_999_999);
const signatureFormat = z.enum(['der', 'raw']);

const signFields = {
  algorithm,
  message: base64.optional().meta({ description: 'the message, standard base64; the service hashes it (send exactly one of message and digest)' }),
  digest: base64.optional().meta({ description: "the digest, standard base64, of the algorithm's hash length (send exactly one of message and digest)" }),
  keyVersion: keyVersion.optional().meta({ description: 'default: the current version' }),
  signatureFormat: signatureFormat.optional().meta({ description: 'ECDSA only: der (X9.62, the default) or raw r||s (as JWS wants it)' }),
};

const exactlyOne = (v: { message?: unknown; digest?: unknown }): boolean => (v.message === undefined) !== (v.digest === undefined);
const oneOfMessage = { message: 'send exactly one of message and digest', path: ['message'] };
/** exactlyOne in JSON Schema: z.toJSONSchema drops refines, so the document gets this oneOf by hand. */
const exactlyOneInDocument = { oneOf: [{ required: ['message'] }, { required: ['digest'] }] };

export const signBody = z.strictObject(signFields).refine(exactlyOne, oneOfMessage).meta(exactlyOneInDocument);
export const verifyBody = z
  .strictObject({ ...signFields, signature: base64 })
  .refine(exactlyOne, oneOfMessage)
  .meta(exactlyOneInDocument);
export const batchItem = z
  .strictObject({ ...signFields, keyName: z.string().meta({ pattern: KEY_NAME_PATTERN.source }) })
  .refine(exactlyOne, oneOfMessage)
  .meta(exactlyOneInDocument);
const batchSize = 'must hold 1 to 256 items';
/** Items are checked one by one (parseBatch), so that one malformed item is answered in its place and fails alone. */
export const batchBody = z.strictObject({ requests: z.array(z.unknown()).min(1, batchSize).max(256, batchSize) });
/** The batch as the document shows it: batchBody with the items batchItem checks. */
export const batchBodyDocument = batchBody.extend({ requests: z.array(batchItem).min(1, batchSize).max(256, batchSize) });

// PKI bodies: shapes only. Names, PEM and SANs are checked by the PKI layer, whose messages name the exact element.
const sans = z.unknown().optional();
const days = `must be an integer from 1 to ${MAX_VALIDITY_DAYS}`;
const pathLength = `must be an integer from 0 to ${MAX_PATH_LENGTH}`;

export const csrBody = z.strictObject({
  subject: z.string().meta({ description: 'RFC 4514, e.g. CN=Issuing CA,O=Example,C=US' }),
  keyVersion: keyVersion.optional().meta({ description: 'default: the current version' }),
  ca: z
    .strictObject({ pathLength: z.number().int(pathLength).min(0, pathLength).max(MAX_PATH_LENGTH, pathLength).optional() })
    .optional()
    .meta({ description: 'request a CA certificate' }),
  subjectAltNames: sans,
});

export const attachBody = z.strictObject({
  certificatePem: z.string().meta({ description: "the key version's CA certificate (PEM)" }),
  chainPem: z.string().optional().meta({ description: "its issuer, that one's issuer, ... (PEM; the root may be left out)" }),
  keyVersion: keyVersion.optional().meta({ description: 'default: the current version' }),
});

export const issueBody = z.strictObject({
  csrPem: z.string().meta({ description: 'PKCS#10 (PEM)' }),
  profile: z.enum(CERTIFICATE_PROFILES, { error: `must be one of ${CERTIFICATE_PROFILES.join(', ')}` }),
  validityDays: z.number().int(days).min(1, days).max(MAX_VALIDITY_DAYS, days).meta({ description: "must end before the issuer's notAfter" }),
  subjectAltNames: sans,
});

export const revokeBody = z.strictObject({
  reason: z
    .enum(Object.keys(REVOCATION_REASONS) as [RevocationReason, ...RevocationReason[]], {
      error: `must be one of ${Object.keys(REVOCATION_REASONS).join(', ')}`,
    })
    .meta({ description: 'RFC 5280 CRLReason' }),
});

/** The shape parseSubjectAltNames (src/pki) checks by hand; for the document only. */
export const subjectAltNamesDocument = z.strictObject(
  Object.fromEntries(['dns', 'ip', 'email', 'uri'].map((k) => [k, z.array(z.string()).max(MAX_SAN_ENTRIES).optional()])),
);
export const csrBodyDocument = csrBody.extend({ subjectAltNames: subjectAltNamesDocument.optional() });
export const issueBodyDocument = issueBody.extend({ subjectAltNames: subjectAltNamesDocument.optional() });

/** Path and query parameters (validation.ts checks them by hand, with these limits). */
export const keyNameParameter = z.string().regex(KEY_NAME_PATTERN);
export const keyVersionQuery = keyVersion;

/** GET /v1/keys/{name}/certificates: the query (parseListQuery checks it, naming the field). */
export const CERTIFICATE_STATUSES = ['valid', 'revoked', 'expired'] as const;
export const DEFAULT_LIST_LIMIT = 100;
export const MAX_LIST_LIMIT = 1000;
export const certificateStatusQuery = z.enum(CERTIFICATE_STATUSES);
export const expiresBeforeQuery = z.iso.datetime({ offset: true }).meta({ description: 'RFC 3339 date-time, e.g. 2027-01-01T00:00:00Z' });
export const limitQuery = z.coerce.number().int().min(1).max(MAX_LIST_LIMIT);
export const cursorQuery = z.string().min(1).max(512).meta({ description: "the previous page's nextCursor (opaque)" });
/** A serial number in hex, any case, leading zeros allowed (as openssl or a browser may show it). */
export const SERIAL_PATTERN = /^[0-9A-Fa-f]{1,64}$/;
export const serialParameter = z.string().regex(SERIAL_PATTERN);
