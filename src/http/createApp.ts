import express, { type Express, type RequestHandler } from 'express';
import type { Logger } from 'pino';
import type { AuditLog } from '../audit/AuditLog.js';
import { notFound, ServiceError } from '../errors.js';
import type { InventoryStatus } from '../service/InventoryAccess.js';
import type { SigningService } from '../service/SigningService.js';
import { clientLimit } from './clientLimit.js';
import { errorHandler } from './errorHandler.js';
import { jsonDepthExceeds, MAX_JSON_DEPTH } from './jsonDepth.js';
import { metricsRouter, trackService } from './metrics.js';
import { openapiRouter } from './openapi.js';
import { requestContext } from './requestContext.js';
import { healthRouter } from './routes/healthRouter.js';
import { keysRouter } from './routes/keysRouter.js';
import { signingRouter } from './routes/signingRouter.js';

export interface AppDeps {
  readonly service: SigningService;
  readonly logger: Logger;
  readonly bodyLimitBytes: number;
  readonly requestDeadlineMs: number;
  /** Routers added by optional capabilities (PKI). */
  readonly extraRouters?: readonly express.Router[];
  /** Routes served without credentials, before the /v1 guard (CRLs, OCSP: relying parties have no token). */
  readonly publicRouters?: readonly express.Router[];
  /** Runs before every /v1 route (authentication). */
  readonly v1Guard?: RequestHandler;
  /** GET /metrics on this app (development); in production it has a listener of its own. Default true. */
  readonly metricsOnApi?: boolean;
  /** CLIENT_MAX_IN_FLIGHT, per authenticated client; absent or 0: no limit (development mode has no clients). */
  readonly clientMaxInFlight?: number;
  /** AUDIT_LOG: sign, verify and the PKI operations answer only once their record is written. */
  readonly audit?: AuditLog;
  /** Draining after SIGTERM/SIGINT: /readyz answers 503. */
  readonly lifecycle?: { readonly draining: boolean };
  /** LIVENESS_STALL_MS: /healthz answers 503 once an HSM call has been unanswered for longer. */
  readonly livenessStallMs?: number;
  /** The certificate inventory's last outcome, named by /readyz (not a reason for 503: signing goes on). */
  readonly inventory?: { status(): InventoryStatus };
}

/** Thrown from body-parser's verify hook; errorHandler maps the type to the contract's error. */
const bodyError = (type: string): Error => Object.assign(new Error(type), { type });

/**
 * The JSON body of /v1 POSTs and PUTs. One that is not JSON (or has no body) is a 415, decided
 * here before anything reads it; the parser then does not check the type a second time. Before
 * JSON.parse sees the raw bytes, they must be UTF-8 (RFC 8259 §8.1) and nest no deeper than
 * MAX_JSON_DEPTH. JSON.parse (no reviver) makes `__proto__` an own property, never a prototype,
 * and the strict schemas refuse it as an unknown field.
 */
function jsonBody(limit: number): RequestHandler {
  const parse = express.json({
    limit,
    strict: false,
    type: () => true,
    verify: (_req, _res, buf, encoding) => {
      if (encoding !== 'utf-8') throw bodyError('charset.unsupported');
      if (jsonDepthExceeds(buf, MAX_JSON_DEPTH)) throw bodyError('entity.too.deep');
    },
  });
  return (req, res, next) => {
    if (req.method !== 'POST' && req.method !== 'PUT') return next();
    if (!req.is('application/json')) return next(new ServiceError('UNSUPPORTED_MEDIA_TYPE', 'body: Content-Type must be application/json'));
    parse(req, res, next);
  };
}

export function createApp(deps: AppDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('query parser', 'simple');
  app.use(requestContext(deps.requestDeadlineMs, deps.logger));
  for (const r of deps.publicRouters ?? []) app.use(r);
  if (deps.v1Guard) app.use('/v1', deps.v1Guard);
  if (deps.clientMaxInFlight) app.use('/v1', clientLimit(deps.clientMaxInFlight));
  app.use('/v1', jsonBody(deps.bodyLimitBytes));
  // Express tries every route in order: the hot path (sign, verify) comes first, the rare GETs last.
  app.use(signingRouter(deps.service, deps.audit));
  app.use(keysRouter(deps.service));
  for (const r of deps.extraRouters ?? []) app.use(r);
  app.use(healthRouter(deps.service, { audit: deps.audit, lifecycle: deps.lifecycle, livenessStallMs: deps.livenessStallMs, inventory: deps.inventory }));
  trackService(deps.service);
  if (deps.metricsOnApi !== false) app.use(metricsRouter());
  app.use(openapiRouter());
  app.use((req, _res, next) => next(notFound(`no route for ${req.method} ${req.path.slice(0, 200)}`)));
  app.use(errorHandler(deps.logger));
  return app;
}
