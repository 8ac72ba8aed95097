// The write-back cache: writes are acknowledged from local disk and uploaded later.
//
// Every extent the cache knows about has an Entry. Its state follows from a few fields:
//
//   state                      slot  valid   gen vs uploadedGen   uploading   zeros
//   (no entry)                 -     -       -                    -           -      the object store is the truth
//   CLEAN                      yes   full    equal                no          no     evictable
//   DIRTY                      yes   any     gen > uploadedGen    no          no     waits for the flusher
//   PARTIAL (a kind of DIRTY)  yes   some    gen > uploadedGen    no          no     the rest is in the store (or zeros: baseIsZero)
//   UPLOADING                  yes   full    equal to snapshot    yes         no     a put of `uploading` is in flight
//   REWRITTEN-WHILE-UPLOADING  yes   full    gen > snapshot       yes         no     uploaded again once the put ends
//   ZERO-DIRTY                 no    -       gen > uploadedGen    no          yes    discarded: a delete is pending
//   DELETING                   no    -       -                    yes         yes    the delete is in flight
//
// Large writes are not copied into the slot: the entry's `journalPieces` point at their
// journal records, whose payloads lie over the slot's bytes (newest last). A write of the
// whole extent replaces every piece and leaves the slot (reserved, for the dirty limit) wholly
// stale. Writing the bytes once, not twice, halves the local I/O of sequential writes and of
// a file system's writeback (large, unaligned writes). The buffer of a whole-extent write
// (kept, not copied: see write()) also goes to the memory cache, which reads and the upload
// use while it holds it. (Not in a run of sequential whole-extent writes, which bypass the
// memory cache: see change().) A small write, a zeroing, or one piece too many first copies
// the pieces into the slot (materialize()). Once uploaded, an entry with pieces is dropped
// (the store and the memory cache hold the extent), because the journal segments may then be
// deleted.
//
// Neither the memory cache nor the stream window (extents read ahead for sequential reads,
// which bypass the memory and disk caches: see fetchClean()) ever holds stale bytes: every
// change to an extent removes it from both first (invalidate()), and they are refilled only
// with the extent's current bytes (a whole-extent write, an upload that nothing changed
// since, or a fetch of an extent without an entry).
//
// Invariants, and why:
// - A write is acknowledged only after its journal record and its slot bytes (for a journal
//   piece: its journal record alone) reached the kernel, so a crash of this process loses
//   nothing acknowledged (journal.ts replays it).
// - A write never reads the object store: a partial write into an extent that is stored but
//   not cached creates a PARTIAL entry, whose missing bytes (`valid` gaps) are merged from the
//   store later, when the extent is read or uploaded.
// - `gen` is the journal sequence number of the entry's last change. An upload snapshots the
//   slot at `gen`; when it ends, the entry is clean only if nothing changed since (gen still
//   equals the snapshot), so an upload that finishes late can never mark newer data clean.
//   One upload per extent at a time, so the store receives an extent's versions in order.
// - Only CLEAN entries are evicted, and only when no request holds their lock.
// - FLUSH waits until every extent dirty at that moment has been uploaded up to the gen it had;
//   FUA waits for the extents it touched. Concurrent flushes share the same uploads.
// - Dirty extents with slots are limited to --max-dirty: a write that would dirty one more
//   waits for uploads (logged), the only case where a write waits for the store.

import { statfsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import type { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import { Errors } from '../../errors.ts';
import { LogThrottle } from '../../log-throttle.ts';
import { ExtentLocks } from '../extents/extent-locks.ts';
import { extentMemory } from '../extents/extent-memory.ts';
import type { ExtentRun, ExtentStore } from '../extent-store.ts';
import { StorageError } from '../storage-error.ts';
import { Journal, type JournalLocation, type JournalRecord, RecordType, SEGMENT_BYTES, uploadedGeneration, uploadedRecord } from './journal.ts';
import type { ExtentObjects } from '../extents/extent-objects.ts';
import { Ranges } from './ranges.ts';
import { SlotFile } from './slot-file.ts';
import { isAllZero } from '../extents/zeros.ts';

/**
 * Writes of at least 64 KiB (or 1/16 of a smaller extent) become journal pieces, not slot
 * writes, up to MAX_PIECES per extent. Smaller ones go to the slot: small random writes would
 * otherwise gather pieces only to copy them into the slot later, paying a journal read each.
 */
const MIN_PIECE_BYTES = 64 * 1024;
const MAX_PIECES = 16;

/** The longest a dirty extent that keeps changing waits before it is uploaded. */
const MAX_DIRTY_AGE_MS = 10_000;

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
}

/** Lines about a condition that repeats with every request (a full disk, failing uploads): one per this many ms. */
const REPEAT_LOG_INTERVAL_MS = 10_000;

interface Entry {
  readonly index: number;
  slot: number | undefined;
  /** Bytes of the slot that are current; gaps are still only in the object store. */
  valid: Ranges;
  /** The bytes outside `valid` are zeros (the store has no such extent, or it was discarded). */
  baseIsZero: boolean;
  /** The extent is all zeros (discarded); it has no slot. */
  zeros: boolean;
  gen: number;
  uploadedGen: number;
  /**
   * The first change since the extent was last wholly in the store (gen <= uploadedGen): no
   * older journal record is needed to rebuild it, so the journal may be trimmed up to here.
   */
  firstDirtySeq: number;
  /** Generation being uploaded, if an upload is in flight. */
  uploading: number | undefined;
  /**
   * Changes whose bytes are only in the journal, oldest first: they lie over the slot's bytes,
   * which they make stale. A piece of the whole extent leaves the slot wholly stale. Emptied
   * by materialize().
   */
  journalPieces: JournalPiece[];
  /**
   * The last change was a whole-extent write in a run of sequential ones: its bytes stay out
   * of the memory cache, before the upload and after it (see change()).
   */
  streamedWrite: boolean;
  /** When the entry last became dirty, and when it last changed (for the upload policy). */
  dirtySince: number;
  lastChange: number;
}

/** A change whose bytes are the payload of a journal record, not (yet) in the slot. */
interface JournalPiece {
  readonly seq: number;
  readonly offset: number;
  readonly length: number;
  readonly where: JournalLocation;
}

interface Fetch {
  readonly promise: Promise<Buffer | undefined>;
  /** Set when the extent changed while the fetch was in flight: its result must not be cached. */
  stale: boolean;
  /** Whether the result goes to the memory cache (else only to the stream window). */
  keep: boolean;
}

interface Waiter {
  readonly gen: number;
  resolve(): void;
}

export interface CacheStatus {
  readonly dirtyExtents: number;
  readonly dirtyBytes: number;
  readonly pendingDeletes: number;
  readonly uploadsInFlight: number;
  readonly cachedExtents: number;
  readonly cacheSlots: number;
  readonly journalBytes: number;
  readonly uploadedExtents: number;
  readonly uploadFailures: number;
}

const ZERO_EXTENT_CHUNK = Buffer.alloc(1024 * 1024);
const RETRY_BASE_MS = 200;
const RETRY_CAP_MS = 15_000;
const READ_AHEAD = 8;
/**
 * Extents a sequential read fetched are kept only in a window this big (no bigger than the
 * memory cache, at least 2 x READ_AHEAD extents), not in the memory or disk cache: see
 * fetchClean().
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

export class WriteBackCache implements ExtentStore {
  readonly extentSize: number;
  /** Writes at least this large become journal pieces (see MIN_PIECE_BYTES). */
  private readonly minPieceBytes: number;
  readonly extentCount: number;
  private readonly lower: ExtentObjects;
  private readonly options: WriteBackOptions;
  private readonly log: Logger;
  private readonly entries = new Map<number, Entry>();
  /** CLEAN entries with slots, least recently used first. */
  private readonly cleanOrder = new Map<number, Entry>();
  /** Dirty entries (including ZERO-DIRTY), in the order they became dirty. */
  private readonly dirty = new Map<number, Entry>();
  private dirtySlots = 0;
  private readonly memory: LRUCache<number, Buffer>;
  /** Extents fetched for sequential reads, until they are read (see fetchClean()). */
  private readonly streamed: LRUCache<number, Buffer>;
  private readonly locks = new ExtentLocks();
  private readonly fetches = new Map<number, Fetch>();
  /** Extents the memory cache evicted, on their way into the disk cache (see evictedFromMemory). */
  private readonly evicted = new Map<number, Buffer>();
  /** Those disk-cache fills in flight: close() waits for them before it closes the slot file. */
  private readonly fills = new Set<Promise<void>>();
  /** Buffers the memory cache got from the store (not from uploads): only these go to disk. */
  private readonly fetched = new WeakSet<Buffer>();
  private readonly waiters = new Map<number, Waiter[]>();
  private readonly roomWaiters: Array<() => void> = [];
  private journal!: Journal;
  private slots!: SlotFile;
  private uploadsInFlight = 0;
  /** Extents with an upload task started (it may still wait for the extent's lock). */
  private readonly scheduled = new Set<number>();
  /** Sequence numbers of changes between reserve and markDirty. */
  private readonly inProgress = new Set<number>();
  private uploadedExtents = 0;
  private uploadFailures = 0;
  /** Flushes in progress: while any, dirty extents are uploaded without delay. */
  private urgent = 0;
  private pumpTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private fenced: string | undefined;
  private lastRead = -2;
  private lastWritten = -2;
  private warnedFull = false;
  private readonly dirtyLimitLog: LogThrottle;
  private readonly diskFullLog: LogThrottle;
  private readonly retryLog: LogThrottle;

  private constructor(lower: ExtentObjects, options: WriteBackOptions) {
    this.lower = lower;
    this.options = options;
    this.log = options.log;
    this.dirtyLimitLog = new LogThrottle(options.log, 'warn', { intervalMs: REPEAT_LOG_INTERVAL_MS });
    this.diskFullLog = new LogThrottle(options.log, 'warn', { intervalMs: REPEAT_LOG_INTERVAL_MS });
    this.retryLog = new LogThrottle(options.log, 'warn', { intervalMs: REPEAT_LOG_INTERVAL_MS });
    this.extentSize = lower.extentSize;
    this.minPieceBytes = Math.min(MIN_PIECE_BYTES, this.extentSize / 16);
    this.extentCount = lower.extentCount;
    this.memory = extentMemory(options.memoryCacheBytes, this.extentSize, (index, data) => this.evictedFromMemory(index, data));
    this.streamed = extentMemory(streamWindowBytes(options.memoryCacheBytes, this.extentSize), this.extentSize);
  }

  /** Opens the cache directory, replays the journal, and starts uploading what it recovered. */
  static async open(lower: ExtentObjects, options: WriteBackOptions): Promise<WriteBackCache> {
    const cache = new WriteBackCache(lower, options);
    await mkdir(options.cacheDir, { recursive: true });
    const slotCount = Math.floor(options.cacheBytes / lower.extentSize);
    cache.slots = await SlotFile.open(`${options.cacheDir}/extents.cache`, slotCount, lower.extentSize);
    const started = Date.now();
    const { journal, records, bytes } = await Journal.open(`${options.cacheDir}/journal`, {
      syncOnRollover: options.flushMode === 'local',
      onFailed: (err) => {
        options.log.error({ cacheDir: options.cacheDir, error: err.message },
          'the journal failed (the cache disk lost or refused data): writes are refused from now on; what is dirty is uploaded, '
          + 'then the gateway exits with status 4. Check the disk (dmesg) and restart: the journal replays what it holds');
        options.onFailed?.(err);
      },
    });
    cache.journal = journal;
    const replayed = await cache.replay(records);
    if (records.length > 0) {
      options.log.info({ records: records.length, replayed, bytes, dirtyExtents: cache.dirty.size, ms: Date.now() - started },
        'recovered unuploaded writes from the journal');
    }
    cache.pumpTimer = setInterval(() => cache.pump(), Math.max(20, Math.min(options.uploadDelayMs, 100)));
    cache.pump();
    return cache;
  }

  status(): CacheStatus {
    let pendingDeletes = 0;
    for (const e of this.dirty.values()) if (e.zeros) pendingDeletes++;
    return {
      dirtyExtents: this.dirtySlots,
      dirtyBytes: this.dirtySlots * this.extentSize,
      pendingDeletes,
      uploadsInFlight: this.uploadsInFlight,
      cachedExtents: this.slots.slotCount - this.slots.freeCount,
      cacheSlots: this.slots.slotCount,
      journalBytes: this.journal.bytes,
      uploadedExtents: this.uploadedExtents,
      uploadFailures: this.uploadFailures,
    };
  }

  // ---- reads ----------------------------------------------------------------------------

  async read(index: number, offset: number, length: number): Promise<Buffer | undefined> {
    const sequential = this.readAhead(index);
    const remembered = this.memory.get(index) ?? this.streamed.get(index);
    if (remembered) return remembered.subarray(offset, offset + length);
    if (!this.entries.has(index)) {
      if (!this.lower.isStored(index)) return undefined;
      const data = await this.fetchClean(index, !sequential);
      if (data) return data.subarray(offset, offset + length);
      // The extent changed while we fetched it: read it as it is now.
    }
    for (;;) {
      const result = await this.locks.with(index, async () => {
        const e = this.entries.get(index);
        if (!e) return { retry: true } as const;
        if (e.zeros) return { data: undefined };
        if (e.valid.covers(offset, offset + length)) {
          this.touch(e);
          return { data: await this.readCurrent(e, offset, length) };
        }
        return { needBase: true } as const;
      });
      if ('data' in result) return result.data;
      if ('needBase' in result) await this.completeFromStore(index);
      else return this.read(index, offset, length);
    }
  }

  async prefetch(first: number, count: number): Promise<void> {
    const room = Math.floor(this.memory.maxSize / this.extentSize);
    const wanted = [...this.lower.storedIn(first, count)].filter((i) => !this.entries.has(i) && !this.memory.has(i)).slice(0, room);
    for (let i = 0; i < wanted.length; i += this.options.uploadConcurrency) {
      await Promise.all(wanted.slice(i, i + this.options.uploadConcurrency).map((index) => this.fetchClean(index, true)));
    }
  }

  allocation(first: number, count: number, maxRuns: number): Promise<ExtentRun[]> {
    const runs: ExtentRun[] = [];
    const end = first + count;
    for (let i = first; i < end && runs.length < maxRuns;) {
      const allocated = this.isAllocated(i);
      let j = i + 1;
      while (j < end && this.isAllocated(j) === allocated) j++;
      runs.push({ count: j - i, allocated });
      i = j;
    }
    return Promise.resolve(runs);
  }

  private isAllocated(index: number): boolean {
    const e = this.entries.get(index);
    return e ? !e.zeros : this.lower.isStored(index);
  }

  /**
   * Sequential reads fetch the next extents in parallel. Says whether this read is part of a
   * sequential stream: the extent after the last one read, or another piece of that one.
   */
  private readAhead(index: number): boolean {
    const sequential = index === this.lastRead + 1;
    const sameExtent = index === this.lastRead;
    this.lastRead = index;
    if (!sequential) return sameExtent;
    for (let i = index + 1; i <= index + READ_AHEAD && i < this.extentCount; i++) {
      // No request waits for these: never queue them behind the store's fetch limit.
      if (this.lower.fetchesFull) break;
      if (!this.entries.has(i) && !this.memory.has(i) && !this.streamed.has(i) && !this.fetches.has(i) && this.lower.isStored(i)) {
        this.fetchClean(i, false).catch((err: unknown) => this.log.debug({ err, index: i }, 'read-ahead failed'));
      }
    }
    return true;
  }

  /**
   * Fetches a stored extent that has no entry, sharing one GET among concurrent readers.
   * Resolves undefined if the extent changed meanwhile.
   *
   * With `keep`, the extent is remembered in the memory cache (and, once evicted, on disk).
   * Without (a sequential read), it only waits in the stream window until it is read: a
   * sequential read of a large region (a restore, a copy) would otherwise push every hot
   * extent out of both caches and write the whole region to the local disk for nothing. On a
   * fresh gateway, it would also put every byte read into memory never touched before, which
   * costs more than the copy itself (docs/benchmarks.md). A reader that wants to keep an
   * extent whose fetch is in flight (or waiting in the window) moves it to the memory cache.
   */
  private fetchClean(index: number, keep: boolean): Promise<Buffer | undefined> {
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
      promise: this.lower.fetch(index).then((data) => {
        if (this.fetches.get(index) === fetch) this.fetches.delete(index);
        if (fetch.stale || this.entries.has(index)) return undefined;
        const extent = data ?? Buffer.alloc(this.extentSize);
        if (fetch.keep) this.remember(index, extent);
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

  /** Keeps a clean extent fetched from the store in the memory cache, and so on disk later. */
  private remember(index: number, data: Buffer): void {
    this.fetched.add(data);
    this.memory.set(index, data);
  }

  /** Fills the gaps of a PARTIAL entry from the store. */
  private async completeFromStore(index: number): Promise<void> {
    // A base known to be zeros needs no request.
    const skipFetch = this.entries.get(index)?.baseIsZero === true;
    const base = skipFetch ? undefined : await this.lower.fetch(index);
    await this.locks.with(index, async () => {
      const e = this.entries.get(index);
      if (!e || e.zeros || e.slot === undefined) return;
      if (skipFetch && !e.baseIsZero) return; // changed meanwhile: the caller looks again
      const fill = e.baseIsZero ? undefined : base;
      for (const [start, end] of e.valid.gaps(this.extentSize)) {
        await this.slots.write(e.slot, start, fill ? fill.subarray(start, end) : zeroBytes(end - start));
      }
      e.valid = Ranges.full(this.extentSize);
    });
  }

  // ---- writes ---------------------------------------------------------------------------

  /** A write of a whole extent keeps `data` (resolves true), unless it is one of a sequential run: see change(). */
  write(index: number, offset: number, data: Buffer): Promise<boolean> {
    return this.change(index, RecordType.WRITE, offset, data.length, data);
  }

  zero(index: number, offset: number, length: number): Promise<void> {
    const e = this.entries.get(index);
    if (e ? e.zeros : !this.lower.isStored(index)) return Promise.resolve();
    return this.change(index, RecordType.ZERO, offset, length, undefined).then(() => undefined);
  }

  /**
   * Journals a change and applies it. A whole extent's bytes are kept as they are, in the
   * memory cache: reads and the upload take them from there instead of reading the journal
   * back, and the caller gives up the buffer (resolves true).
   *
   * Except in a run of sequential whole-extent writes (a backup, a copy): like a sequential
   * read (fetchClean()), it would push every hot extent out of memory, and on a fresh gateway
   * fill memory never touched before, which costs more than reading the journal back for the
   * upload. The caller reuses the buffer for the next write instead.
   */
  private async change(index: number, type: typeof RecordType.WRITE | typeof RecordType.ZERO, offset: number, length: number, data: Buffer | undefined): Promise<boolean> {
    this.checkOpen();
    const whole = data !== undefined && offset === 0 && length === this.extentSize;
    // In the order the requests came, before any wait.
    const streamed = whole && index === this.lastWritten + 1;
    if (data) this.lastWritten = index;
    await this.admit(index);
    return this.locks.with(index, async () => {
      const e = await this.entryWithSlot(index);
      // A large write goes to the journal only: the slot would be a second copy of the same
      // bytes, and the journal keeps them until the upload. Other changes go to both,
      // concurrently (after the pieces, which they must lie over); both must land before
      // the write is answered.
      const piece = whole || (data !== undefined && length >= this.minPieceBytes && e.journalPieces.length < MAX_PIECES);
      if (!piece) await this.materialize(e);
      const seq = this.reserve();
      try {
        const logged = this.journal.append({ type, seq, index, offset, length, payload: data });
        const stored = piece ? undefined : this.slots.write(e.slot!, offset, data ?? zeroBytes(length));
        const [where] = await Promise.all([logged, stored]);
        if (whole) e.journalPieces = [];
        if (piece) e.journalPieces.push({ seq, offset, length, where });
        e.streamedWrite = streamed;
        e.valid.add(offset, offset + length);
        this.markDirty(e, seq);
        const keep = whole && !streamed;
        if (keep) this.memory.set(index, data);
        return keep;
      } catch (err) {
        // The write is reported failed. A clean entry's slot may now hold some of its bytes
        // (or, for an entry it created, nothing anyone would ever evict): drop the entry, so
        // reads fall back to the store. A dirty entry stays: its journal still covers it.
        if (e.gen <= e.uploadedGen && e.uploading === undefined) {
          this.releaseSlot(e);
          this.forget(e);
        }
        throw this.noSpaceOr(err);
      } finally {
        this.inProgress.delete(seq);
      }
    });
  }

  /**
   * A change failed. If for want of disk space, that is a condition, not a fault: the client
   * gets ENOSPC, one line now and then says so (where, how much is free, what to do), and
   * writes work again once there is room. Anything else is returned as it is.
   */
  private noSpaceOr(err: unknown): unknown {
    const code = (err as { errno?: unknown; code?: unknown }).errno ?? (err as { code?: unknown }).code;
    if (code !== 'ENOSPC' && code !== 'EDQUOT') return err;
    let space = {};
    try {
      const fs = statfsSync(this.options.cacheDir);
      space = { freeBytes: fs.bavail * fs.bsize, totalBytes: fs.blocks * fs.bsize };
    } catch {
      // Only for the message.
    }
    this.diskFullLog.write({ cacheDir: this.options.cacheDir, ...space, dirtyBytes: this.dirtySlots * this.extentSize },
      'cache disk full: writes fail with ENOSPC until there is room on the file system of --cache-dir (uploads go on and free '
      + 'journal space). Free space there, or move --cache-dir to a larger disk; no restart is needed');
    return err instanceof StorageError && err.errno === 'ENOSPC' ? err : new StorageError('ENOSPC', `the cache disk is full (${this.options.cacheDir})`, { cause: err });
  }

  async discard(first: number, count: number): Promise<void> {
    this.checkOpen();
    const indexes = new Set(this.lower.storedIn(first, count));
    for (const e of this.entries.values()) if (e.index >= first && e.index < first + count && !e.zeros) indexes.add(e.index);
    if (indexes.size === 0) return;
    // All the locks first, then one sequence number: no write to these extents can fall
    // between the journal's order and the order the cache applies changes in.
    await this.locks.withAll([...indexes], async () => {
      const seq = this.reserve();
      try {
        await this.journal.append({ type: RecordType.DISCARD, seq, index: first, offset: 0, length: count }).catch((err: unknown) => {
          throw this.noSpaceOr(err);
        });
        for (const index of indexes) this.applyDiscard(index, seq);
      } finally {
        this.inProgress.delete(seq);
      }
    });
  }

  /** Makes one extent ZERO-DIRTY (or forgets it, if the store never had it). */
  private applyDiscard(index: number, seq: number): void {
    this.invalidate(index);
    const e = this.entries.get(index) ?? this.newEntry(index);
    this.releaseSlot(e);
    e.zeros = true;
    e.valid = new Ranges();
    if (!this.lower.isStored(index) && e.uploading === undefined) {
      // Nothing to delete: the extent reads as zeros without an entry.
      this.forget(e);
      return;
    }
    this.markDirty(e, seq);
  }

  /** Waits while one more dirty extent would exceed --max-dirty or no slot can be freed. */
  private async admit(index: number): Promise<void> {
    for (;;) {
      const e = this.entries.get(index);
      const alreadyCounted = e !== undefined && e.slot !== undefined && e.gen > e.uploadedGen;
      if (alreadyCounted) return;
      const underLimit = (this.dirtySlots + 1) * this.extentSize <= this.options.maxDirtyBytes;
      const slotAvailable = (e?.slot !== undefined) || this.slots.freeCount > 0 || this.cleanOrder.size > 0;
      if (underLimit && slotAvailable) return;
      if (!this.warnedFull) {
        // Once per wait for room; under sustained load that is many times a second, so the
        // line itself is throttled (the count of waits since the last line goes with it).
        this.warnedFull = true;
        this.dirtyLimitLog.write({ dirtyBytes: this.dirtySlots * this.extentSize, maxDirty: this.options.maxDirtyBytes },
          'dirty limit reached: writes wait for uploads');
      }
      this.urgent++;
      this.pump();
      await new Promise<void>((resolve) => this.roomWaiters.push(resolve));
      this.urgent--;
    }
  }

  /** The entry for a write, with a slot whose bytes outside `valid` are never read. Under the lock. */
  private async entryWithSlot(index: number): Promise<Entry> {
    this.invalidate(index);
    const e = this.entries.get(index) ?? this.newEntry(index);
    if (e.slot !== undefined) return e;
    const slot = await this.takeSlot();
    this.update(e, () => { e.slot = slot; });
    // The slot's old bytes are never read: `valid` starts empty, and the gaps are filled from
    // the store (or with zeros, without a request) only when a read or an upload needs them.
    e.baseIsZero = e.zeros || !this.lower.isStored(index);
    e.zeros = false;
    e.valid = new Ranges();
    return e;
  }

  /** Whether the entry counts against --max-dirty: dirty and holding a slot. */
  private static counted(e: Entry): boolean {
    return e.slot !== undefined && e.gen > e.uploadedGen;
  }

  /** Applies `mutate` to the entry, keeping the dirty-slot count right. */
  private update(e: Entry, mutate: () => void): void {
    const before = WriteBackCache.counted(e);
    mutate();
    this.dirtySlots += Number(WriteBackCache.counted(e)) - Number(before);
  }

  private newEntry(index: number): Entry {
    const e: Entry = { index, slot: undefined, valid: new Ranges(), baseIsZero: false, zeros: false, gen: 0, uploadedGen: 0, firstDirtySeq: 0, uploading: undefined, journalPieces: [], streamedWrite: false, dirtySince: 0, lastChange: 0 };
    this.entries.set(index, e);
    return e;
  }

  /** A free slot, evicting the least recently used CLEAN entry if need be; waits if none can go. */
  private async takeSlot(): Promise<number> {
    for (;;) {
      const slot = this.takeSlotNow();
      if (slot !== undefined) return slot;
      this.urgent++;
      this.pump();
      await new Promise<void>((resolve) => this.roomWaiters.push(resolve));
      this.urgent--;
    }
  }

  /** A free slot, or the slot of the least recently used CLEAN entry; undefined if none can go. */
  private takeSlotNow(): number | undefined {
    const free = this.slots.take();
    if (free !== undefined) return free;
    for (const victim of this.cleanOrder.values()) {
      if (this.locks.isBusy(victim.index)) continue;
      const slot = victim.slot!;
      this.forget(victim);
      victim.slot = undefined;
      return slot;
    }
    return undefined;
  }

  /**
   * The memory cache pushed out a clean extent it had read from the store, which the disk
   * cache does not have: keep it in a disk slot, as a CLEAN entry (the disk cache is the
   * larger, second level for reads). Extents that entered memory by being uploaded are not
   * written again: sequential writes would otherwise pay a second local write. Skipped if the
   * extent changes meanwhile (invalidate() forgets it), or if no slot can be had without
   * waiting or without taking one from writes that wait for room, or if MAX_FILL_BYTES of
   * extents already wait for their slot.
   */
  private evictedFromMemory(index: number, data: Buffer): void {
    if (this.closed || this.entries.has(index) || !this.fetched.has(data)) return;
    if (this.fills.size * this.extentSize >= Math.max(MAX_FILL_BYTES, 2 * this.extentSize)) return;
    this.evicted.set(index, data);
    const fill = this.keepOnDisk(index, data)
      .catch((err: unknown) => this.log.warn({ err, index }, 'could not keep an extent in the disk cache'))
      .finally(() => {
        if (this.evicted.get(index) === data) this.evicted.delete(index);
        this.fills.delete(fill);
      });
    this.fills.add(fill);
  }

  private async keepOnDisk(index: number, data: Buffer): Promise<void> {
    await this.locks.with(index, async () => {
      if (this.closed || this.evicted.get(index) !== data || this.entries.has(index) || this.roomWaiters.length > 0) return;
      const slot = this.takeSlotNow();
      if (slot === undefined) return;
      const e = this.newEntry(index);
      e.slot = slot;
      try {
        await this.slots.write(slot, 0, data);
      } catch (err) {
        this.releaseSlot(e);
        this.forget(e);
        throw err;
      }
      e.valid = Ranges.full(this.extentSize);
      this.cleanOrder.set(index, e);
    });
  }

  private releaseSlot(e: Entry): void {
    const slot = e.slot;
    if (slot === undefined) return;
    this.update(e, () => { e.slot = undefined; e.journalPieces = []; });
    this.cleanOrder.delete(e.index);
    this.slots.release(slot);
    this.wakeRoomWaiters();
  }

  /** Drops the entry: the object store alone describes the extent from now on. */
  private forget(e: Entry): void {
    this.cleanOrder.delete(e.index);
    this.dirty.delete(e.index);
    this.entries.delete(e.index);
    // Flushes waiting for this extent have nothing left to wait for: what they covered was
    // superseded (a discard) before it needed uploading.
    for (const w of this.waiters.get(e.index) ?? []) w.resolve();
    this.waiters.delete(e.index);
  }

  private markDirty(e: Entry, seq: number): void {
    if (this.entries.get(e.index) !== e) throw new StorageError('EIO', `internal error: extent ${e.index} changed without an entry`);
    e.lastChange = Date.now();
    if (e.gen <= e.uploadedGen) {
      e.dirtySince = e.lastChange;
      e.firstDirtySeq = seq;
    }
    this.update(e, () => { e.gen = seq; });
    this.cleanOrder.delete(e.index);
    this.dirty.set(e.index, e);
  }

  /** The extent changes: forget its remembered clean copy and any fetch in flight. */
  private invalidate(index: number): void {
    this.memory.delete(index);
    this.streamed.delete(index);
    this.evicted.delete(index);
    const fetch = this.fetches.get(index);
    if (fetch) fetch.stale = true;
  }

  /**
   * The entry's current bytes (which `valid` must cover): from memory if there, else its
   * journal pieces laid over the slot's bytes.
   */
  private async readCurrent(e: Entry, offset: number, length: number): Promise<Buffer> {
    const remembered = this.memory.peek(e.index);
    if (remembered) return remembered.subarray(offset, offset + length);
    if (e.journalPieces.length === 0) return this.slots.read(e.slot!, offset, length);
    const end = offset + length;
    const pieces = e.journalPieces.filter((p) => p.offset < end && offset < p.offset + p.length);
    const newest = pieces.at(-1);
    if (newest && newest.offset <= offset && end <= newest.offset + newest.length) return this.readPiece(newest, offset, length);
    const inPieces = new Ranges();
    for (const p of pieces) inPieces.add(p.offset, p.offset + p.length);
    const out = inPieces.covers(offset, end) ? Buffer.allocUnsafe(length) : await this.slots.read(e.slot!, offset, length);
    for (const p of pieces) {
      const start = Math.max(offset, p.offset);
      await this.readPiece(p, start, Math.min(end, p.offset + p.length) - start, out.subarray(start - offset));
    }
    return out;
  }

  /** Bytes [offset, offset + length) of the extent, from a piece that holds them. */
  private readPiece(p: JournalPiece, offset: number, length: number, into?: Buffer): Promise<Buffer> {
    return this.journal.readPayload({ ...p.where, position: p.where.position + offset - p.offset }, length, into);
  }

  /**
   * Copies an entry's journal pieces into its slot, oldest first, before a change that goes
   * to the slot. Under the lock. (Memory no longer has the extent: the change has already
   * invalidated it.)
   */
  private async materialize(e: Entry): Promise<void> {
    for (const p of e.journalPieces) await this.slots.write(e.slot!, p.offset, await this.readPiece(p, p.offset, p.length));
    e.journalPieces = [];
  }

  private touch(e: Entry): void {
    if (this.cleanOrder.has(e.index)) {
      this.cleanOrder.delete(e.index);
      this.cleanOrder.set(e.index, e);
    }
  }

  // ---- uploads --------------------------------------------------------------------------

  /**
   * Starts uploads of dirty extents that are due, up to the concurrency limit. An extent is
   * due once it has had no change for the upload delay (a sequential writer has moved on), or
   * MAX_DIRTY_AGE_MS after it became dirty (one that keeps being rewritten is uploaded every
   * so often, not after each write), or at once when a flush waits, when dirty data passes
   * half the dirty limit, or when the journal (which keeps every rewrite until the extent is
   * uploaded, and is replayed in memory) passes the dirty limit plus two segments. `dirty`
   * iterates oldest first.
   */
  private pump(): void {
    if (this.closed || this.fenced !== undefined || this.options.mayUpload?.() === false) return;
    const now = Date.now();
    const pressure = this.urgent > 0
      || this.dirtySlots * this.extentSize * 2 >= this.options.maxDirtyBytes
      || this.journal.bytes >= this.options.maxDirtyBytes + 2 * SEGMENT_BYTES;
    const due = (e: Entry): boolean => pressure
      || now - e.lastChange >= this.options.uploadDelayMs
      || now - e.dirtySince >= Math.max(MAX_DIRTY_AGE_MS, this.options.uploadDelayMs);
    const deletes: Entry[] = [];
    for (const e of this.dirty.values()) {
      if (this.uploadsInFlight >= this.options.uploadConcurrency) break;
      if (e.uploading !== undefined || this.scheduled.has(e.index) || !due(e)) continue;
      if (e.zeros) {
        deletes.push(e);
        if (deletes.length === 1000) break;
        continue;
      }
      const index = e.index;
      this.uploadsInFlight++;
      this.scheduled.add(index);
      void this.upload(index).catch((err: unknown) => this.abandoned(err, `upload of extent ${index}`))
        .finally(() => {
          this.scheduled.delete(index);
          this.uploadsInFlight--;
          this.pump();
        });
    }
    if (deletes.length > 0 && this.uploadsInFlight < this.options.uploadConcurrency) {
      this.uploadsInFlight++;
      void this.deleteZeros(deletes).catch((err: unknown) => this.abandoned(err, `delete of ${deletes.length} extents`))
        .finally(() => {
          this.uploadsInFlight--;
          this.pump();
        });
    }
  }

  /** Uploads stop only at close() (the journal keeps what they carried), or on a bug. */
  private abandoned(err: unknown, what: string): void {
    if (this.closed) this.log.debug({ error: (err as Error).message }, `${what} stopped by the shutdown; the journal keeps it`);
    else this.log.error({ err }, `${what} abandoned`);
  }

  /** Uploads one dirty extent, retrying until it succeeds (the journal keeps it safe meanwhile). */
  private async upload(index: number): Promise<void> {
    let snapshot: { gen: number; data: Buffer } | undefined;
    while (!snapshot) {
      const step = await this.locks.with(index, async () => {
        const e = this.entries.get(index);
        if (!e || e.gen <= e.uploadedGen || e.uploading !== undefined || e.zeros) return 'done';
        if (!e.valid.covers(0, this.extentSize)) return 'needs-base';
        e.uploading = e.gen;
        snapshot = { gen: e.gen, data: await this.readCurrent(e, 0, this.extentSize) };
        return 'ready';
      });
      if (step === 'done') return;
      if (step === 'needs-base') await this.retrying(`read base of extent ${index}`, () => this.completeFromStore(index));
    }
    const { gen, data } = snapshot;
    // One scan for zeros: an all-zero extent is deleted, never stored.
    const zero = isAllZero(data);
    await this.retrying(`upload extent ${index}`, () => zero ? this.lower.deleteExtents([index]) : this.lower.put(index, data));
    await this.locks.with(index, () => {
      this.finishUpload(index, gen, zero ? undefined : data);
      return Promise.resolve();
    });
  }

  private async deleteZeros(entries: Entry[]): Promise<void> {
    const batch = entries.map((e) => {
      e.uploading = e.gen;
      return { index: e.index, gen: e.gen };
    });
    await this.retrying(`delete ${batch.length} extents`, () => this.lower.deleteExtents(batch.map((b) => b.index)));
    // Under each extent's lock: a write may be giving the extent a slot right now.
    for (const { index, gen } of batch) {
      await this.locks.with(index, () => {
        this.finishUpload(index, gen, undefined);
        return Promise.resolve();
      });
    }
  }

  /**
   * Records that `gen` of the extent is in the store; cleans the entry if nothing changed
   * since. Call under the extent's lock.
   */
  private finishUpload(index: number, gen: number, data: Buffer | undefined): void {
    const e = this.entries.get(index);
    this.uploadedExtents++;
    // Tell a future replay that this much of the extent is in the store. Losing the record
    // in a crash costs only a repeated upload.
    this.journal.append(uploadedRecord(this.journal.reserve(), index, gen)).catch(() => undefined);
    if (!e) return;
    e.uploading = undefined;
    this.update(e, () => { e.uploadedGen = Math.max(e.uploadedGen, gen); });
    if (e.gen === gen) {
      this.dirty.delete(index);
      if (e.zeros) this.forget(e);
      else {
        if (e.journalPieces.length > 0) {
          // Bytes of it are in the journal, which may now be trimmed, not in the slot: the store
          // (and the memory cache) hold the extent from now on.
          this.releaseSlot(e);
          this.forget(e);
        } else {
          this.cleanOrder.set(index, e);
        }
        if (data && !e.streamedWrite) this.memory.set(index, data);
      }
      this.wakeRoomWaiters();
    }
    const waiting = this.waiters.get(index);
    if (waiting) {
      const still = waiting.filter((w) => w.gen > e.uploadedGen);
      for (const w of waiting) if (w.gen <= e.uploadedGen) w.resolve();
      if (still.length > 0) this.waiters.set(index, still);
      else this.waiters.delete(index);
    }
    this.trimJournal();
  }

  /** Runs `fn` until it succeeds, backing off exponentially with jitter up to RETRY_CAP_MS. */
  private async retrying(what: string, fn: () => Promise<void>): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      // Not even a retry without a valid lease: after a long S3 outage the volume may belong
      // to another gateway, and this attempt would overwrite its data.
      while (this.options.mayUpload?.() === false && !this.closed && this.fenced === undefined) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      if (this.fenced !== undefined) throw new StorageError('EPERM', `this gateway was fenced off: ${this.fenced} took over the volume`);
      if (this.options.mayUpload?.() === false) throw new StorageError('ESHUTDOWN', 'the cache was closed while the lease was not valid');
      try {
        await fn();
        return;
      } catch (err) {
        if (this.closed) throw err;
        this.uploadFailures++;
        const delay = Math.random() * Math.min(RETRY_CAP_MS, RETRY_BASE_MS * 2 ** attempt);
        // Rate-limited: with S3 down, every upload in flight fails every few seconds.
        this.retryLog.write({ err: (err as Error).message, attempt: attempt + 1, retryInMs: Math.round(delay) }, `${what} failed; retrying`);
        for (const until = Date.now() + delay; Date.now() < until && !this.closed;) {
          await new Promise((resolve) => setTimeout(resolve, Math.min(50, until - Date.now())));
        }
      }
    }
  }

  /** Deletes journal segments whose every change is in the store. */
  private trimJournal(): void {
    if (this.closed) return;
    this.journal.trim(this.neededSeq()).catch((err: unknown) => this.log.warn({ err }, 'journal trim failed'));
  }

  /**
   * A sequence number for a change; until the change is applied (or failed) its journal record
   * must not be trimmed, although no entry is dirty with it yet.
   */
  private reserve(): number {
    const seq = this.journal.reserve();
    this.inProgress.add(seq);
    return seq;
  }

  /**
   * The oldest journal sequence number a recovery would still need: a dirty extent needs its
   * changes after its last upload, and none before its first change since it was last clean.
   * (The upload generation alone is 0 for an extent never uploaded: during a long sequential
   * write, which always has such an extent dirty, the journal grew until the writes paused.)
   */
  private neededSeq(): number {
    let needed = Number.MAX_SAFE_INTEGER;
    for (const seq of this.inProgress) needed = Math.min(needed, seq);
    for (const e of this.dirty.values()) {
      // Pieces are read until the extent is clean, even those an upload already covered.
      needed = Math.min(needed, Math.max(e.uploadedGen + 1, e.firstDirtySeq), e.journalPieces[0]?.seq ?? needed);
    }
    return needed;
  }

  private wakeRoomWaiters(): void {
    this.warnedFull = false;
    for (const wake of this.roomWaiters.splice(0)) wake();
  }

  // ---- durability -----------------------------------------------------------------------

  /**
   * FLUSH (no indexes) or FUA (the extents a request touched): resolves once every change
   * acknowledged before the call is in the object store, or, with --flush-mode local, once
   * the journal is fsynced.
   */
  async flush(indexes?: readonly number[]): Promise<void> {
    this.checkOpen();
    if (this.options.flushMode === 'local') await this.journal.sync();
    else await this.waitForUploads(indexes);
  }

  /**
   * Waits until the changes to these extents (all dirty ones by default) made so far are
   * uploaded. Resolves false at once when there was nothing to wait for.
   */
  private async waitForUploads(indexes?: readonly number[]): Promise<boolean> {
    const candidates = indexes ? indexes.map((i) => this.dirty.get(i)).filter((e) => e !== undefined) : [...this.dirty.values()];
    const targets = candidates.filter((e) => e.gen > e.uploadedGen).map((e) => [e.index, e.gen] as const);
    if (targets.length === 0) return false;
    this.urgent++;
    try {
      this.pump();
      await Promise.all(targets.map(([index, gen]) => new Promise<void>((resolve) => {
        const list = this.waiters.get(index) ?? [];
        list.push({ gen, resolve });
        this.waiters.set(index, list);
      })));
    } finally {
      this.urgent--;
    }
    return true;
  }

  /** Uploads everything dirty, logging progress, for up to `timeoutMs`. Resolves true when all is uploaded. */
  async drain(timeoutMs: number): Promise<boolean> {
    const started = Date.now();
    const progress = setInterval(() => {
      const s = this.status();
      this.log.info({ dirtyBytes: s.dirtyBytes, pendingDeletes: s.pendingDeletes, uploadsInFlight: s.uploadsInFlight }, 'draining dirty data to the store');
    }, 2000);
    try {
      const all = (async () => {
        while (await this.waitForUploads());
      })();
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), timeoutMs); });
      const done = await Promise.race([all.then(() => true), timedOut]);
      clearTimeout(timer);
      this.log.info({ ms: Date.now() - started, complete: done, dirtyBytes: this.status().dirtyBytes }, done ? 'all dirty data uploaded' : 'drain timed out: the journal keeps the rest for the next start');
      return done;
    } finally {
      clearInterval(progress);
    }
  }

  /** Stops uploading (what is dirty stays in the journal) and closes the files. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.pumpTimer);
    // Uploads in flight finish or give up at their next failure; none may touch the journal
    // or the slot file after this returns.
    while (this.uploadsInFlight > 0) await new Promise((resolve) => setTimeout(resolve, 5));
    await Promise.all(this.fills);
    // A journal that failed for good cannot be synced; one whose sync fails now fails for
    // good. Either said so once when it failed (onFailed), and the exit status says it;
    // what it holds is replayed by the next start all the same.
    if (!this.journal.failure) await this.journal.sync().catch(() => undefined);
    await this.journal.trim(this.neededSeq());
    await this.journal.close();
    await this.slots.close();
  }

  /** Why the journal failed for good, if it did (the gateway then exits with status 4). */
  get failure(): Error | undefined {
    return this.journal.failure;
  }

  private checkOpen(): void {
    if (this.closed) throw new StorageError('ESHUTDOWN', 'the cache is closed');
    if (this.fenced !== undefined) throw new StorageError('EPERM', `this gateway was fenced off: ${this.fenced} took over the volume`);
  }

  /** Another gateway owns the volume now: refuse changes and stop uploading. */
  fence(by: string): void {
    this.fenced = by;
  }

  // ---- recovery -------------------------------------------------------------------------

  /**
   * Re-applies, at startup, every change the store does not have yet: the records after the
   * last UPLOADED generation of their extent, in journal order, exactly as the live changes
   * were applied. Returns how many records were applied.
   */
  private async replay(records: readonly JournalRecord[]): Promise<number> {
    const uploaded = new Map<number, number>();
    for (const r of records) {
      if (r.type === RecordType.UPLOADED) uploaded.set(r.index, Math.max(uploaded.get(r.index) ?? 0, uploadedGeneration(r)));
    }
    const pending = (index: number, seq: number): boolean => seq > (uploaded.get(index) ?? 0);
    let applied = 0;
    for (const r of records) {
      if (r.type === RecordType.UPLOADED) continue;
      if (r.type === RecordType.DISCARD) {
        const indexes = new Set(this.lower.storedIn(r.index, r.length));
        for (const e of this.entries.values()) if (e.index >= r.index && e.index < r.index + r.length) indexes.add(e.index);
        for (const index of indexes) if (pending(index, r.seq)) this.applyDiscard(index, r.seq);
        applied++;
        continue;
      }
      if (!pending(r.index, r.seq)) continue;
      if (this.entries.get(r.index)?.slot === undefined && this.slots.freeCount === 0) {
        throw Errors.cacheTooSmallToRecover(this.options.cacheDir, this.slots.slotCount * this.extentSize);
      }
      const e = await this.entryWithSlot(r.index);
      await this.slots.write(e.slot!, r.offset, r.payload ?? zeroBytes(r.length));
      e.valid.add(r.offset, r.offset + r.length);
      this.markDirty(e, r.seq);
      applied++;
    }
    return applied;
  }
}

function zeroBytes(length: number): Buffer {
  return length <= ZERO_EXTENT_CHUNK.length ? ZERO_EXTENT_CHUNK.subarray(0, length) : Buffer.alloc(length);
}
