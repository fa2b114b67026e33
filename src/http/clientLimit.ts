import type { RequestHandler } from 'express';
import { ServiceError } from '../errors.js';
import type { Client } from './auth.js';
import { deadlineOf } from './requestContext.js';

/**
 * CLIENT_MAX_IN_FLIGHT: at most `max` requests of one client in flight in this worker; beyond,
 * 429 RESOURCE_EXHAUSTED with Retry-After, before the body is read. A client is the identity
 * authentication found (its name in CLIENTS_FILE), so one busy client cannot take every HSM
 * session and queue place from the others.
 *
 * A request leaves the count when its answer is sent. A caller that hangs up first leaves its
 * work running (the HSM call, or the wait for a session, until the deadline gives up its place):
 * its slot is held until the request's deadline, so hanging up and sending again does not get
 * around the limit.
 */
export function clientLimit(max: number): RequestHandler {
  const inFlight = new Map<string, number>();
  const release = (name: string): void => {
    const n = (inFlight.get(name) ?? 1) - 1;
    if (n > 0) inFlight.set(name, n);
    else inFlight.delete(name);
  };
  return (_req, res, next) => {
    const client = res.locals.client as Client | undefined;
    if (!client) return next();
    const name = client.name;
    const n = inFlight.get(name) ?? 0;
    if (n >= max) {
      return next(
        new ServiceError(
          'RESOURCE_EXHAUSTED',
          `client '${name}' already has ${max} requests in flight (CLIENT_MAX_IN_FLIGHT); retry after Retry-After seconds`,
          1,
        ),
      );
    }
    inFlight.set(name, n + 1);
    let finished = false;
    res.on('finish', () => {
      finished = true;
    });
    res.on('close', () => {
      const left = finished ? 0 : deadlineOf(res) - Date.now();
      if (left > 0) setTimeout(release, left, name).unref();
      else release(name);
    });
    next();
  };
}
