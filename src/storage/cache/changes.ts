// Changes: journals a write, zeroing or discard and applies it to the entry table, live (as
// the client asks) and at startup (replay(), which applies the journal's records exactly as
// the live changes were applied; the two sit side by side so that can be checked here).
//
// A write is acknowledged only after its journal record and its slot bytes (for a journal
// piece: its journal record alone) reached the kernel, so a crash of this process loses
// nothing acknowledged. A write never reads the object store: a partial write into an extent
// that is stored but not cached creates a PARTIAL entry, whose missing bytes are merged from
// the store later (entry-bytes.ts).
//
// Large writes are not copied into the slot: the entry's `journalPieces` point at their
// journal records, whose payloads lie over the slot's bytes (newest last). A write of the
// whole extent replaces every piece and leaves the slot (reserved, for the dirty limit) wholly
// stale. Writing the bytes once, not twice, halves the local I/O of sequential writes and of
// a file system's writeback (large, unaligned writes). The buffer of a whole-extent write
// (kept, not copied) also goes to the memory cache, which reads and the upload use while it
// holds it; in a run of sequential whole-extent writes, to the stream window instead (see
// change()). A small write, a zeroing, or one piece too many first copies the pieces into the
// slot (materialize()).
// Once uploaded, an entry with pieces is dropped (the store and the memory cache hold the
// extent), because the journal segments may then be deleted.

import { statfsSync } from 'node:fs';
import { LogThrottle } from '../../log-throttle.ts';
import { StorageError } from '../storage-error.ts';
import type { CleanExtents } from './clean-extents.ts';
import { type CacheContext, REPEAT_LOG_INTERVAL_MS } from './context.ts';
import type { Entry, EntryTable } from './entries.ts';
import { type EntryBytes, zeroBytes } from './entry-bytes.ts';
import type { Flusher } from './flusher.ts';
import { type JournalRecord, RecordType, uploadedGeneration } from './journal.ts';
import { Ranges } from './ranges.ts';

/**
 * Writes of at least 64 KiB (or 1/16 of a smaller extent) become journal pieces, not slot
 * writes, up to MAX_PIECES per extent. Smaller ones go to the slot: small random writes would
 * otherwise gather pieces only to copy them into the slot later, paying a journal read each.
 */
const MIN_PIECE_BYTES = 64 * 1024;
const MAX_PIECES = 16;
/**
 * Runs of changed bytes an entry tracks since its last upload (Entry.changedSinceUpload):
 * a writer going forward leaves a few, random writes more (and each add() copies the list).
 */
const MAX_CHANGED_RUNS = 16;

export class Changes {
  /** Writes at least this large become journal pieces (see MIN_PIECE_BYTES). */
  private readonly minPieceBytes: number;
  private lastWritten = -2;
  private readonly diskFullLog: LogThrottle;

  private readonly ctx: CacheContext;
  private readonly table: EntryTable;
  private readonly bytes: EntryBytes;
  private readonly clean: CleanExtents;
  private readonly flusher: Flusher;

  /** Called under the extent's lock before a live change touches an existing entry (snapshot-cut.ts copies out what a snapshot still needs). */
  beforeChange: (e: Entry) => Promise<void> = () => Promise.resolve();
  /** Called under the extent's lock once that change is applied, or failed. */
  afterChange: (e: Entry) => void = () => undefined;

  constructor(ctx: CacheContext, table: EntryTable, bytes: EntryBytes, clean: CleanExtents, flusher: Flusher) {
    this.ctx = ctx;
    this.table = table;
    this.bytes = bytes;
    this.clean = clean;
    this.flusher = flusher;
    this.minPieceBytes = Math.min(MIN_PIECE_BYTES, ctx.extentSize / 16);
    this.diskFullLog = new LogThrottle(ctx.log, 'warn', { intervalMs: REPEAT_LOG_INTERVAL_MS });
  }

  /** A write of a whole extent keeps `data` (resolves true): see change(). */
  write(index: number, offset: number, data: Buffer): Promise<boolean> {
    return this.change(index, RecordType.WRITE, offset, data.length, data);
  }

  zero(index: number, offset: number, length: number): Promise<void> {
    const e = this.table.get(index);
    if (e ? e.zeros : !this.ctx.lower.isStored(index)) return Promise.resolve();
    return this.change(index, RecordType.ZERO, offset, length, undefined).then(() => undefined);
  }

  /**
   * Journals a change and applies it. A whole extent's bytes are kept as they are, in the
   * memory cache: reads and the upload take them from there instead of reading the journal
   * back, and the caller gives up the buffer (resolves true).
   *
   * In a run of sequential whole-extent writes (a backup, a copy), they go to the stream
   * window instead (CleanExtents.stream()): in the memory cache they would push every hot
   * extent out, like a sequential read (CleanExtents.fetch()). The window is small (at most
   * 64 MiB) but holds them until their upload, due 200 ms after the writer moved on, which
   * then reads nothing back from the journal.
   */
  private async change(index: number, type: typeof RecordType.WRITE | typeof RecordType.ZERO, offset: number, length: number, data: Buffer | undefined): Promise<boolean> {
    const { ctx, table } = this;
    ctx.checkOpen();
    const whole = data !== undefined && offset === 0 && length === ctx.extentSize;
    // In the order the requests came, before any wait.
    const streamed = whole && index === this.lastWritten + 1;
    if (data) this.lastWritten = index;
    await table.admit(index);
    return ctx.locks.with(index, async () => {
      const existing = this.table.get(index);
      try {
        if (existing) await this.beforeChange(existing);
        return await this.apply(index, type, offset, length, data, streamed);
      } finally {
        if (existing) this.afterChange(existing);
      }
    });
  }

  /** change(), under the extent's lock. */
  private async apply(index: number, type: typeof RecordType.WRITE | typeof RecordType.ZERO, offset: number, length: number, data: Buffer | undefined, streamed: boolean): Promise<boolean> {
    const { ctx, table } = this;
    const whole = data !== undefined && offset === 0 && length === ctx.extentSize;
    const e = await this.entryWithSlot(index);
    // A large write goes to the journal only: the slot would be a second copy of the same
    // bytes, and the journal keeps them until the upload. Other changes go to both,
    // concurrently (after the pieces, which they must lie over); both must land before
    // the write is answered.
    const piece = whole || (data !== undefined && length >= this.minPieceBytes && e.journalPieces.length < MAX_PIECES);
    if (!piece) await this.bytes.materialize(e);
    const seq = this.flusher.reserve();
    try {
      const logged = ctx.journal.append({ type, seq, index, offset, length, payload: data });
      const stored = piece ? undefined : ctx.slots.write(e.slot!, offset, data ?? zeroBytes(length));
      const [where] = await Promise.all([logged, stored]);
      if (whole) e.journalPieces = [];
      if (piece) e.journalPieces.push({ seq, offset, length, where });
      e.streamedWrite = streamed;
      e.changedToEnd = offset + length === ctx.extentSize;
      const changed = e.changedSinceUpload;
      changed?.add(offset, offset + length);
      if (changed && changed.runs > MAX_CHANGED_RUNS) e.changedSinceUpload = undefined;
      e.valid.add(offset, offset + length);
      // Written whole by now: the base held for its gaps (CleanExtents.holdBase()) has no use.
      if (e.valid.covers(0, ctx.extentSize)) this.clean.dropBase(index);
      table.markDirty(e, seq);
      if (whole && streamed) this.clean.stream(index, data);
      else if (whole) this.clean.keep(index, data);
      return whole;
    } catch (err) {
      // The write is reported failed. A clean entry's slot may now hold some of its bytes
      // (or, for an entry it created, nothing anyone would ever evict): drop the entry, so
      // reads fall back to the store. A dirty entry stays: its journal still covers it.
      if (e.gen <= e.uploadedGen && e.uploading === undefined) {
        table.releaseSlot(e);
        table.forget(e);
      }
      throw this.noSpaceOr(err);
    } finally {
      this.flusher.done(seq);
    }
  }

  async discard(first: number, count: number): Promise<void> {
    const { ctx } = this;
    ctx.checkOpen();
    const indexes = this.discardable(first, count);
    if (indexes.size === 0) return;
    // All the locks first, then one sequence number: no write to these extents can fall
    // between the journal's order and the order the cache applies changes in.
    await ctx.locks.withAll([...indexes], async () => {
      const existing = [...indexes].map((index) => this.table.get(index)).filter((e) => e !== undefined);
      try {
        for (const e of existing) await this.beforeChange(e);
        const seq = this.flusher.reserve();
        try {
          await ctx.journal.append({ type: RecordType.DISCARD, seq, index: first, offset: 0, length: count }).catch((err: unknown) => {
            throw this.noSpaceOr(err);
          });
          for (const index of indexes) this.applyDiscard(index, seq);
        } finally {
          this.flusher.done(seq);
        }
      } finally {
        for (const e of existing) this.afterChange(e);
      }
    });
  }

  /**
   * Re-applies, at startup, every change the store does not have yet: the records after the
   * last UPLOADED generation of their extent, in journal order, exactly as the live changes
   * were applied. Returns how many records were applied.
   */
  async replay(records: readonly JournalRecord[]): Promise<number> {
    const uploaded = new Map<number, number>();
    for (const r of records) {
      if (r.type === RecordType.UPLOADED) uploaded.set(r.index, Math.max(uploaded.get(r.index) ?? 0, uploadedGeneration(r)));
    }
    const pending = (index: number, seq: number): boolean => seq > (uploaded.get(index) ?? 0);
    let applied = 0;
    for (const r of records) {
      if (r.type === RecordType.UPLOADED) continue;
      if (r.type === RecordType.DISCARD) {
        for (const index of this.discardable(r.index, r.length)) if (pending(index, r.seq)) this.applyDiscard(index, r.seq);
        applied++;
        continue;
      }
      if (!pending(r.index, r.seq)) continue;
      this.table.checkRoomToRecover(r.index);
      const e = await this.entryWithSlot(r.index);
      await this.ctx.slots.write(e.slot!, r.offset, r.payload ?? zeroBytes(r.length));
      e.valid.add(r.offset, r.offset + r.length);
      this.table.markDirty(e, r.seq);
      applied++;
    }
    return applied;
  }

  /** Extents in [first, first + count) that a discard changes: stored ones, and those with non-zero entries. */
  private discardable(first: number, count: number): Set<number> {
    const indexes = new Set(this.ctx.lower.storedIn(first, count));
    for (const e of this.table.values()) if (e.index >= first && e.index < first + count && !e.zeros) indexes.add(e.index);
    return indexes;
  }

  /** Makes one extent ZERO-DIRTY (or forgets it, if the store never had it). */
  private applyDiscard(index: number, seq: number): void {
    const { table } = this;
    this.clean.invalidate(index);
    this.clean.dropBase(index);
    const e = table.get(index) ?? table.create(index);
    table.releaseSlot(e);
    e.zeros = true;
    e.valid = new Ranges();
    if (!this.ctx.lower.isStored(index) && e.uploading === undefined) {
      // Nothing to delete: the extent reads as zeros without an entry.
      table.forget(e);
      return;
    }
    table.markDirty(e, seq);
  }

  /** The entry for a change, with a slot whose bytes outside `valid` are never read. Under the lock. */
  private async entryWithSlot(index: number): Promise<Entry> {
    const { table } = this;
    const e = table.get(index) ?? table.create(index);
    if (e.slot !== undefined) {
      this.clean.invalidate(index);
      return e;
    }
    // The slot's old bytes are never read: `valid` starts empty, and the gaps are filled from
    // the store (or with zeros, without a request) only when a read or an upload needs them;
    // the store's bytes stay in memory for that if they are there (without an entry, or with
    // a zeros one, memory holds nothing newer than the store).
    const baseIsZero = e.zeros || !this.ctx.lower.isStored(index);
    if (baseIsZero) {
      this.clean.invalidate(index);
      this.clean.dropBase(index);
    } else {
      this.clean.holdBase(index);
    }
    const slot = await table.takeSlot();
    table.update(e, () => { e.slot = slot; });
    e.baseIsZero = baseIsZero;
    e.zeros = false;
    e.valid = new Ranges();
    return e;
  }

  /**
   * A change failed. If for want of disk space, that is a condition, not a fault: the client
   * gets ENOSPC, one line now and then says so (where, how much is free, what to do), and
   * writes work again once there is room. Anything else is returned as it is.
   */
  private noSpaceOr(err: unknown): unknown {
    const code = (err as { errno?: unknown; code?: unknown }).errno ?? (err as { code?: unknown }).code;
    if (code !== 'ENOSPC' && code !== 'EDQUOT') return err;
    const { cacheDir } = this.ctx.options;
    let space = {};
    try {
      const fs = statfsSync(cacheDir);
      space = { freeBytes: fs.bavail * fs.bsize, totalBytes: fs.blocks * fs.bsize };
    } catch {
      // Only for the message.
    }
    this.diskFullLog.write({ cacheDir, ...space, dirtyBytes: this.table.dirtySlots * this.ctx.extentSize },
      'cache disk full: writes fail with ENOSPC until there is room on the file system of --cache-dir (uploads go on and free '
      + 'journal space). Free space there, or move --cache-dir to a larger disk; no restart is needed');
    return err instanceof StorageError && err.errno === 'ENOSPC' ? err : new StorageError('ENOSPC', `the cache disk is full (${cacheDir})`, { cause: err });
  }
}
