import { randomUUID } from 'node:crypto';
import type { RequestHandler } from 'express';
import type { Logger } from 'pino';
import { invalid } from '../errors.js';
import { recordRequest } from './metrics.js';

const SAFE_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * Everything every request needs, in one middleware (each Express layer costs a pass through its
 * dispatch): X-Request-Id (the caller's if safe, else new), the request's deadline (X-Deadline-Ms
 * may only lower it), and, once the response is finished, the request metrics and the debug log.
 */
export function requestContext(defaultDeadlineMs: number, logger: Logger): RequestHandler {
  return (req, res, next) => {
    const given = req.headers['x-request-id'];
    const id = typeof given === 'string' && SAFE_ID.test(given) ? given : randomUUID();
    res.locals.requestId = id;
    res.setHeader('X-Request-Id', id);
    const start = performance.now();
    res.on('finish', () => {
      const ms = performance.now() - start;
      recordRequest(req, res.statusCode, ms / 1000);
      if (logger.isLevelEnabled('debug')) logger.debug({ requestId: id, method: req.method, path: req.path, status: res.statusCode, ms: +ms.toFixed(2) }, 'request');
    });
    const header = req.headers['x-deadline-ms'];
    let budget = defaultDeadlineMs;
    if (header !== undefined) {
      const n = typeof header === 'string' && /^[0-9]{1,9}$/.test(header) ? Number(header) : NaN;
      if (!(n >= 1)) return next(invalid('X-Deadline-Ms: must be a positive integer of milliseconds'));
      budget = Math.min(n, defaultDeadlineMs);
    }
    res.locals.deadline = Date.now() + budget;
    next();
  };
}

export const deadlineOf = (res: { locals: Record<string, unknown> }): number => res.locals.deadline as number;
