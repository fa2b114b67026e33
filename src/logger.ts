import { pino, type DestinationStream, type Logger } from 'pino';

/**
 * Fields pino replaces with "[redacted]" wherever a log call passes them: credentials a request
 * carries and PINs a configuration or environment object holds. A backstop: the service logs
 * none of them on purpose.
 */
export const REDACTED_PATHS = [
  'authorization',
  '*.authorization',
  'headers.authorization',
  'req.headers.authorization',
  'pin',
  '*.pin',
  '*.*.pin',
  'HSM_PIN',
  '*.HSM_PIN',
  'HSM_ADMIN_PIN',
  '*.HSM_ADMIN_PIN',
  'password',
  '*.password',
  'token',
  '*.token',
];

export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino({ level, base: { pid: process.pid }, redact: { paths: REDACTED_PATHS, censor: '[redacted]' } }, destination);
}
