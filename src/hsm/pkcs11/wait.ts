import type { CancelSignal } from '../KeyManager.js';

/** Resolves when `p` settles, the signal aborts, or `ms` pass, whichever is first; never rejects. */
export function waitFor(p: Promise<unknown> | undefined, signal: CancelSignal, ms: number): Promise<void> {
  if (!p || signal.aborted) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
    p.then(done, done);
  });
}

/** A timer that does not keep the process alive. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms).unref());
