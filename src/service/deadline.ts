import { ServiceError } from '../errors.js';

export const deadlineExceeded = (): ServiceError => new ServiceError('DEADLINE_EXCEEDED', 'the request deadline passed before the HSM answered');

/**
 * Resolves or rejects with the work, or rejects with DEADLINE_EXCEEDED at the deadline,
 * whichever comes first. The work is not cancelled: a call already at the HSM keeps its session
 * until the HSM answers, then gives it back. `controller` is aborted at the deadline, so the work
 * starts nothing new (no session wait, no HSM call) for a caller that is gone.
 */
export function withDeadline<T>(work: Promise<T>, deadline: number, o: { controller?: AbortController; now?: () => number } = {}): Promise<T> {
  const remaining = deadline - (o.now ?? Date.now)();
  if (remaining <= 0) {
    o.controller?.abort(deadlineExceeded());
    work.catch(() => undefined);
    return Promise.reject(deadlineExceeded());
  }
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      const e = deadlineExceeded();
      o.controller?.abort(e);
      work.catch(() => undefined);
      reject(e);
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
