// Small writes to the cache's files (a 4 KiB write's journal record and its slot bytes) are
// made with a synchronous write(2) from the event loop. Into the page cache that takes a few
// microseconds, where a trip through libuv's thread pool costs tens of microseconds of CPU and
// a thread wakeup each way: 4 KiB random writes over 256 MiB of an S3 volume made 1.31x the
// IOPS at 0.72 of the gateway's CPU per write (bench/results/random-writes-hot.md).
//
// But a write(2) that blocks (the kernel throttling writers while it writes back dirty pages,
// a slow or failing disk) would stall every connection, not only the requests that write. So a
// write that took longer than SLOW_MS sends the next ones through the thread pool for
// POOLED_MS; then they are tried inline again. Each slow write in a row doubles that time (up
// to MAX_POOLED_MS), so a disk that stays slow stalls the event loop once a minute at most, not
// once a second; a quick inline write resets it. A write that never returns (a hung disk) would
// hang the event loop, where the thread pool would only have lost a thread: the price of the
// fast path, on a disk whose writes would never complete either way.

import { writeSync, writevSync } from 'node:fs';

/** The synchronous calls, through an object so that a test can make them fail (t.mock.method). */
export const syncCalls = { writeSync, writevSync };

/** An inline write that took longer than this: the disk is not keeping up. */
export const SLOW_MS = 2;
/** How long writes go through the thread pool after a slow one... */
export const POOLED_MS = 1000;
/** ...doubled for each slow one in a row, up to this. */
export const MAX_POOLED_MS = 64_000;

export class InlineWrites {
  private readonly maxBytes: number;
  private readonly now: () => number;
  private pooledUntil = -Infinity;
  private pooledMs = POOLED_MS;

  /** Writes of at most `maxBytes` go inline; `now` in milliseconds (tests give a fake one). */
  constructor(maxBytes: number, now: () => number = () => performance.now()) {
    this.maxBytes = maxBytes;
    this.now = now;
  }

  /** Whether writes of this size go inline now. */
  inline(bytes: number): boolean {
    return bytes <= this.maxBytes && this.now() >= this.pooledUntil;
  }

  /**
   * Runs `sync` (the synchronous write) when a write of `bytes` goes inline, else `pooled` (the
   * same write through the thread pool). Either way a failure is a rejection.
   */
  async write<T>(bytes: number, sync: () => T, pooled: () => Promise<T>): Promise<T> {
    if (!this.inline(bytes)) return pooled();
    const started = this.now();
    try {
      return sync();
    } finally {
      const ended = this.now();
      if (ended - started > SLOW_MS) {
        this.pooledUntil = ended + this.pooledMs;
        this.pooledMs = Math.min(this.pooledMs * 2, MAX_POOLED_MS);
      } else {
        this.pooledMs = POOLED_MS;
      }
    }
  }
}
