import { Router } from 'express';
import { z } from 'zod';
import { ERROR_CODES, type ErrorCode } from '../errors.js';
import {
  attachBody,
  batchBodyDocument,
  certificateStatusQuery,
  cursorQuery,
  DEFAULT_LIST_LIMIT,
  expiresBeforeQuery,
  limitQuery,
  serialParameter,
  csrBodyDocument,
  issueBodyDocument,
  keyNameParameter,
  revokeBody,
  keyVersionQuery,
  signBody,
  subjectAltNamesDocument,
  verifyBody,
} from './schemas/requests.js';
import {
  batchResponse,
  certificateResponse,
  csrResponse,
  errorBody,
  issueResponse,
  issuedCertificate,
  issuedCertificateList,
  jwks,
  keyInfo,
  keyList,
  liveness,
  openapiDocument,
  readiness,
  revokeResponse,
  signResponse,
  verifyResponse,
} from './schemas/responses.js';

/**
 * The OpenAPI 3.1 document of the API, generated from the zod schemas that validate the requests
 * (schemas/requests.ts) and describe the answers (schemas/responses.ts), and from ERROR_CODES.
 * `npm run openapi` writes it to docs/openapi.json; GET /openapi.json serves it.
 */

// Components: request bodies are converted as zod reads them (io: input: base64 text, not Buffers),
// answers as the handlers write them (io: output). A schema with an id here is a $ref in the document.
const requestSchemas = z.registry<{ id: string }>();
requestSchemas.add(signBody, { id: 'SignRequest' });
requestSchemas.add(verifyBody, { id: 'VerifyRequest' });
requestSchemas.add(batchBodyDocument, { id: 'BatchRequest' });
requestSchemas.add(csrBodyDocument, { id: 'CsrRequest' });
requestSchemas.add(attachBody, { id: 'AttachRequest' });
requestSchemas.add(issueBodyDocument, { id: 'IssueRequest' });
requestSchemas.add(subjectAltNamesDocument, { id: 'SubjectAltNames' });
requestSchemas.add(revokeBody, { id: 'RevokeRequest' });

const responseSchemas = z.registry<{ id: string }>();
responseSchemas.add(errorBody, { id: 'Error' });
responseSchemas.add(keyInfo, { id: 'KeyInfo' });
responseSchemas.add(keyList, { id: 'KeyList' });
responseSchemas.add(jwks, { id: 'JwkSet' });
responseSchemas.add(signResponse, { id: 'SignResponse' });
responseSchemas.add(verifyResponse, { id: 'VerifyResponse' });
responseSchemas.add(batchResponse, { id: 'BatchResponse' });
responseSchemas.add(csrResponse, { id: 'CsrResponse' });
responseSchemas.add(certificateResponse, { id: 'CertificateResponse' });
responseSchemas.add(issueResponse, { id: 'IssueResponse' });
responseSchemas.add(revokeResponse, { id: 'RevokeResponse' });
responseSchemas.add(issuedCertificate, { id: 'IssuedCertificate' });
responseSchemas.add(issuedCertificateList, { id: 'IssuedCertificateList' });
responseSchemas.add(liveness, { id: 'Liveness' });
responseSchemas.add(readiness, { id: 'Readiness' });
responseSchemas.add(openapiDocument, { id: 'OpenApiDocument' });

type RequestSchema = 'SignRequest' | 'VerifyRequest' | 'BatchRequest' | 'CsrRequest' | 'AttachRequest' | 'IssueRequest' | 'RevokeRequest';
type ResponseSchema =
  | 'KeyInfo'
  | 'KeyList'
  | 'JwkSet'
  | 'SignResponse'
  | 'VerifyResponse'
  | 'BatchResponse'
  | 'CsrResponse'
  | 'CertificateResponse'
  | 'IssueResponse'
  | 'RevokeResponse'
  | 'IssuedCertificate'
  | 'IssuedCertificateList'
  | 'Liveness'
  | 'Readiness'
  | 'OpenApiDocument';

const COMPONENT = '#/components/schemas/';

function componentsOf(registry: z.core.$ZodRegistry<{ id: string }>, io: 'input' | 'output'): Record<string, object> {
  const { schemas } = z.toJSONSchema(registry, { io, uri: (id) => `${COMPONENT}${id}` });
  // Each is a component of this document: its dialect is the document's (OpenAPI 3.1: JSON Schema 2020-12), its id its place.
  return Object.fromEntries(Object.entries(schemas).map(([id, { $schema: _dialect, $id: _id, ...schema }]) => [id, schema]));
}

/** One message each code really has (the code's own wording), for the examples. */
const ERROR_EXAMPLES: Record<ErrorCode, string> = {
  INVALID_ARGUMENT: 'digest: must be standard base64 with padding',
  UNAUTHENTICATED: 'Authorization: a Bearer token is required',
  PERMISSION_DENIED: "the client may not sign with key 'payments-ec'",
  NOT_FOUND: "no key named 'payments-ec'",
  CONFLICT: "certificatePem: the certificate's public key is not this key version's public key",
  PAYLOAD_TOO_LARGE: 'body: larger than the limit; send a digest instead of the message',
  REQUEST_TIMEOUT: 'request: not received within the time allowed',
  UNSUPPORTED_MEDIA_TYPE: 'body: Content-Type must be application/json',
  HEADERS_TOO_LARGE: 'headers: the request line and headers are over the size allowed',
  RESOURCE_EXHAUSTED: "client 'payments-api' already has 64 requests in flight (CLIENT_MAX_IN_FLIGHT); retry after Retry-After seconds",
  HSM_UNAVAILABLE: 'the HSM circuit breaker is open after repeated HSM failures; retry later',
  AUDIT_UNAVAILABLE: 'the audit log cannot be written (ENOSPC); no audited operation is answered until it can',
  INVENTORY_UNAVAILABLE: 'the certificate inventory (ISSUANCE_DB) is unavailable: record failed; retry later',
  INVENTORY_NOT_CONFIGURED: 'no certificate inventory: set ISSUANCE_DB (sqlite:<file> or postgres://...) to issue and list certificates',
  OVERLOADED: 'too many requests are waiting for an HSM session',
  DEADLINE_EXCEEDED: 'the request deadline passed before the HSM answered',
  INTERNAL: 'internal error; the request id identifies it in the logs',
};
const REQUEST_ID = '3f2b8c1e-5d4a-4e8b-9c3a-7f1d2e6b0a94';

// What any request may meet: a malformed request or X-Deadline-Ms (400), the server's own limits (408, 431), a bug (500).
const ANY: readonly ErrorCode[] = ['INVALID_ARGUMENT', 'REQUEST_TIMEOUT', 'HEADERS_TOO_LARGE', 'INTERNAL'];
// Every /v1 route: authentication, the per-client limit, the HSM (a key read may rescan the token) and the deadline.
const V1: readonly ErrorCode[] = [...ANY, 'UNAUTHENTICATED', 'RESOURCE_EXHAUSTED', 'HSM_UNAVAILABLE', 'OVERLOADED', 'DEADLINE_EXCEEDED'];
const ONE_KEY: readonly ErrorCode[] = [...V1, 'PERMISSION_DENIED', 'NOT_FOUND'];
// CRL and OCSP: no credentials, but the HSM signs (and the deadline applies).
const PUBLIC: readonly ErrorCode[] = [...ANY, 'HSM_UNAVAILABLE', 'OVERLOADED', 'DEADLINE_EXCEEDED'];
// A /v1 POST or PUT has a JSON body; the audited operations answer only once their record is written (AUDIT_LOG).
const BODY: readonly ErrorCode[] = ['PAYLOAD_TOO_LARGE', 'UNSUPPORTED_MEDIA_TYPE'];
const AUDITED: readonly ErrorCode[] = [...BODY, 'AUDIT_UNAVAILABLE'];
// What issues or reads the certificate inventory (ISSUANCE_DB).
const INVENTORY: readonly ErrorCode[] = ['INVENTORY_UNAVAILABLE', 'INVENTORY_NOT_CONFIGURED'];

interface Operation {
  readonly method: 'get' | 'post' | 'put';
  readonly path: string;
  readonly operationId: string;
  readonly summary: string;
  /** Open (no credential) or /v1 (bearer token or client certificate, when auth is on). */
  readonly open?: true;
  readonly keyVersionQuery?: true;
  /** Query parameters of components.parameters besides keyVersion. */
  readonly query?: readonly 'format'[];
  /** status, expiresBefore, limit, cursor (listing issued certificates). */
  readonly listQuery?: true;
  readonly request?: { readonly schema: RequestSchema; readonly example: object };
  /** A request body that is not JSON (OCSP): its media type. */
  readonly binaryRequest?: { readonly contentType: string; readonly description: string };
  readonly success: {
    readonly status: 200 | 201 | 204;
    readonly description: string;
    readonly schema?: ResponseSchema;
    /** Default application/json. */
    readonly contentType?: string;
    /** Further media types of a text or binary answer (`?format=pem`). */
    readonly alsoContentTypes?: readonly string[];
    readonly example?: unknown;
  };
  /** Other answers that are not errors of the registry (the health endpoints' 503). */
  readonly other?: { readonly status: number; readonly description: string; readonly schema: ResponseSchema; readonly example: object };
  /** A binary answer at an error status (OCSP's malformedRequest at 400), next to the registry's JSON errors of that status. */
  readonly binaryError?: { readonly status: number; readonly contentType: string; readonly description: string };
  readonly errors: readonly ErrorCode[];
}

const PUBLIC_KEY_PEM =
  '-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEv1YCkCzQV2V8YystH+wvWBWHxbyW\nci/5c2HObiTUgDtZ9DbmUGYSS6yPh7CSmf6Z/5olsHlEqjxQRGv7GuuI2Q==\n-----END PUBLIC KEY-----\n';
const SIGNATURE = 'MEQCIDANG+YyaswnaY9DoyyoPsH990lSQ5f6zIy/Z/LNAMkgAiBflU/PP9gHLQnf0kiXBHRemtYpMKs9zZQy2lyq0QFDzA==';
const CERT_PEM = '-----BEGIN CERTIFICATE-----\nMIIB8zCCAZmgAwIBAgIU...\n-----END CERTIFICATE-----\n';
const CHAIN_PEM = '-----BEGIN CERTIFICATE-----\nMIICGjCCAaCgAwIBAgIU...\n-----END CERTIFICATE-----\n';
const KEY_INFO = {
  name: 'payments-ec',
  currentVersion: 1,
  keySpec: 'ECC_NIST_P256',
  signingAlgorithms: ['ECDSA_SHA_256', 'ECDSA_SHA_384', 'ECDSA_SHA_512'],
  versions: [{ version: 1, keySpec: 'ECC_NIST_P256', publicKeyPem: PUBLIC_KEY_PEM, hasCertificate: false, usable: true }],
};
const ISSUED = {
  serialNumber: '5F1A0C93D2E4B7A81C6E',
  issuerKeyVersion: 1,
  subject: 'CN=api.example.com,O=Example',
  subjectAltNames: ['dns:api.example.com'],
  profile: 'tls-server',
  notBefore: '2027-01-15T09:55:00.000Z',
  notAfter: '2027-04-15T10:00:00.000Z',
  sha256: '3b1f6c1e0a7d4e2f9c8b5a4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f',
  certificatePem: CERT_PEM,
  status: 'valid',
  issuedAt: '2027-01-15T10:00:00.123Z',
  clientId: 'pki-job',
};
const SIGN = { keyName: 'payments-ec', keyVersion: 1, algorithm: 'ECDSA_SHA_256', signature: SIGNATURE };
const HEALTH_DETAILS = {
  worker: { id: 1, pid: 4242 },
  sessions: { inUse: 0, idle: 4, waiting: 0, max: 16 },
  callsInFlight: 0,
  keys: 3,
  breaker: 'closed',
  recoveries: 0,
  threads: { configured: 2, running: 2 },
};

/** Every route the app serves; the conformance test fails on a route missing here, and on one here it never called. */
export const OPERATIONS: readonly Operation[] = [
  {
    method: 'get',
    path: '/healthz',
    operationId: 'liveness',
    summary: 'liveness: the process serves',
    open: true,
    success: { status: 200, description: 'alive', schema: 'Liveness', example: { status: 'ok' } },
    other: {
      status: 503,
      description: "this worker's HSM calls have been stalled beyond LIVENESS_STALL_MS; `reason` says so",
      schema: 'Liveness',
      example: { status: 'unavailable', reason: 'HSM calls stalled for 31000 ms (LIVENESS_STALL_MS 30000)' },
    },
    errors: ANY,
  },
  {
    method: 'get',
    path: '/readyz',
    operationId: 'readiness',
    summary: 'readiness of the worker that answered: HSM answers, sessions available, breaker not open, audit log (if any) writable',
    open: true,
    success: { status: 200, description: 'ready', schema: 'Readiness', example: { status: 'ready', ...HEALTH_DETAILS } },
    other: {
      status: 503,
      description: 'not ready, with a reason (HSM, breaker, audit log, draining)',
      schema: 'Readiness',
      example: { status: 'unavailable', reason: 'circuit breaker open after HSM failures', ...HEALTH_DETAILS, breaker: 'open' },
    },
    errors: ANY,
  },
  {
    method: 'get',
    path: '/metrics',
    operationId: 'metrics',
    summary: 'Prometheus metrics (all workers); in production on its own listener (METRICS_HOST:METRICS_PORT), not this port',
    open: true,
    success: {
      status: 200,
      description: 'Prometheus text format',
      contentType: 'text/plain',
      example: 'hsm_signer_http_requests_total{method="POST",route="/v1/keys/:name/sign",status="200"} 42\n',
    },
    errors: ANY,
  },
  {
    method: 'get',
    path: '/openapi.json',
    operationId: 'openapi',
    summary: 'this document',
    open: true,
    success: { status: 200, description: 'OpenAPI 3.1', schema: 'OpenApiDocument' },
    errors: ANY,
  },
  {
    method: 'get',
    path: '/v1/keys',
    operationId: 'listKeys',
    summary: 'the keys the caller may read',
    success: { status: 200, description: 'keys', schema: 'KeyList', example: { keys: [KEY_INFO] } },
    errors: V1,
  },
  {
    method: 'get',
    path: '/v1/keys/{name}',
    operationId: 'getKey',
    summary: 'one key: spec, versions, public keys, algorithms',
    success: { status: 200, description: 'the key', schema: 'KeyInfo', example: KEY_INFO },
    errors: ONE_KEY,
  },
  {
    method: 'get',
    path: '/v1/keys/{name}/jwks',
    operationId: 'getJwks',
    summary: 'public keys as a JWK set, one per version, kid = {name}/v{version}',
    success: {
      status: 200,
      description: 'JWK set',
      schema: 'JwkSet',
      example: {
        keys: [
          {
            kty: 'EC',
            crv: 'P-256',
            x: 'v1YCkCzQV2V8YystH-wvWBWHxbyWci_5c2HObiTUgDs',
            y: 'WfQ25lBmEkusj4ewkpn-mf-aJbB5RKo8UERr-xrriNk',
            kid: 'payments-ec/v1',
            use: 'sig',
          },
        ],
      },
    },
    errors: ONE_KEY,
  },
  {
    method: 'post',
    path: '/v1/keys/{name}/sign',
    operationId: 'sign',
    summary: 'sign a message (hashed by the service) or a digest',
    request: { schema: 'SignRequest', example: { algorithm: 'ECDSA_SHA_256', message: 'aGVsbG8gd29ybGQ=' } },
    success: { status: 200, description: 'the signature', schema: 'SignResponse', example: SIGN },
    errors: [...ONE_KEY, ...AUDITED],
  },
  {
    method: 'post',
    path: '/v1/keys/{name}/verify',
    operationId: 'verify',
    summary: 'verify a signature (a wrong one is valid:false, not an error)',
    request: { schema: 'VerifyRequest', example: { algorithm: 'ECDSA_SHA_256', message: 'aGVsbG8gd29ybGQ=', signature: SIGNATURE } },
    success: { status: 200, description: 'the result', schema: 'VerifyResponse', example: { valid: true, keyVersion: 1 } },
    errors: [...ONE_KEY, ...AUDITED],
  },
  {
    method: 'post',
    path: '/v1/sign/batch',
    operationId: 'signBatch',
    summary: "sign 1 to 256 items; each result is a signature or that item's error (a malformed item, too, fails alone)",
    request: {
      schema: 'BatchRequest',
      example: {
        requests: [
          { keyName: 'payments-ec', algorithm: 'ECDSA_SHA_256', message: 'aGVsbG8gd29ybGQ=' },
          { keyName: 'other-ec', algorithm: 'ECDSA_SHA_256', message: 'aGVsbG8gd29ybGQ=' },
        ],
      },
    },
    success: {
      status: 200,
      description: 'results in request order',
      schema: 'BatchResponse',
      example: { results: [SIGN, { error: { code: 'PERMISSION_DENIED', message: "the client may not sign with key 'other-ec'" } }] },
    },
    errors: [...V1, ...AUDITED],
  },
  {
    method: 'post',
    path: '/v1/keys/{name}/csr',
    operationId: 'createCsr',
    summary: 'PKCS#10 CSR signed by the key on the HSM',
    request: { schema: 'CsrRequest', example: { subject: 'CN=Issuing CA 2027,O=Example,C=US', ca: { pathLength: 0 } } },
    success: {
      status: 200,
      description: 'the CSR',
      schema: 'CsrResponse',
      example: { csrPem: '-----BEGIN CERTIFICATE REQUEST-----\nMIIBJTCBzAIBADBA...\n-----END CERTIFICATE REQUEST-----\n', keyVersion: 1 },
    },
    errors: [...ONE_KEY, ...AUDITED],
  },
  {
    method: 'put',
    path: '/v1/keys/{name}/certificate',
    operationId: 'attachCertificate',
    summary: "attach the key version's CA certificate and chain (stored on the token)",
    request: { schema: 'AttachRequest', example: { certificatePem: CERT_PEM, chainPem: CHAIN_PEM, keyVersion: 1 } },
    success: { status: 204, description: 'stored on the token' },
    errors: [...ONE_KEY, ...AUDITED, 'CONFLICT'],
  },
  {
    method: 'get',
    path: '/v1/keys/{name}/certificate',
    operationId: 'getCertificate',
    summary: "the key version's certificate and chain",
    keyVersionQuery: true,
    success: {
      status: 200,
      description: 'certificate and chain',
      schema: 'CertificateResponse',
      example: { certificatePem: CERT_PEM, chainPem: CHAIN_PEM, keyVersion: 1 },
    },
    errors: ONE_KEY,
  },
  {
    method: 'post',
    path: '/v1/keys/{name}/certificates',
    operationId: 'issueCertificate',
    summary: 'issue a certificate from a CSR with a profile, signed by the newest key version that has a certificate',
    request: {
      schema: 'IssueRequest',
      example: {
        csrPem: '-----BEGIN CERTIFICATE REQUEST-----\nMIIBJTCBzAIBADBA...\n-----END CERTIFICATE REQUEST-----\n',
        profile: 'tls-server',
        validityDays: 90,
        subjectAltNames: { dns: ['api.example.com'] },
      },
    },
    success: {
      status: 201,
      description: 'the certificate',
      schema: 'IssueResponse',
      example: {
        certificatePem: CERT_PEM,
        chainPem: CHAIN_PEM,
        serialNumber: '5F1A0C93D2E4B7A81C6E',
        notBefore: '2027-01-15T09:55:00.000Z',
        notAfter: '2027-04-15T10:00:00.000Z',
        issuerKeyVersion: 1,
      },
    },
    errors: [...ONE_KEY, ...AUDITED, 'CONFLICT', ...INVENTORY],
  },
  {
    method: 'get',
    path: '/v1/keys/{name}/certificates',
    operationId: 'listIssuedCertificates',
    summary: 'the certificates the key issued (from the inventory, ISSUANCE_DB), in issue order, a page at a time',
    listQuery: true,
    success: {
      status: 200,
      description: 'one page; nextCursor when there are more',
      schema: 'IssuedCertificateList',
      example: { certificates: [ISSUED], nextCursor: 'czQy' },
    },
    errors: [...ONE_KEY, ...INVENTORY],
  },
  {
    method: 'get',
    path: '/v1/keys/{name}/certificates/{serial}',
    operationId: 'getIssuedCertificate',
    summary: 'one certificate the key issued, with its PEM and status (404 if the key did not issue this serial)',
    success: { status: 200, description: 'the certificate and its record', schema: 'IssuedCertificate', example: ISSUED },
    errors: [...ONE_KEY, ...INVENTORY],
  },
  {
    method: 'post',
    path: '/v1/keys/{name}/certificates/{serial}/revoke',
    operationId: 'revokeCertificate',
    summary: 'revoke a certificate the key issued (idempotent: a repeat keeps the first time and reason); the next CRL and OCSP answers list it',
    request: { schema: 'RevokeRequest', example: { reason: 'keyCompromise' } },
    success: {
      status: 200,
      description: 'revoked',
      schema: 'RevokeResponse',
      example: { serialNumber: '5F1A0C93D2E4B7A81C6E', issuerKeyVersion: 1, revokedAt: '2027-02-01T08:00:00.000Z', reason: 'keyCompromise', revokedNow: true },
    },
    errors: [...ONE_KEY, ...AUDITED, ...INVENTORY],
  },
  {
    method: 'get',
    path: '/v1/keys/{name}/crl',
    operationId: 'getCrl',
    summary: 'the current CRL of a key version that issued (default: the newest), signed on the HSM; no credentials (relying parties have none)',
    open: true,
    keyVersionQuery: true,
    query: ['format'],
    success: {
      status: 200,
      description: 'the CRL: DER (application/pkix-crl) or, with format=pem, PEM (application/x-pem-file); X-Crl-Number and X-Key-Version headers',
      contentType: 'application/pkix-crl',
      alsoContentTypes: ['application/x-pem-file'],
    },
    errors: [...PUBLIC, 'NOT_FOUND', ...INVENTORY],
  },
  {
    method: 'post',
    path: '/ocsp/{name}',
    operationId: 'ocsp',
    summary: 'RFC 6960 OCSP for certificates the key issued, signed on the HSM by the issuing key version; no credentials',
    open: true,
    binaryRequest: { contentType: 'application/ocsp-request', description: 'a DER OCSPRequest' },
    success: {
      status: 200,
      description: 'a DER OCSPResponse: successful (good, revoked or unknown per certificate, nonce echoed), or unauthorized for certificates of another CA',
      contentType: 'application/ocsp-response',
    },
    binaryError: { status: 400, contentType: 'application/ocsp-response', description: 'not a DER OCSPRequest: an OCSPResponse with status malformedRequest.' },
    errors: [...PUBLIC, 'NOT_FOUND', ...INVENTORY, ...BODY],
  },
  {
    method: 'get',
    path: '/ocsp/{name}/{request}',
    operationId: 'ocspGet',
    summary: 'OCSP by GET (RFC 6960 Appendix A.1), as POST /ocsp/{name}',
    open: true,
    success: { status: 200, description: 'a DER OCSPResponse, as POST /ocsp/{name}', contentType: 'application/ocsp-response' },
    binaryError: {
      status: 400,
      contentType: 'application/ocsp-response',
      description: 'not base64 of a DER OCSPRequest: an OCSPResponse with status malformedRequest.',
    },
    errors: [...PUBLIC, 'NOT_FOUND', ...INVENTORY],
  },
];

const json = (schema: object, example?: unknown, examples?: object) => ({
  content: { 'application/json': { schema, ...(example !== undefined ? { example } : {}), ...(examples ? { examples } : {}) } },
});
const ref = (id: string) => ({ $ref: `${COMPONENT}${id}` });
const requestIdHeader = { 'X-Request-Id': { $ref: '#/components/headers/X-Request-Id' } };

/**
 * The error answers, one per status, each naming the codes an operation can meet at that status:
 * the Error schema with `code` narrowed to them. Shared as components.responses, named by the codes.
 */
function errorResponses(codes: readonly ErrorCode[], shared: Record<string, object>): Record<string, object> {
  const byStatus = new Map<number, ErrorCode[]>();
  for (const c of new Set(codes)) byStatus.set(ERROR_CODES[c].status, [...(byStatus.get(ERROR_CODES[c].status) ?? []), c]);
  const refs: Record<string, object> = {};
  for (const [status, cs] of byStatus) {
    const name = cs.join('-');
    shared[name] ??= {
      description: cs.map((c) => `${c}: ${ERROR_CODES[c].description}`).join(' '),
      headers: { ...requestIdHeader, ...(status === 429 || status === 503 ? { 'Retry-After': { $ref: '#/components/headers/Retry-After' } } : {}) },
      ...json(
        { ...ref('Error'), type: 'object', properties: { error: { type: 'object', properties: { code: { enum: cs } } } } },
        undefined,
        Object.fromEntries(cs.map((c) => [c, { $ref: `#/components/examples/${c}` }])),
      ),
    };
    refs[String(status)] = { $ref: `#/components/responses/${name}` };
  }
  return refs;
}

function operationObject(op: Operation, sharedResponses: Record<string, object>): object {
  const { success } = op;
  // A JSON answer (its schema), a text one (Prometheus) or none (204).
  const successContent =
    success.schema !== undefined
      ? json(ref(success.schema), success.example)
      : success.contentType !== undefined
        ? {
            content: {
              [success.contentType]: { schema: { type: 'string' }, ...(success.example !== undefined ? { example: success.example } : {}) },
              ...Object.fromEntries((success.alsoContentTypes ?? []).map((t) => [t, { schema: { type: 'string' } }])),
            },
          }
        : {};
  const errors = errorResponses(op.errors, sharedResponses);
  if (op.binaryError) {
    // The registry's JSON errors of that status and the binary answer, side by side in one response object.
    const { status, contentType, description } = op.binaryError;
    const sharedRef = (errors[String(status)] as { $ref?: string } | undefined)?.$ref;
    const shared = sharedRef ? (sharedResponses[sharedRef.replace('#/components/responses/', '')] as { description: string; content: object }) : undefined;
    errors[String(status)] = {
      description: shared ? `${description} Or, as JSON: ${shared.description}` : description,
      headers: requestIdHeader,
      content: { ...(shared?.content ?? {}), [contentType]: { schema: { type: 'string' } } },
    };
  }
  return {
    operationId: op.operationId,
    summary: op.summary,
    ...(op.open ? { security: [] } : {}),
    parameters: [
      ...(op.path.includes('{name}') ? [{ $ref: '#/components/parameters/name' }] : []),
      ...(op.path.includes('{serial}') ? [{ $ref: '#/components/parameters/serial' }] : []),
      ...(op.path.includes('{request}') ? [{ $ref: '#/components/parameters/ocspRequest' }] : []),
      ...(op.keyVersionQuery ? [{ $ref: '#/components/parameters/keyVersion' }] : []),
      ...(op.query ?? []).map((q) => ({ $ref: `#/components/parameters/${q}` })),
      ...(op.listQuery ? ['status', 'expiresBefore', 'limit', 'cursor'].map((p) => ({ $ref: `#/components/parameters/${p}` })) : []),
      { $ref: '#/components/parameters/X-Request-Id' },
      { $ref: '#/components/parameters/X-Deadline-Ms' },
    ],
    ...(op.request ? { requestBody: { required: true, ...json(ref(op.request.schema), op.request.example) } } : {}),
    ...(op.binaryRequest
      ? {
          requestBody: {
            required: true,
            description: op.binaryRequest.description,
            content: { [op.binaryRequest.contentType]: { schema: { type: 'string' } } },
          },
        }
      : {}),
    responses: {
      [success.status]: { description: success.description, headers: requestIdHeader, ...successContent },
      ...(op.other
        ? { [op.other.status]: { description: op.other.description, headers: requestIdHeader, ...json(ref(op.other.schema), op.other.example) } }
        : {}),
      ...errors,
    },
  };
}

const parameterSchema = (schema: z.ZodType): object => {
  const { $schema: _dialect, ...s } = z.toJSONSchema(schema);
  return s;
};

function buildDocument(): Record<string, unknown> {
  const paths: Record<string, Record<string, object>> = {};
  const responses: Record<string, object> = {};
  for (const op of OPERATIONS) paths[op.path] = { ...paths[op.path], [op.method]: operationObject(op, responses) };
  return {
    openapi: '3.1.0',
    info: {
      title: 'hsm-signer',
      version: '1',
      description:
        "Sign and verify with keys held in a PKCS#11 HSM; intermediate-CA operations on the HSM. Generated from the service's zod schemas and error registry (`npm run openapi` writes docs/openapi.json). Binary values are standard base64 with padding; request bodies are UTF-8 JSON nested at most 32 levels; unknown fields are 400s naming them.",
    },
    security: [{ bearer: [] }, { clientCertificate: [] }],
    paths,
    components: {
      securitySchemes: {
        bearer: { type: 'http', scheme: 'bearer', description: 'on /v1 when a CLIENTS_FILE is configured: a token whose SHA-256 the file lists' },
        clientCertificate: {
          type: 'mutualTLS',
          description:
            'on /v1 when TLS_CLIENT_CA_FILE is configured: a client certificate it issued, naming a client of CLIENTS_FILE (alone, or with a bearer token naming the same client)',
        },
      },
      parameters: {
        name: { name: 'name', in: 'path', required: true, description: 'the key name', schema: parameterSchema(keyNameParameter) },
        keyVersion: { name: 'keyVersion', in: 'query', required: false, description: 'default: the current version', schema: parameterSchema(keyVersionQuery) },
        serial: {
          name: 'serial',
          in: 'path',
          required: true,
          description: 'the serial number in hex, any case, leading zeros allowed',
          schema: parameterSchema(serialParameter),
        },
        ocspRequest: {
          name: 'request',
          in: 'path',
          required: true,
          description: 'the DER OCSPRequest, base64 and then URL-encoded (RFC 6960 Appendix A.1: `/` as %2F)',
          schema: { type: 'string' },
        },
        format: { name: 'format', in: 'query', required: false, description: 'der (default, application/pkix-crl) or pem', schema: { enum: ['der', 'pem'] } },
        status: {
          name: 'status',
          in: 'query',
          required: false,
          description: 'only certificates in this status',
          schema: parameterSchema(certificateStatusQuery),
        },
        expiresBefore: {
          name: 'expiresBefore',
          in: 'query',
          required: false,
          description: 'only certificates whose notAfter is before this',
          schema: parameterSchema(expiresBeforeQuery),
        },
        limit: {
          name: 'limit',
          in: 'query',
          required: false,
          description: `page size (default ${DEFAULT_LIST_LIMIT})`,
          schema: { ...parameterSchema(limitQuery), default: DEFAULT_LIST_LIMIT },
        },
        cursor: { name: 'cursor', in: 'query', required: false, description: "the previous page's nextCursor", schema: parameterSchema(cursorQuery) },
        'X-Request-Id': {
          name: 'X-Request-Id',
          in: 'header',
          required: false,
          description: 'echoed in the answer if it is 1 to 128 of A-Z a-z 0-9 . _ : -; otherwise the service makes one',
          schema: { type: 'string' },
        },
        'X-Deadline-Ms': {
          name: 'X-Deadline-Ms',
          in: 'header',
          required: false,
          description: "lowers the request's deadline (default 2 s); not a positive integer: 400",
          schema: { type: 'integer', minimum: 1, maximum: 999_999_999 },
        },
      },
      responses,
      headers: {
        'X-Request-Id': { description: "the caller's X-Request-Id if safe, else a new one", schema: { type: 'string' } },
        'Retry-After': { description: 'seconds to wait before retrying', schema: { type: 'integer', minimum: 0 } },
      },
      examples: Object.fromEntries(
        (Object.keys(ERROR_CODES) as ErrorCode[]).map((c) => [
          c,
          { summary: ERROR_CODES[c].description, value: { error: { code: c, message: ERROR_EXAMPLES[c], requestId: REQUEST_ID } } },
        ]),
      ),
      schemas: { ...componentsOf(requestSchemas, 'input'), ...componentsOf(responseSchemas, 'output') },
    },
  };
}

export const OPENAPI_DOCUMENT = buildDocument();

export function openapiRouter(): Router {
  const r = Router();
  r.get('/openapi.json', (_req, res) => {
    res.json(OPENAPI_DOCUMENT);
  });
  return r;
}
