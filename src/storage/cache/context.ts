// What every part of the write-back cache shares: its options, the files it keeps, the layer
// below, the extent locks, a clock, and whether it is still open. The parts (entries.ts,
// entry-bytes.ts, clean-extents.ts, flusher.ts, changes.ts) each get this one object instead
// of reaching into each other's fields; write-back-cache.ts builds it in open().

import type { Logger } from 'pino';
import type { Clock } from '../../clock.ts';
import type { VolumeTelemetry } from '../../telemetry.ts';
import type { ExtentLocks } from '../extents/extent-locks.ts';
import type { ExtentObjects } from '../extents/extent-objects.ts';
import { StorageError } from '../storage-error.ts';
import type { Journal } from './journal.ts';
import type { SlotFile } from './slot-file.ts';

export interface WriteBackOptions {
  /** Directory of the journal and the slot file. */
  readonly cacheDir: string;
  /** Disk space for cached extents (dirty and clean). */
  readonly cacheBytes: number;
  /** Memory for clean extents. */
  readonly memoryCacheBytes: number;
  /** Dirty data allowed before writes wait for uploads. */
  readonly maxDirtyBytes: number;
  readonly uploadConcurrency: number;
  /** 's3': FLUSH waits for uploads; 'local': FLUSH fsyncs the journal only. */
  readonly flushMode: 's3' | 'local';
  /** How long a dirty extent must go unchanged before upload, so a burst of writes uploads once. */
  readonly uploadDelayMs: number;
  readonly log: Logger;
  /** False while uploads must not start, nor retry (the writer lease may have expired). */
  readonly mayUpload?: () => boolean;
  /**
   * Called once if the journal fails for good (a failed fsync, a write error other than a
   * full disk): writes are refused from then on, and the gateway should stop.
   */
  readonly onFailed?: (err: Error) => void;
  /** Time and randomness for the flusher; tests pass a manual clock. Default: the real ones. */
  readonly clock?: Clock;
  /** Told of uploads and of where reads found their extents (the admin endpoint's metrics). */
  readonly telemetry?: VolumeTelemetry | undefined;
}

/** Lines about a condition that repeats with every request (a full disk, failing uploads): one per this many ms. */
export const REPEAT_LOG_INTERVAL_MS = 10_000;

export class CacheContext {
  readonly extentSize: number;
  /** The layer below's: it grows with the volume (ObjectExtents.grow); the journal's records carry indexes, not a count. */
  get extentCount(): number {
    return this.lower.extentCount;
  }

  /** Aborted when close() begins: no upload starts or retries from then on, and their waits end. */
  private readonly closing = new AbortController();
  /** Set when another gateway took the volume over: changes are refused, uploads stop. */
  fenced: string | undefined;

  readonly options: WriteBackOptions;
  readonly lower: ExtentObjects;
  readonly journal: Journal;
  readonly slots: SlotFile;
  readonly locks: ExtentLocks;
  readonly clock: Clock;

  constructor(options: WriteBackOptions, lower: ExtentObjects, journal: Journal, slots: SlotFile, locks: ExtentLocks, clock: Clock) {
    this.options = options;
    this.lower = lower;
    this.journal = journal;
    this.slots = slots;
    this.locks = locks;
    this.clock = clock;
    this.extentSize = lower.extentSize;
  }

  get log(): Logger {
    return this.options.log;
  }

  get closed(): boolean {
    return this.closing.signal.aborted;
  }

  /** Aborts when close() begins. */
  get closingSignal(): AbortSignal {
    return this.closing.signal;
  }

  close(): void {
    this.closing.abort(new StorageError('ESHUTDOWN', 'the cache is closed'));
  }

  /** Throws what a change must answer when the cache no longer takes changes. */
  checkOpen(): void {
    if (this.closed) throw new StorageError('ESHUTDOWN', 'the cache is closed');
    this.checkNotFenced();
  }

  checkNotFenced(): void {
    if (this.fenced !== undefined) throw new StorageError('EPERM', `this gateway was fenced off: ${this.fenced} took over the volume`);
  }
}
