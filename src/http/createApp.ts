import express, { type Express, type RequestHandler } from 'express';
import type { Logger } from 'pino';
import type { AuditLog } from '../audit/AuditLog.js';
import { notFound, ServiceError } from '../errors.js';
import type { SigningService } from '../service/SigningService.js';
import { clientLimit } from './clientLimit.js';
import { errorHandler } from './errorHandler.js';
import { metricsRouter } from './metrics.js';
import { openapiRouter } from './openapi.js';
import { requestContext } from './requestContext.js';
import { healthRouter } from './routes/healthRouter.js';
import { keysRouter } from './routes/keysRouter.js';
import { addSigningRoutes } from './routes/signingRouter.js';

export interface AppDeps {
  readonly service: SigningService;
  readonly logger: Logger;
  readonly bodyLimitBytes: number;
  readonly requestDeadlineMs: number;
  /** Routers added by optional capabilities (PKI). */
  readonly extraRouters?: readonly express.Router[];
  /** Runs before every /v1 route (authentication). */
  readonly v1Guard?: RequestHandler;
  /** CLIENT_MAX_IN_FLIGHT, per authenticated client; absent or 0: no limit (development mode has no clients). */
  readonly clientMaxInFlight?: number;
  /** AUDIT_LOG: sign, verify and the PKI operations answer only once their record is written. */
  readonly audit?: AuditLog;
}

/**
 * The JSON body of /v1 POSTs and PUTs. One that is not JSON (or has no body) is a 415, decided
 * here before anything reads it; the parser then does not check the type a second time.
 */
function jsonBody(limit: number): RequestHandler {
  const parse = express.json({ limit, strict: false, type: () => true });
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
  if (deps.v1Guard) app.use('/v1', deps.v1Guard);
  if (deps.clientMaxInFlight) app.use('/v1', clientLimit(deps.clientMaxInFlight));
  app.use('/v1', jsonBody(deps.bodyLimitBytes));
  // Express tries every route in order: the hot path (sign, verify) comes first, on the app itself
  // (a nested Router costs each request a pass through its own dispatch), the rare GETs last.
  addSigningRoutes(app, deps.service, deps.audit);
  app.use(keysRouter(deps.service));
  for (const r of deps.extraRouters ?? []) app.use(r);
  app.use(healthRouter(deps.service, deps.audit));
  app.use(metricsRouter(deps.service));
  app.use(openapiRouter());
  app.use((req, _res, next) => next(notFound(`no route for ${req.method} ${req.path.slice(0, 200)}`)));
  app.use(errorHandler(deps.logger));
  return app;
}
