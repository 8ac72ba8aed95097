// Clean extents the cache keeps without an entry: the memory cache (least recently used
// first; what it evicts goes to a disk slot as a CLEAN entry), the stream window (extents read
// ahead for sequential reads once the memory cache is full, which then bypass both caches, and
// sequential whole-extent writes until their upload: see fetch() and stream()), and the
// fetches in flight, one GET shared by every reader of an extent.
//
// Neither the memory cache nor the stream window ever holds stale bytes: every change to an
// extent removes it from both first (invalidate()), and they are refilled only with the
// extent's current bytes (a whole-extent write, an upload that nothing changed since, or a
// fetch of an extent without an entry). That is this file's whole contract with the dirty
// half of the cache; its only other ties to it are whether an extent has an entry, and the
// bases of new entries (holdBase()): the stored bytes a partly written extent's gaps are
// filled from, kept in the memory cache under keys no read looks up.

import type { LRUCache } from 'lru-cache';
import { type ExtentMemory, extentMemory } from '../extents/extent-memory.ts';
import type { CacheContext } from './context.ts';
import type { EntryTable } from './entries.ts';
import { Ranges } from './ranges.ts';

interface Fetch {
  readonly promise: Promise<Buffer | undefined>;
  /** Set when the extent changed while the fetch was in flight: its result must not be cached. */
  stale: boolean;
  /** Whether the result goes to the memory cache (else only to the stream window). */
  keep: boolean;
}

/** Extents a sequential read fetches ahead of the one it reads. */
const READ_AHEAD = 8;
/**
 * Extents a sequential read fetched are kept only in a window this big (no bigger than the
 * memory cache, at least 2 x READ_AHEAD extents), not in the memory or disk cache: see
 * fetch().
 */
const STREAM_WINDOW_BYTES = 64 * 1024 * 1024;
/**
 * Extents the memory cache evicted that wait to be written into the disk cache, in bytes (at
 * least two extents). Past it, an evicted extent is simply dropped: a slow disk must not make
 * evicted extents pile up in memory.
 */
export const MAX_FILL_BYTES = 16 * 1024 * 1024;

/** The stream window: no bigger than the memory cache, at most 64 MiB, at least 2 x READ_AHEAD extents. */
export function streamWindowBytes(memoryCacheBytes: number, extentSize: number): number {
  return Math.max(Math.min(STREAM_WINDOW_BYTES, memoryCacheBytes), 2 * READ_AHEAD * extentSize);
}

/** Where the memory cache keeps an entry's base (holdBase()): negative, so no extent index is one. */
function baseKey(index: number): number {
  return -1 - index;
}

export class CleanExtents {
  private readonly memory: ExtentMemory;
  /** Extents fetched for sequential reads, until they are read (see fetch()). */
  private readonly streamed: LRUCache<number, Buffer>;
  private readonly fetches = new Map<number, Fetch>();
  /** Extents the memory cache evicted, on their way into the disk cache (see evictedFromMemory). */
  private readonly evicted = new Map<number, Buffer>();
  /** Those disk-cache fills in flight: close() waits for them before the slot file is closed. */
  private readonly fills = new Set<Promise<void>>();
  /** Buffers the memory cache got from the store for reads that keep them (not uploads, not a stream's fill): only these go to disk. */
  private readonly fetched = new WeakSet<Buffer>();
  private lastRead = -2;

  private readonly ctx: CacheContext;
  private readonly table: EntryTable;

  constructor(ctx: CacheContext, table: EntryTable) {
    this.ctx = ctx;
    this.table = table;
    const { memoryCacheBytes } = ctx.options;
    this.memory = extentMemory(memoryCacheBytes, ctx.extentSize, { onEvict: (index, data) => this.evictedFromMemory(index, data), elastic: true });
    this.streamed = extentMemory(streamWindowBytes(memoryCacheBytes, ctx.extentSize), ctx.extentSize);
  }

  /** The extent's bytes if either cache has them (a read uses them). */
  get(index: number): Buffer | undefined {
    return this.memory.get(index) ?? this.streamed.get(index);
  }

  /** The extent's bytes in the memory cache or the stream window, without making them recently used. */
  peek(index: number): Buffer | undefined {
    return this.memory.peek(index) ?? this.streamed.peek(index);
  }

  /** Keeps the extent's current bytes (a whole-extent write, an upload) in the memory cache. */
  keep(index: number, data: Buffer): void {
    this.memory.set(index, data);
  }

  /**
   * Keeps the current bytes of a whole extent written in a sequential run in the stream window,
   * not the memory cache (see changes.ts): its upload, due soon, takes them from there instead
   * of reading the journal back, and nothing hot is pushed out for them.
   */
  stream(index: number, data: Buffer): void {
    this.streamed.set(index, data);
  }

  /**
   * The extent gets an entry for its first change while the store holds it: its clean bytes,
   * if memory has them (the memory cache, the stream window, or on their way to disk), stay in
   * the memory cache as the entry's base, under a key no read looks up (baseKey()), and the
   * current copy is forgotten as by invalidate(). The upload that fills the entry's gaps then
   * takes them from there instead of a GET (EntryBytes.completeFromStore()): without it, 4 KiB
   * random writes over data just read fetched every extent again for its upload. A base counts
   * against the memory cache like any extent and is evicted like one (the upload then GETs);
   * it is never written to disk. Buffers in these caches are never changed in place, so the
   * base stays the stored bytes for as long as the entry needs it.
   */
  holdBase(index: number): void {
    const data = this.memory.peek(index) ?? this.streamed.peek(index) ?? this.evicted.get(index);
    this.invalidate(index);
    if (data) this.memory.set(baseKey(index), data);
    else this.memory.delete(baseKey(index));
  }

  /** The base held by holdBase() for the extent's entry, if still in memory. */
  base(index: number): Buffer | undefined {
    return this.memory.peek(baseKey(index));
  }

  /** The entry no longer needs a base (its gaps are filled, or its base is zeros). */
  dropBase(index: number): void {
    this.memory.delete(baseKey(index));
  }

  /** The extent changes: forget its remembered clean copy and any fetch in flight. */
  invalidate(index: number): void {
    this.memory.delete(index);
    this.streamed.delete(index);
    this.evicted.delete(index);
    const fetch = this.fetches.get(index);
    if (fetch) fetch.stale = true;
  }

  /**
   * Sequential reads fetch the next extents in parallel. Says whether this read is part of a
   * sequential stream: the extent after the last one read, or another piece of that one.
   */
  readAhead(index: number): boolean {
    const { lower, extentCount } = this.ctx;
    const sequential = index === this.lastRead + 1;
    const sameExtent = index === this.lastRead;
    this.lastRead = index;
    if (!sequential) return sameExtent;
    for (let i = index + 1; i <= index + READ_AHEAD && i < extentCount; i++) {
      // No request waits for these: never queue them behind the store's fetch limit.
      if (lower.fetchesFull) break;
      if (!this.table.has(i) && !this.memory.has(i) && !this.streamed.has(i) && !this.fetches.has(i) && lower.isStored(i)) {
        this.fetch(i, false).catch((err: unknown) => this.ctx.log.debug({ err, index: i }, 'read-ahead failed'));
      }
    }
    return true;
  }

  /** Fetches stored extents without entries into the memory cache, as many as it holds. */
  async prefetch(first: number, count: number): Promise<void> {
    const room = Math.floor(this.memory.ceiling / this.ctx.extentSize);
    const wanted = [...this.ctx.lower.storedIn(first, count)].filter((i) => !this.table.has(i) && !this.memory.has(i)).slice(0, room);
    const parallel = this.ctx.options.uploadConcurrency;
    for (let i = 0; i < wanted.length; i += parallel) {
      await Promise.all(wanted.slice(i, i + parallel).map((index) => this.fetch(index, true)));
    }
  }

  /**
   * Fetches a stored extent that has no entry, sharing one GET among concurrent readers.
   * Resolves undefined if the extent changed meanwhile.
   *
   * With `keep`, the extent is remembered in the memory cache (and, once evicted, on disk).
   * Without (a sequential read), it goes to the memory cache only while that has free room
   * (hasRoom), else it only waits in the stream window until it is read: a sequential read of
   * a large region (a restore, a copy) would otherwise push every hot extent out of both
   * caches and write the whole region to the local disk for nothing. A reader that wants to
   * keep an extent whose fetch is in flight (or waiting in the window) moves it to the memory
   * cache.
   */
  fetch(index: number, keep: boolean): Promise<Buffer | undefined> {
    const existing = this.fetches.get(index);
    if (existing && !existing.stale) {
      existing.keep ||= keep;
      return existing.promise;
    }
    const streamed = keep ? this.streamed.get(index) : undefined;
    if (streamed) {
      this.streamed.delete(index);
      this.remember(index, streamed);
      return Promise.resolve(streamed);
    }
    const fetch: Fetch = {
      stale: false,
      keep,
      promise: this.ctx.lower.fetch(index).then((data) => {
        if (this.fetches.get(index) === fetch) this.fetches.delete(index);
        if (fetch.stale || this.table.has(index)) return undefined;
        const extent = data ?? Buffer.alloc(this.ctx.extentSize);
        if (fetch.keep) this.remember(index, extent);
        // Not remember(): what a stream leaves in free memory is not written to disk once evicted.
        else if (this.hasRoom()) this.memory.set(index, extent);
        else this.streamed.set(index, extent);
        return extent;
      }, (err: unknown) => {
        if (this.fetches.get(index) === fetch) this.fetches.delete(index);
        throw err;
      }),
    };
    this.fetches.set(index, fetch);
    return fetch.promise;
  }

  /** Disk-cache fills in flight finish (or fail) before the slot file is closed. */
  async close(): Promise<void> {
    await Promise.all(this.fills);
  }

  /**
   * Whether the memory cache has room for one more extent without evicting any: a sequential
   * read keeps what it fetched while it does, so the same data read again (a second pass, a
   * verify after a backup) comes from memory, and a stream that outgrows the room never pushes
   * out what was there before it.
   */
  private hasRoom(): boolean {
    return this.memory.calculatedSize + this.ctx.extentSize <= this.memory.ceiling;
  }

  /** Keeps a clean extent fetched from the store in the memory cache, and so on disk later. */
  private remember(index: number, data: Buffer): void {
    this.fetched.add(data);
    this.memory.set(index, data);
  }

  /**
   * The memory cache pushed out a clean extent it had read from the store, which the disk
   * cache does not have: keep it in a disk slot, as a CLEAN entry (the disk cache is the
   * larger, second level for reads). Extents that entered memory by being uploaded are not
   * written again: sequential writes would otherwise pay a second local write. Nor are those a
   * sequential read left in free memory (fetch()): a region read once in a stream would
   * otherwise cost a local write of an extent each time anything else needs the room (4 KiB
   * random writes after a read of 1 GiB: one per upload, bench/random-writes.ts). Skipped if the
   * extent changes meanwhile (invalidate() forgets it), or if no slot can be had without
   * waiting or without taking one from writes that wait for room, or if MAX_FILL_BYTES of
   * extents already wait for their slot.
   */
  private evictedFromMemory(index: number, data: Buffer): void {
    const { extentSize } = this.ctx;
    if (index < 0) return; // a base (holdBase()): its entry fetches it again if it needs it
    if (this.ctx.closed || this.table.has(index) || !this.fetched.has(data)) return;
    if (this.fills.size * extentSize >= Math.max(MAX_FILL_BYTES, 2 * extentSize)) return;
    this.evicted.set(index, data);
    const fill = this.keepOnDisk(index, data)
      .catch((err: unknown) => this.ctx.log.warn({ err, index }, 'could not keep an extent in the disk cache'))
      .finally(() => {
        if (this.evicted.get(index) === data) this.evicted.delete(index);
        this.fills.delete(fill);
      });
    this.fills.add(fill);
  }

  private async keepOnDisk(index: number, data: Buffer): Promise<void> {
    await this.ctx.locks.with(index, async () => {
      if (this.ctx.closed || this.evicted.get(index) !== data || this.table.has(index) || this.table.roomWanted) return;
      const slot = this.table.takeSlotNow();
      if (slot === undefined) return;
      const e = this.table.create(index);
      e.slot = slot;
      try {
        await this.ctx.slots.write(slot, 0, data);
      } catch (err) {
        this.table.releaseSlot(e);
        this.table.forget(e);
        throw err;
      }
      e.valid = Ranges.full(this.ctx.extentSize);
      this.table.markClean(e);
    });
  }
}
