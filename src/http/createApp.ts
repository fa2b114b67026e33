import express, { type Express, type RequestHandler } from 'express';
import type { Logger } from 'pino';
import { ServiceError } from '../errors.js';
import type { SigningService } from '../service/SigningService.js';
import { errorHandler } from './errorHandler.js';
import { metricsRouter, recordRequests } from './metrics.js';
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
  /** Runs before every /v1 route (authentication). */
  readonly v1Guard?: RequestHandler;
}

/** A POST without a JSON body is a 415, checked before parsing so nothing else reads it. */
const requireJson: RequestHandler = (req, _res, next) => {
  if (req.method === 'POST' || req.method === 'PUT') {
    if (!req.is('application/json')) return next(new ServiceError('UNSUPPORTED_MEDIA_TYPE', 'body: Content-Type must be application/json'));
  }
  next();
};

export function createApp(deps: AppDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('query parser', 'simple');
  app.use(requestContext(deps.requestDeadlineMs, deps.logger));
  app.use(recordRequests());
  // Express tries every route in order: the hot path (sign, verify) comes first, the rare GETs last.
  if (deps.v1Guard) app.use('/v1', deps.v1Guard);
  app.use('/v1', requireJson, express.json({ limit: deps.bodyLimitBytes, strict: false, type: 'application/json' }));
  app.use(signingRouter(deps.service));
  app.use(keysRouter(deps.service));
  for (const r of deps.extraRouters ?? []) app.use(r);
  app.use(healthRouter(deps.service));
  app.use(metricsRouter(deps.service));
  app.use(openapiRouter());
  app.use((req, _res, next) => next(new ServiceError('NOT_FOUND', `no route for ${req.method} ${req.path.slice(0, 200)}`)));
  app.use(errorHandler(deps.logger));
  return app;
}
