import type { Logger } from 'pino';

/** What an uncaught value says about itself: its class and message, never its stack or fields (they could hold anything). */
function describe(e: unknown): { type: string; message: string } {
  if (e instanceof Error) return { type: e.name, message: e.message.slice(0, 500) };
  return { type: typeof e, message: typeof e === 'string' ? e.slice(0, 500) : '(not an Error)' };
}

/**
 * An exception nobody caught, or a rejection nobody handled, leaves the process in a state nobody
 * checked: one fatal line, then exit 1. A cluster's primary starts another worker; a single
 * process is restarted by its supervisor.
 */
export function exitOnUncaught(logger: Logger): void {
  const fatal =
    (what: string) =>
    (e: unknown): void => {
      // Not under `err`: pino's serializer there would add the stack.
      logger.fatal({ error: describe(e) }, `${what}: exiting`);
      // biome-ignore lint/nursery/noProcessExit: the state is unknown: exiting at once, without a drain, is the point
      process.exit(1);
    };
  process.on('uncaughtException', fatal('uncaught exception'));
  process.on('unhandledRejection', fatal('unhandled rejection'));
}
