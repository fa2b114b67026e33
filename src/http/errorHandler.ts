import type { ErrorRequestHandler, Request, Response } from 'express';
import type { Logger } from 'pino';
import { invalid, ServiceError, type ErrorCode } from '../errors.js';
import { countShed } from '../metrics/serviceMetrics.js';
import { MAX_JSON_DEPTH } from './jsonDepth.js';

export function sendError(res: Response, e: ServiceError): void {
  if (e.retryAfterSeconds !== undefined) res.setHeader('Retry-After', String(e.retryAfterSeconds));
  res.status(e.status).json({ error: { code: e.code, message: e.message, requestId: res.locals.requestId as string } });
}

// body-parser's error types, mapped to the contract's codes.
const BODY_ERRORS: Record<string, [ErrorCode, string]> = {
  'entity.parse.failed': ['INVALID_ARGUMENT', 'body: malformed JSON'],
  'entity.too.deep': ['INVALID_ARGUMENT', `body: JSON nested deeper than ${MAX_JSON_DEPTH} levels`],
  'entity.too.large': ['PAYLOAD_TOO_LARGE', 'body: larger than the limit; send a digest instead of the message'],
  'encoding.unsupported': ['UNSUPPORTED_MEDIA_TYPE', 'body: unsupported content encoding'],
  'charset.unsupported': ['UNSUPPORTED_MEDIA_TYPE', 'body: unsupported charset; send UTF-8 JSON'],
  'request.aborted': ['INVALID_ARGUMENT', 'body: the request was aborted'],
  'request.size.invalid': ['INVALID_ARGUMENT', 'body: length does not match Content-Length'],
  'stream.encoding.set': ['INTERNAL', 'internal error'],
};

/**
 * What an untyped 4xx from Express or body-parser was about, named like any other field: the
 * router's URIError for a path parameter that does not percent-decode, zlib's for a body that is
 * not what its Content-Encoding says.
 */
function clientErrorMessage(err: unknown, req: Request): string {
  if (err instanceof URIError) return 'path: malformed percent-encoding';
  const encoding = req.headers['content-encoding'];
  if (encoding !== undefined && encoding.toLowerCase() !== 'identity')
    return `body: cannot be decoded as Content-Encoding ${JSON.stringify(encoding.slice(0, 32))}`;
  return 'request: malformed';
}

/** The one place where an error becomes a response. No stack, no secret, ever. */
export function errorHandler(logger: Logger): ErrorRequestHandler {
  return (err: unknown, req, res, next) => {
    if (res.headersSent) return next(err);
    if (err instanceof ServiceError) {
      if (err.code === 'OVERLOADED') countShed('overloaded');
      else if (err.code === 'RESOURCE_EXHAUSTED') countShed('client_limit');
      // 503/504 are expected while the HSM is down or busy (thousands a second in an outage, and
      // pino writes synchronously): they are counted in /metrics and logged at debug only.
      if (err.code === 'INTERNAL') logger.error({ requestId: res.locals.requestId, msg: err.message }, 'request failed');
      else if (err.status >= 500) logger.debug({ requestId: res.locals.requestId, code: err.code, msg: err.message }, 'request failed');
      return sendError(res, err);
    }
    const type = (err as { type?: string }).type;
    const mapped = type ? BODY_ERRORS[type] : undefined;
    if (mapped) return sendError(res, new ServiceError(mapped[0], mapped[1]));
    const status = (err as { status?: number }).status;
    if (typeof status === 'number' && status >= 400 && status < 500) {
      return sendError(res, invalid(clientErrorMessage(err, req)));
    }
    logger.error({ requestId: res.locals.requestId, err }, 'unexpected error');
    return sendError(res, new ServiceError('INTERNAL', 'internal error; the request id identifies it in the logs'));
  };
}
