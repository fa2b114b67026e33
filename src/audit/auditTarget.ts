import { constants, fstatSync, openSync } from 'node:fs';

/** AUDIT_LOG=stdout: the records go to the process's standard output (a container's log stream). */
export const AUDIT_STDOUT = 'stdout';

/**
 * O_APPEND: every write(2) lands at the end of the file as it is at that moment, so the workers of
 * a cluster (each with its own descriptor) append whole batches without overwriting or splitting
 * each other's lines. O_NONBLOCK matters only for a FIFO: opening one with no reader fails
 * (ENXIO) instead of blocking the event loop, and a full one answers EAGAIN instead of blocking.
 */
const OPEN_FLAGS = constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NONBLOCK;
const OPEN_MODE = 0o640;

export class AuditOpenError extends Error {
  override readonly name = 'AuditOpenError';
  constructor(
    message: string,
    /** The errno code (ENOENT, ENXIO, ...). */
    readonly code: string,
  ) {
    super(message);
  }
}

export const errnoOf = (e: unknown): string => (e as NodeJS.ErrnoException).code ?? 'error';

/** Opens an AUDIT_LOG target (a path, or `stdout`) for appending; throws AuditOpenError naming the errno code. */
export function openAuditTarget(target: string): number {
  if (target === AUDIT_STDOUT) return 1;
  try {
    return openSync(target, OPEN_FLAGS, OPEN_MODE);
  } catch (e) {
    throw new AuditOpenError(`AUDIT_LOG: cannot open ${target} for appending (${errnoOf(e)})`, errnoOf(e));
  }
}

export const isRegularFile = (fd: number): boolean => fstatSync(fd).isFile();
