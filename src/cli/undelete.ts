// `s3nbd undelete`: brings back every object of a volume deleted at or after --since, in a
// bucket that keeps old versions (versioning, or Object Lock: see docs/s3.md). It removes the
// delete markers written since then, so each key's previous version is current again; nothing
// is copied. Keys deleted before --since (extents a TRIM zeroed) stay deleted.
//
// Safe to interrupt (Ctrl-C) at any point and run again: what is done stays done, and the rest
// is found again. Progress goes to stderr while it is a terminal; the summary to stdout.

import { pino } from 'pino';
import { Errors } from '../errors.ts';
import { openObjectStore } from '../storage/objects/store-url.ts';
import { undelete, type UndeleteProgress } from '../storage/objects/undelete.ts';
import { type StoreOptions, s3OptionsOf } from './store-options.ts';

export interface UndeleteCliOptions extends StoreOptions {
  since: string;
  dryRun?: boolean;
}

/** --since: a date and time (ISO 8601 with a zone is best); a bare date or time is local. */
export function parseSince(text: string): Date {
  const time = Date.parse(text);
  if (!Number.isFinite(time)) throw Errors.badTime('--since', text);
  return new Date(time);
}

export async function runUndelete(raw: Record<string, unknown>): Promise<void> {
  const opts = raw as unknown as UndeleteCliOptions;
  const since = parseSince(opts.since);
  const objects = openObjectStore(opts.store, s3OptionsOf(opts), pino({ level: 'silent' }));
  const tty = process.stderr.isTTY;
  const onProgress = (p: UndeleteProgress): void => {
    if (tty) process.stderr.write(`\r\x1b[K${p.listed} versions listed, ${p.keys} keys deleted since then${opts.dryRun ? '' : `, ${p.removed} delete markers removed`}`);
  };
  try {
    const result = await undelete(objects, { since, dryRun: opts.dryRun, onProgress });
    if (tty) process.stderr.write('\r\x1b[K');
    const when = since.toISOString();
    if (result.keys === 0) {
      process.stdout.write(`nothing in ${objects.description} was deleted at or after ${when} (${result.listed} versions listed)\n`);
      return;
    }
    const span = result.first && result.last ? `, written ${result.first.toISOString()} to ${result.last.toISOString()}` : '';
    const examples = `e.g. ${result.sample.slice(0, 3).join(', ')}`;
    process.stdout.write(opts.dryRun
      ? `would restore ${result.keys} keys of ${objects.description} deleted at or after ${when} by removing ${result.markers} delete markers${span}; ${examples}\n`
        + 'run it again without --dry-run to restore them\n'
      : `restored ${result.keys} keys of ${objects.description} deleted at or after ${when}: ${result.removed} delete markers removed${span}; ${examples}\n`);
  } finally {
    if (tty) process.stderr.write('\r\x1b[K');
    await objects.close();
  }
}
