import { randomUUID } from 'node:crypto';
import type { RequestHandler } from 'express';
import type { Logger } from 'pino';
import { invalid, notFound } from '../errors.js';
import { recordRequest } from './metrics.js';

const SAFE_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** The status a request is counted under when the caller hung up before its answer was complete (nginx's 499). */
export const CLIENT_CLOSED_REQUEST = 499;

/**
 * Everything every request needs, in one middleware (each Express layer costs a pass through its
 * dispatch): X-Request-Id (the caller's if safe, else new), the request's deadline (X-Deadline-Ms
 * may only lower it), and, once the response is done or the caller gone, the request metrics and
 * the debug log.
 */
export function requestContext(defaultDeadlineMs: number, logger: Logger): RequestHandler {
  return (req, res, next) => {
    const given = req.headers['x-request-id'];
    const id = typeof given === 'string' && SAFE_ID.test(given) ? given : randomUUID();
    res.locals.requestId = id;
    res.setHeader('X-Request-Id', id);
    const start = performance.now();
    // Counted on 'close', which comes after 'finish' or without it: a caller that hangs up before its
    // answer is out (a client timeout, a cancelled call) must still be counted and timed. Only
    // 'finish' tells the two apart: an error answer written to a socket already gone looks ended.
    // Each is emitted at most once, so plain listeners (once() wraps each in a closure of its own).
    let finished = false;
    res.on('finish', () => {
      finished = true;
    });
    res.on('close', () => {
      const ms = performance.now() - start;
      const status = finished ? res.statusCode : CLIENT_CLOSED_REQUEST;
      recordRequest(req, status, ms / 1000);
      if (logger.isLevelEnabled('debug')) logger.debug({ requestId: id, method: req.method, path: req.path, status, ms: +ms.toFixed(2) }, 'request');
    });
    const header = req.headers['x-deadline-ms'];
    let budget = defaultDeadlineMs;
    if (header !== undefined) {
      const n = typeof header === 'string' && /^[0-9]{1,9}$/.test(header) ? Number(header) : NaN;
      if (!(n >= 1)) return next(invalid('X-Deadline-Ms: must be a positive integer of milliseconds'));
      budget = Math.min(n, defaultDeadlineMs);
    }
    res.locals.deadline = Date.now() + budget;
    // The API has no OPTIONS; left to Express, a nested Router would answer it with 200 text/plain "GET, HEAD".
    if (req.method === 'OPTIONS') return next(notFound(`no route for OPTIONS ${req.path.slice(0, 200)}`));
    next();
  };
}

export const deadlineOf = (res: { locals: Record<string, unknown> }): number => res.locals.deadline as number;
