import { ServiceError } from '../errors.js';
import type { CancelSignal } from '../hsm/KeyManager.js';

export const deadlineExceeded = (): ServiceError => new ServiceError('DEADLINE_EXCEEDED', 'the request deadline passed before the HSM answered');

/**
 * A request's "stop waiting" for the HSM layer, made once per guarded call. It does what the HSM
 * layer reads of an AbortSignal and no more: one is made for every request on the hot path, and an
 * AbortController is a whole EventTarget where this is a few fields. Listeners run once, at the
 * abort; one added after it never runs (as with an AbortSignal: read `aborted` first).
 */
export class Cancellation implements CancelSignal {
  aborted = false;
  reason: unknown = undefined;
  private listeners: (() => void)[] | undefined;

  /** As on an AbortSignal: the same listener twice is one listener. */
  addEventListener(_type: 'abort', listener: () => void): void {
    if (this.aborted) return;
    let listeners = this.listeners;
    if (listeners === undefined) {
      listeners = [];
      this.listeners = listeners;
    }
    if (!listeners.includes(listener)) listeners.push(listener);
  }

  removeEventListener(_type: 'abort', listener: () => void): void {
    const listeners = this.listeners;
    if (listeners === undefined) return;
    const i = listeners.indexOf(listener);
    if (i >= 0) listeners.splice(i, 1);
  }

  abort(reason: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    const listeners = this.listeners ?? [];
    // Taken one at a time from the live list: a listener that removes another stops it running.
    for (let listener = listeners.shift(); listener !== undefined; listener = listeners.shift()) {
      try {
        listener();
      } catch (e) {
        // As an EventTarget does: one listener's bug reaches the process, the others still run.
        queueMicrotask(() => {
          throw e;
        });
      }
    }
    this.listeners = undefined;
  }
}

/**
 * Resolves or rejects with the work, or rejects with DEADLINE_EXCEEDED at the deadline,
 * whichever comes first. The work is not cancelled: a call already at the HSM keeps its session
 * until the HSM answers, then gives it back. `cancel` (a Cancellation or an AbortController) is
 * aborted at the deadline, so the work starts nothing new (no session wait, no HSM call) for a
 * caller that is gone.
 */
export function withDeadline<T>(work: Promise<T>, deadline: number, o: { cancel?: { abort(reason: unknown): void }; now?: () => number } = {}): Promise<T> {
  const remaining = deadline - (o.now ?? Date.now)();
  if (remaining <= 0) {
    o.cancel?.abort(deadlineExceeded());
    work.catch(() => undefined);
    return Promise.reject(deadlineExceeded());
  }
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      const e = deadlineExceeded();
      o.cancel?.abort(e);
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
