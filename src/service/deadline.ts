import { ServiceError } from '../errors.js';

/**
 * Resolves or rejects with the work, or rejects with DEADLINE_EXCEEDED at the deadline,
 * whichever comes first. The work is not cancelled: it keeps its HSM session until the HSM
 * answers, then gives it back.
 */
export function withDeadline<T>(work: Promise<T>, deadline: number, now: () => number = Date.now): Promise<T> {
  const remaining = deadline - now();
  if (remaining <= 0) {
    work.catch(() => undefined);
    return Promise.reject(new ServiceError('DEADLINE_EXCEEDED', 'the request deadline passed before the HSM answered'));
  }
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new ServiceError('DEADLINE_EXCEEDED', 'the request deadline passed before the HSM answered'));
    }, remaining);
    work.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}
