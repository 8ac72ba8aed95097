// Structured logs (pino) on stderr, so stdout stays free for command output such as
// `s3nbd info --json`. Fields that could carry secrets are redacted wherever they appear.

import { pino, type Logger } from 'pino';
import { Errors } from './errors.ts';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

const SECRET_FIELDS = ['secretAccessKey', 'sessionToken', 'accessKeyId', 'password', 'authorization', 'credentials', 'passphrase', 'dataKey', 'kek'];

export function createLogger(level: string): Logger {
  if (!(LOG_LEVELS as readonly string[]).includes(level)) throw Errors.badLogLevel(level);
  return pino({
    level,
    base: { name: 's3nbd' },
    redact: { paths: SECRET_FIELDS.flatMap((f) => [f, `*.${f}`]), censor: '[redacted]' },
  }, pino.destination({ fd: 2, sync: false }));
}
