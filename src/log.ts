// Structured logs (pino) on stderr, so stdout stays free for command output such as
// `s3nbd info --json`. Fields that could carry secrets are redacted wherever they appear:
// pino redacts while it serializes, before any output format sees the record.
//
// --log-format: JSON lines for machines (journald, docker, a pipe), readable lines for people
// (pino-pretty); `auto`, the default, picks readable lines when stderr is a terminal.

import { createRequire } from 'node:module';
import { pino, type DestinationStream, type Logger } from 'pino';
import type { prettyFactory as PrettyFactory } from 'pino-pretty';
import { Errors } from './errors.ts';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export const LOG_FORMATS = ['auto', 'json', 'pretty'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

const SECRET_FIELDS = ['secretAccessKey', 'sessionToken', 'accessKeyId', 'password', 'authorization', 'credentials', 'passphrase', 'dataKey', 'kek'];

/** Fields that only machines need on the start line (connect-hint.ts says them in the message already). */
const PRETTY_HIDDEN = ['pid', 'hostname', 'name', 'connect'];

export interface LogOutput {
  /** Where the lines go (default 2, stderr). */
  readonly fd?: number;
  /** Whether that is a terminal (default: whether stderr is one). */
  readonly isTTY?: boolean;
}

/** auto: readable lines on a terminal, JSON lines anywhere else. */
export function resolveLogFormat(format: string, isTTY: boolean): 'json' | 'pretty' {
  if (format === 'auto') return isTTY ? 'pretty' : 'json';
  if (format === 'json' || format === 'pretty') return format;
  throw Errors.badChoice('--log-format', format, LOG_FORMATS);
}

export function createLogger(level: string, format: string = 'auto', output: LogOutput = {}): Logger {
  if (!(LOG_LEVELS as readonly string[]).includes(level)) throw Errors.badLogLevel(level);
  const fd = output.fd ?? 2;
  const isTTY = output.isTTY ?? process.stderr.isTTY === true;
  const options = {
    level,
    base: { name: 's3nbd' },
    redact: { paths: SECRET_FIELDS.flatMap((f) => [f, `*.${f}`]), censor: '[redacted]' },
  };
  return pino(options, resolveLogFormat(format, isTTY) === 'pretty' ? prettyDestination(fd, isTTY) : pino.destination({ fd, sync: false }));
}

/**
 * pino-pretty's formatter in the main thread, writing synchronously: no worker thread (a pino
 * transport) and no stream buffer between a line and the terminal, so a process.exit() right
 * after a log call loses nothing, and a line is on screen before the next statement runs.
 */
function prettyDestination(fd: number, isTTY: boolean): DestinationStream {
  // Loaded only here: about 10 MiB of a gateway's resident memory that JSON logging never needs.
  const { prettyFactory } = createRequire(import.meta.url)('pino-pretty') as { prettyFactory: typeof PrettyFactory };
  const format = prettyFactory({
    colorize: isTTY && process.env.NO_COLOR === undefined,
    translateTime: 'SYS:HH:MM:ss.l',
    ignore: PRETTY_HIDDEN.join(','),
    singleLine: true,
  });
  // sonic-boom's synchronous mode retries EAGAIN on a non-blocking pipe or socket (journald).
  const out = pino.destination({ fd, sync: true });
  return {
    write: (line: string) => { out.write(format(line)); },
  };
}
