// Parsers for option values. Each throws a UserError naming the option and the fix.

import { Errors } from '../errors.ts';
import type { Endpoint } from '../protocol/server.ts';

const UNITS: Record<string, number> = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40, P: 2 ** 50 };

/** "10G" -> 10737418240. Suffixes are powers of 1024; "10GiB" and "10gb" are accepted too. */
export function parseSize(option: string, text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*$/i.exec(text);
  if (!match) throw Errors.badSize(option, text);
  const bytes = Number(match[1]) * UNITS[match[2]!.toUpperCase()]!;
  // A whole number too large to be exact is a size, just too big: say so, not "not a size".
  if (Number.isInteger(bytes) && !Number.isSafeInteger(bytes)) {
    throw Errors.sizeTooLarge(option, text, option === '--size' ? '1 PiB' : '8 PiB');
  }
  if (!Number.isSafeInteger(bytes)) throw Errors.badSize(option, text);
  return bytes;
}

/** "HOST:PORT", "[v6]:PORT" or ":PORT" (all interfaces). */
export function parseListen(text: string): Endpoint {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text.trim());
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) throw Errors.badListen(text);
  return { host: match[1] ?? (match[2] || '0.0.0.0'), port };
}

/** Environment flags: 1/true/yes/on or 0/false/no/off (empty means unset). */
export function parseFlag(name: string, text: string | undefined): boolean | undefined {
  if (text === undefined || text === '') return undefined;
  if (/^(1|true|yes|on)$/i.test(text)) return true;
  if (/^(0|false|no|off)$/i.test(text)) return false;
  throw new Error(`${name}="${text}" is not a flag; use 1 or 0`);
}

export function formatBytes(bytes: number): string {
  for (const unit of ['P', 'T', 'G', 'M', 'K'] as const) {
    const scale = UNITS[unit]!;
    if (bytes >= scale) return `${Number((bytes / scale).toFixed(2))} ${unit}iB`;
  }
  return `${bytes} bytes`;
}

const DURATION_UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "1h", "15m", "1h30m", "2d" -> milliseconds; at least `minMs`. */
export function parseDuration(option: string, text: string, minMs: number): number {
  const parts = /^(?:\d+[smhd])+$/.test(text.trim()) ? [...text.trim().matchAll(/(\d+)([smhd])/g)] : [];
  const ms = parts.reduce((sum, m) => sum + Number(m[1]) * DURATION_UNITS[m[2]!]!, 0);
  const min = minMs % 60_000 === 0 ? `${minMs / 60_000}m` : `${minMs / 1000}s`;
  if (parts.length === 0 || !Number.isSafeInteger(ms) || ms < minMs) throw Errors.badDuration(option, text, min);
  return ms;
}
