import { Router } from 'express';
import { KEY_SPECS, SIGNING_ALGORITHMS } from '../crypto/algorithms.js';
import { ERROR_CODES } from '../errors.js';
import { MAX_PATH_LENGTH } from '../pki/createCsr.js';
import { CERTIFICATE_PROFILES, MAX_VALIDITY_DAYS } from '../pki/issueCertificate.js';
import { MAX_SAN_ENTRIES } from '../pki/subjectAltNames.js';

/** The OpenAPI 3 document of the v1 contract, built from the same tables the code uses. */
const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const json = (schema: object) => ({ content: { 'application/json': { schema } } });
const b64 = { type: 'string', format: 'byte', description: 'standard base64 with padding' };
const errorResponses = (...codes: (keyof typeof ERROR_CODES)[]) =>
  Object.fromEntries(
    [...new Set(codes.map((c) => ERROR_CODES[c].status))].map((status) => [
      String(status),
      {
        description: codes
          .filter((c) => ERROR_CODES[c].status === status)
          .map((c) => `${c}: ${ERROR_CODES[c].description}`)
          .join(' '),
        ...json(ref('Error')),
      },
    ]),
  );
const nameParam = { name: 'name', in: 'path', required: true, schema: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' } };
const versionQuery = { name: 'keyVersion', in: 'query', required: false, schema: { type: 'integer', minimum: 1 } };
const hsmErrors = [
  'INVALID_ARGUMENT',
  'UNAUTHENTICATED',
  'PERMISSION_DENIED',
  'NOT_FOUND',
  'PAYLOAD_TOO_LARGE',
  'UNSUPPORTED_MEDIA_TYPE',
  'RESOURCE_EXHAUSTED',
  'HSM_UNAVAILABLE',
  'DEADLINE_EXCEEDED',
  'INTERNAL',
] as const;
/** Operations that leave an audit record (AUDIT_LOG): answered only once it is written. */
const audited = [...hsmErrors, 'AUDIT_UNAVAILABLE'] as const;

const signFields = {
  algorithm: { type: 'string', enum: SIGNING_ALGORITHMS },
  message: { ...b64, description: 'the message; the service hashes it (exactly one of message and digest)' },
  digest: { ...b64, description: "the digest, of the algorithm's hash length" },
  keyVersion: { type: 'integer', minimum: 1, description: 'default: the current version' },
  signatureFormat: { type: 'string', enum: ['der', 'raw'], description: 'ECDSA only: der (X9.62, default) or raw r||s' },
};

export const OPENAPI_DOCUMENT = {
  openapi: '3.0.3',
  info: { title: 'hsm-signer', version: '1', description: 'Sign and verify with keys held in a PKCS#11 HSM; intermediate-CA operations on the HSM.' },
  components: {
    securitySchemes: {
      bearer: {
        type: 'http',
        scheme: 'bearer',
        description:
          'on /v1 when a CLIENTS_FILE is configured; or instead (or as well, naming the same client) a TLS client certificate verified against TLS_CLIENT_CA_FILE',
      },
    },
    schemas: {
      Error: {
        type: 'object',
        required: ['error'],
        properties: {
          error: {
            type: 'object',
            required: ['code', 'message', 'requestId'],
            properties: { code: { type: 'string', enum: Object.keys(ERROR_CODES) }, message: { type: 'string' }, requestId: { type: 'string' } },
          },
        },
      },
      KeyInfo: {
        type: 'object',
        properties: {
          name: { type: 'string' },
          currentVersion: { type: 'integer' },
          keySpec: { type: 'string', enum: KEY_SPECS },
          signingAlgorithms: { type: 'array', items: { type: 'string', enum: SIGNING_ALGORITHMS } },
          versions: {
            type: 'array',
            items: {
              type: 'object',
              properties: {
                version: { type: 'integer' },
                keySpec: { type: 'string', enum: KEY_SPECS },
                publicKeyPem: { type: 'string' },
                hasCertificate: { type: 'boolean' },
              },
            },
          },
        },
      },
      SignRequest: { type: 'object', additionalProperties: false, required: ['algorithm'], properties: signFields },
      VerifyRequest: { type: 'object', additionalProperties: false, required: ['algorithm', 'signature'], properties: { ...signFields, signature: b64 } },
      SignResponse: {
        type: 'object',
        properties: { keyName: { type: 'string' }, keyVersion: { type: 'integer' }, algorithm: { type: 'string' }, signature: b64 },
      },
      SubjectAltNames: {
        type: 'object',
        additionalProperties: false,
        properties: Object.fromEntries(['dns', 'ip', 'email', 'uri'].map((k) => [k, { type: 'array', items: { type: 'string' }, maxItems: MAX_SAN_ENTRIES }])),
      },
      CsrRequest: {
        type: 'object',
        additionalProperties: false,
        required: ['subject'],
        properties: {
          subject: { type: 'string', description: 'RFC 4514, e.g. CN=Issuing CA,O=Example,C=US' },
          keyVersion: { type: 'integer', minimum: 1, description: 'default: the current version' },
          ca: {
            type: 'object',
            additionalProperties: false,
            properties: { pathLength: { type: 'integer', minimum: 0, maximum: MAX_PATH_LENGTH } },
            description: 'request a CA certificate',
          },
          subjectAltNames: ref('SubjectAltNames'),
        },
      },
      AttachRequest: {
        type: 'object',
        additionalProperties: false,
        required: ['certificatePem'],
        properties: {
          certificatePem: { type: 'string', description: "the key version's CA certificate (PEM)" },
          chainPem: { type: 'string', description: "its issuer, that one's issuer, ... (PEM; the root may be left out)" },
          keyVersion: { type: 'integer', minimum: 1, description: 'default: the current version' },
        },
      },
      IssueRequest: {
        type: 'object',
        additionalProperties: false,
        required: ['csrPem', 'profile', 'validityDays'],
        properties: {
          csrPem: { type: 'string' },
          profile: { type: 'string', enum: CERTIFICATE_PROFILES },
          validityDays: { type: 'integer', minimum: 1, maximum: MAX_VALIDITY_DAYS, description: "must end before the issuer's notAfter" },
          subjectAltNames: ref('SubjectAltNames'),
        },
      },
      IssueResponse: {
        type: 'object',
        properties: {
          certificatePem: { type: 'string' },
          chainPem: { type: 'string', description: 'the issuer certificate, then its chain' },
          serialNumber: { type: 'string', description: 'upper-case hex' },
          notBefore: { type: 'string', format: 'date-time' },
          notAfter: { type: 'string', format: 'date-time' },
          issuerKeyVersion: { type: 'integer' },
        },
      },
      BatchRequest: {
        type: 'object',
        required: ['requests'],
        properties: {
          requests: {
            type: 'array',
            minItems: 1,
            maxItems: 256,
            items: { type: 'object', required: ['keyName', 'algorithm'], properties: { keyName: { type: 'string' }, ...signFields } },
          },
        },
      },
    },
  },
  security: [{ bearer: [] }],
  paths: {
    '/healthz': { get: { summary: 'liveness', security: [], responses: { 200: { description: 'the process serves' } } } },
    '/readyz': {
      get: {
        summary: 'readiness: HSM answers, sessions available, breaker not open, audit log (if any) writable',
        security: [],
        responses: { 200: { description: 'ready' }, 503: { description: 'unavailable, with a reason' } },
      },
    },
    '/metrics': {
      get: {
        summary: 'Prometheus metrics (all workers); in production on its own listener (METRICS_HOST:METRICS_PORT), not this port',
        security: [],
        responses: { 200: { description: 'text format' } },
      },
    },
    '/openapi.json': { get: { summary: 'this document', security: [], responses: { 200: { description: 'OpenAPI 3' } } } },
    '/v1/keys': {
      get: {
        summary: 'list keys',
        responses: {
          200: { description: 'keys', ...json({ type: 'object', properties: { keys: { type: 'array', items: ref('KeyInfo') } } }) },
          ...errorResponses(...hsmErrors),
        },
      },
    },
    '/v1/keys/{name}': {
      get: {
        summary: 'one key',
        parameters: [nameParam],
        responses: { 200: { description: 'key', ...json(ref('KeyInfo')) }, ...errorResponses(...hsmErrors) },
      },
    },
    '/v1/keys/{name}/jwks': {
      get: {
        summary: 'public keys as JWKs, kid = name/vN',
        parameters: [nameParam],
        responses: { 200: { description: 'JWK set' }, ...errorResponses(...hsmErrors) },
      },
    },
    '/v1/keys/{name}/sign': {
      post: {
        summary: 'sign a message or digest',
        parameters: [nameParam],
        requestBody: json(ref('SignRequest')),
        responses: { 200: { description: 'signature', ...json(ref('SignResponse')) }, ...errorResponses(...audited, 'OVERLOADED') },
      },
    },
    '/v1/keys/{name}/verify': {
      post: {
        summary: 'verify a signature (a wrong one is valid:false)',
        parameters: [nameParam],
        requestBody: json(ref('VerifyRequest')),
        responses: {
          200: { description: 'result', ...json({ type: 'object', properties: { valid: { type: 'boolean' }, keyVersion: { type: 'integer' } } }) },
          ...errorResponses(...audited, 'OVERLOADED'),
        },
      },
    },
    '/v1/sign/batch': {
      post: {
        summary: "sign 1 to 256 items; each result is a signature or that item's error",
        requestBody: json(ref('BatchRequest')),
        responses: { 200: { description: 'results in request order' }, ...errorResponses(...audited) },
      },
    },
    '/v1/keys/{name}/csr': {
      post: {
        summary: 'PKCS#10 CSR signed by the key on the HSM',
        parameters: [nameParam],
        requestBody: json(ref('CsrRequest')),
        responses: {
          200: { description: 'the CSR', ...json({ type: 'object', properties: { csrPem: { type: 'string' }, keyVersion: { type: 'integer' } } }) },
          ...errorResponses(...audited),
        },
      },
    },
    '/v1/keys/{name}/certificate': {
      put: {
        summary: "attach the key version's CA certificate and chain (stored on the token)",
        parameters: [nameParam],
        requestBody: json(ref('AttachRequest')),
        responses: { 204: { description: 'stored on the token' }, ...errorResponses(...audited, 'CONFLICT') },
      },
      get: {
        summary: "the key version's certificate and chain",
        parameters: [nameParam, versionQuery],
        responses: {
          200: {
            description: 'certificate and chain',
            ...json({ type: 'object', properties: { certificatePem: { type: 'string' }, chainPem: { type: 'string' }, keyVersion: { type: 'integer' } } }),
          },
          ...errorResponses(...hsmErrors),
        },
      },
    },
    '/v1/keys/{name}/certificates': {
      post: {
        summary: 'issue a certificate from a CSR with a profile, signed by the newest key version that has a certificate',
        parameters: [nameParam],
        requestBody: json(ref('IssueRequest')),
        responses: { 201: { description: 'the certificate', ...json(ref('IssueResponse')) }, ...errorResponses(...audited, 'CONFLICT') },
      },
    },
  },
};

export function openapiRouter(): Router {
  const r = Router();
  r.get('/openapi.json', (_req, res) => {
    res.json(OPENAPI_DOCUMENT);
  });
  return r;
}
