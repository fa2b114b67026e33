/**
 * The one registry of the service's error codes: each with its HTTP status and the
 * sentence the README/OpenAPI document uses. Every layer throws ServiceError with one of
 * these codes; only src/http turns it into a response.
 */
export const ERROR_CODES = {
  INVALID_ARGUMENT: {
    status: 400,
    description: 'Malformed JSON, wrong type, bad base64, digest of the wrong length, unknown field value, or an algorithm not valid for the key type.',
  },
  UNAUTHENTICATED: { status: 401, description: 'Missing or unknown credential (when auth is on).' },
  PERMISSION_DENIED: { status: 403, description: 'The credential lacks the operation on that key.' },
  NOT_FOUND: { status: 404, description: 'No such key, key version or route.' },
  CONFLICT: { status: 409, description: 'The request conflicts with the key, e.g. a certificate that does not match it.' },
  PAYLOAD_TOO_LARGE: { status: 413, description: 'The body is over the limit; send a digest instead of the message.' },
  REQUEST_TIMEOUT: {
    status: 408,
    description:
      'The request line and headers did not arrive within HEADERS_TIMEOUT_MS, or the whole request within REQUEST_TIMEOUT_MS; the connection is closed.',
  },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, description: 'The body is not JSON.' },
  HEADERS_TOO_LARGE: { status: 431, description: 'The request line and headers are over MAX_HEADER_BYTES; the connection is closed.' },
  RESOURCE_EXHAUSTED: {
    status: 429,
    description: 'This client has too many requests in flight (CLIENT_MAX_IN_FLIGHT, per worker); retry after Retry-After seconds.',
  },
  HSM_UNAVAILABLE: {
    status: 503,
    description:
      "The HSM is down, the circuit breaker is open, or the service is recovering; or the key version cannot be used by the service's HSM user (usable: false in GET /v1/keys/{name}: an operator must share it; sign with another version meanwhile); retry after Retry-After seconds.",
  },
  AUDIT_UNAVAILABLE: {
    status: 503,
    description: 'The audit log (AUDIT_LOG) cannot be written, so no audited operation is answered; retry after Retry-After seconds.',
  },
  INVENTORY_UNAVAILABLE: {
    status: 503,
    description:
      'The certificate inventory (ISSUANCE_DB) cannot be reached or written: no certificate is issued without its record, and listings cannot be read; retry after Retry-After seconds.',
  },
  INVENTORY_NOT_CONFIGURED: {
    status: 503,
    description: 'No certificate inventory is configured: set ISSUANCE_DB (a SQLite file or a PostgreSQL URL) to issue and list certificates.',
  },
  OVERLOADED: { status: 503, description: 'Too many requests are waiting for an HSM session; retry after Retry-After seconds.' },
  DEADLINE_EXCEEDED: { status: 504, description: "The request's deadline passed (default 2 s; X-Deadline-Ms may lower it)." },
  INTERNAL: { status: 500, description: 'A bug in the service; never caused by bad input.' },
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export class ServiceError extends Error {
  override readonly name = 'ServiceError';
  constructor(
    readonly code: ErrorCode,
    message: string,
    /** For 429s and 503s: how long the caller should wait, in seconds. */
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
  }

  get status(): number {
    return ERROR_CODES[this.code].status;
  }
}

export const invalid = (message: string): ServiceError => new ServiceError('INVALID_ARGUMENT', message);
export const notFound = (message: string): ServiceError => new ServiceError('NOT_FOUND', message);
export const conflict = (message: string): ServiceError => new ServiceError('CONFLICT', message);
