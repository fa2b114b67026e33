import { z } from 'zod';
import { KEY_SPECS, SIGNING_ALGORITHMS } from '../../crypto/algorithms.js';
import { ERROR_CODES, type ErrorCode } from '../../errors.js';
import { REVOCATION_REASONS, type RevocationReason } from '../../inventory/CertificateInventory.js';

/**
 * The response bodies, for /openapi.json (openapi.ts) and for the handlers' types. They are not
 * checked at run time (a cost on every answer); test/integration/openapiConformance.test.ts
 * validates real answers against the document instead. Objects are closed: a field added to an
 * answer and not here fails that test.
 */

const base64 = z.string().meta({ contentEncoding: 'base64', description: 'standard base64 with padding' });
const version = z.number().int().min(1);
const pem = (what: string) => z.string().meta({ description: `${what} (PEM)` });

export const errorBody = z.object({
  error: z.object({
    code: z.enum(Object.keys(ERROR_CODES) as [ErrorCode, ...ErrorCode[]]),
    message: z.string().meta({ description: 'a sentence naming the field or the cause; never a secret' }),
    requestId: z.string().meta({ description: 'the X-Request-Id of the answer' }),
  }),
});

export const keyInfo = z.object({
  name: z.string(),
  currentVersion: version,
  keySpec: z.enum(KEY_SPECS),
  signingAlgorithms: z.array(z.enum(SIGNING_ALGORITHMS)),
  versions: z.array(
    z.object({
      version,
      keySpec: z.enum(KEY_SPECS),
      publicKeyPem: pem('SubjectPublicKeyInfo'),
      hasCertificate: z.boolean().meta({ description: 'a CA certificate is attached to this version (PUT .../certificate)' }),
      usable: z.boolean().meta({
        description:
          "false when the worker that answered found it cannot sign with this version (the service's HSM user may not use the key: on CloudHSM, not shared with it); learned from signing and a probe of each new version, per worker",
      }),
      unusableReason: z.string().optional().meta({ description: 'when usable is false: the PKCS#11 return code, e.g. CKR_KEY_FUNCTION_NOT_PERMITTED' }),
    }),
  ),
});
export type KeyInfoJson = z.output<typeof keyInfo>;

export const keyList = z.object({ keys: z.array(keyInfo) });

const b64url = z.string().regex(/^[A-Za-z0-9_-]+$/);
const jwkTail = { kid: z.string().meta({ description: '{name}/v{version}' }), use: z.literal('sig') };
export const jwks = z.object({
  keys: z.array(
    z.union([
      z.object({ kty: z.literal('EC'), crv: z.enum(['P-256', 'P-384']), x: b64url, y: b64url, ...jwkTail }),
      z.object({ kty: z.literal('RSA'), n: b64url, e: b64url, ...jwkTail }),
    ]),
  ),
});

export const signResponse = z.object({ keyName: z.string(), keyVersion: version, algorithm: z.enum(SIGNING_ALGORITHMS), signature: base64 });
export type SignResponseJson = z.output<typeof signResponse>;

export const verifyResponse = z.object({
  valid: z.boolean().meta({ description: 'false for a wrong signature (not an error)' }),
  keyVersion: version,
});

export const batchResponse = z.object({
  results: z.array(
    z.union([signResponse, z.object({ error: z.object({ code: z.enum(Object.keys(ERROR_CODES) as [ErrorCode, ...ErrorCode[]]), message: z.string() }) })]),
  ),
});

export const csrResponse = z.object({ csrPem: pem('PKCS#10, signed by the key on the HSM'), keyVersion: version });

export const certificateResponse = z.object({
  certificatePem: pem("the key version's certificate"),
  chainPem: pem('its issuer, then that one’s chain'),
  keyVersion: version,
});

/** One form in every answer: as openssl and node:crypto print a serial number. */
const serialNumber = z
  .string()
  .regex(/^(?:[0-9A-F]{2})+$/)
  .meta({ description: 'upper-case hex in whole bytes, as `openssl x509 -serial` prints it' });

export const issueResponse = z.object({
  certificatePem: pem('the certificate'),
  chainPem: pem('the issuer certificate, then its chain'),
  serialNumber,
  notBefore: z.iso.datetime(),
  notAfter: z.iso.datetime(),
  issuerKeyVersion: version,
});

export const revokeResponse = z.object({
  serialNumber,
  issuerKeyVersion: version,
  revokedAt: z.iso.datetime().meta({ description: 'the first revocation (a repeat keeps it)' }),
  reason: z.enum(Object.keys(REVOCATION_REASONS) as [RevocationReason, ...RevocationReason[]]),
  revokedNow: z.boolean().meta({ description: 'false when it was already revoked (the request is idempotent)' }),
});

export const issuedCertificate = z.object({
  serialNumber,
  issuerKeyVersion: version,
  subject: z.string().meta({ description: 'RFC 4514' }),
  subjectAltNames: z.array(z.string()).meta({ description: 'each as dns:, ip:, email: or uri: followed by the value' }),
  profile: z.string(),
  notBefore: z.iso.datetime(),
  notAfter: z.iso.datetime(),
  sha256: z
    .string()
    .regex(/^[0-9a-f]{64}$/)
    .meta({ description: "SHA-256 of the certificate's DER, lower-case hex" }),
  certificatePem: pem('the certificate'),
  status: z.enum(['valid', 'revoked', 'expired']).meta({ description: 'expired: notAfter has passed and it is not revoked' }),
  revocation: z
    .object({ revokedAt: z.iso.datetime(), reason: z.string().meta({ description: 'RFC 5280 CRLReason name, e.g. keyCompromise' }) })
    .optional()
    .meta({ description: 'present when revoked' }),
  issuedAt: z.iso.datetime(),
  clientId: z.string().optional().meta({ description: 'the authenticated client that asked (absent when auth is off)' }),
});
export type IssuedCertificateJson = z.output<typeof issuedCertificate>;

export const issuedCertificateList = z.object({
  certificates: z.array(issuedCertificate).meta({ description: 'in issue order' }),
  nextCursor: z.string().optional().meta({ description: 'pass as cursor for the next page; absent on the last page' }),
});

/** Operations endpoints: open (passthrough) objects, so that a detail added for operators is not a breaking change. */
export const liveness = z.looseObject({ status: z.string(), reason: z.string().optional() });

const count = z.number().int().min(0);
export const readiness = z.looseObject({
  status: z.enum(['ready', 'unavailable']),
  reason: z.string().optional(),
  worker: z.object({ id: count, pid: count }).meta({ description: 'the cluster worker that answered (id 0: no cluster)' }),
  sessions: z.object({ inUse: count, idle: count, waiting: count, max: count }),
  callsInFlight: count,
  keys: count,
  breaker: z.enum(['closed', 'open', 'halfOpen']),
  recoveries: count,
  threads: z.object({ configured: count, running: count, reason: z.string().optional() }),
  audit: z.enum(['ok', 'unavailable']).optional(),
  inventory: z.enum(['ok', 'unavailable']).optional().meta({
    description:
      "the certificate inventory (ISSUANCE_DB), as this worker's last open or operation of it left it (no database call of its own); absent without ISSUANCE_DB; the worker stays ready (signing goes on)",
  }),
  unusableKeyVersions: z
    .array(z.object({ name: z.string(), version, reason: z.string() }))
    .optional()
    .meta({ description: 'key versions this worker cannot sign with; the worker stays ready (other keys sign)' }),
});

export const openapiDocument = z.looseObject({ openapi: z.string(), info: z.looseObject({}), paths: z.record(z.string(), z.unknown()) });
