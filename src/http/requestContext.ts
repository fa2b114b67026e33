import { randomUUID } from 'node:crypto';
import type { RequestHandler } from 'express';
import type { Logger } from 'pino';
import { invalid } from '../errors.js';

const SAFE_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** X-Request-Id (the caller's if safe, else new) and the request's deadline (X-Deadline-Ms may only lower it). */
export function requestContext(defaultDeadlineMs: number, logger: Logger): RequestHandler {
  return (req, res, next) => {
    const given = req.get('x-request-id');
    const id = given !== undefined && SAFE_ID.test(given) ? given : randomUUID();
    res.locals.requestId = id;
    res.setHeader('X-Request-Id', id);
    const start = performance.now();
    if (logger.isLevelEnabled('debug')) {
      res.on('finish', () => logger.debug({ requestId: id, method: req.method, path: req.path, status: res.statusCode, ms: +(performance.now() - start).toFixed(2) }, 'request'));
    }
    const header = req.get('x-deadline-ms');
    let budget = defaultDeadlineMs;
    if (header !== undefined) {
      const n = /^[0-9]{1,9}$/.test(header) ? Number(header) : NaN;
      if (!(n >= 1)) return next(invalid('X-Deadline-Ms: must be a positive integer of milliseconds'));
      budget = Math.min(n, defaultDeadlineMs);
    }
    res.locals.deadline = Date.now() + budget;
    next();
  };
}

export const deadlineOf = (res: { locals: Record<string, unknown> }): number => res.locals.deadline as number;
