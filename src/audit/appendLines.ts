import { fstatSync, write } from 'node:fs';
import { errnoOf } from './auditTarget.js';

/** A pipe write of at most this many bytes is atomic (POSIX PIPE_BUF, 4096 on Linux): writers to one pipe do not interleave. */
const PIPE_BUF = 4096;

/** The reason appendLines gives when the regular file it wrote to has been removed. */
export const REMOVED = 'removed';

/** Whole lines in writes of at most PIPE_BUF bytes (a longer line alone). */
function pipeChunks(lines: readonly string[]): Buffer[] {
  const chunks: Buffer[] = [];
  let group: string[] = [];
  let size = 0;
  for (const line of lines) {
    const n = Buffer.byteLength(line);
    if (size + n > PIPE_BUF && group.length > 0) {
      chunks.push(Buffer.from(group.join('')));
      group = [];
      size = 0;
    }
    group.push(line);
    size += n;
  }
  if (group.length > 0) chunks.push(Buffer.from(group.join('')));
  return chunks;
}

/**
 * Writes the lines to `fd`, whole: one write on a regular file (a short write is a failure: the
 * rest would follow another process's lines), whole-line writes of at most PIPE_BUF otherwise. On
 * a regular file, checks afterwards that the file still has a name (else `done(REMOVED)`).
 * `done()` without a reason once every byte is written; with the errno code, 'short write' or
 * 'stalled' (the caller set `writing.stalled`) otherwise.
 */
export function appendLines(
  fd: number,
  regularFile: boolean,
  lines: readonly string[],
  writing: { readonly stalled: boolean },
  done: (reason?: string) => void,
): void {
  const chunks = regularFile ? [Buffer.from(lines.join(''))] : pipeChunks(lines);
  let i = 0;
  let offset = 0;
  const next = (): void => {
    if (writing.stalled) {
      done('stalled');
      return;
    }
    const chunk = chunks[i];
    if (!chunk) {
      let reason: string | undefined;
      try {
        reason = regularFile && fstatSync(fd).nlink === 0 ? REMOVED : undefined;
      } catch (e) {
        reason = errnoOf(e);
      }
      done(reason);
      return;
    }
    write(fd, chunk, offset, chunk.length - offset, null, (err, n) => {
      // A FIFO or a non-blocking stdout that is full: wait for the reader (the stall check bounds it).
      if (err?.code === 'EAGAIN') return void setTimeout(next, 1);
      if (err) return done(errnoOf(err));
      if (n < chunk.length - offset) {
        if (regularFile) return done('short write');
        offset += n;
        return next();
      }
      i++;
      offset = 0;
      next();
    });
  };
  next();
}
