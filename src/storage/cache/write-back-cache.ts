// The write-back cache: writes are acknowledged from local disk and uploaded later. This file
// is its face, the ExtentStore the device calls; the work is done by its parts, each in its
// own file, built once in open() around one shared CacheContext:
//
//   entries.ts        the entry table: each extent's state (the table, stateOf(),
//                     checkInvariants()), the clean and dirty indexes, room for writes
//   entry-bytes.ts    an entry's current bytes: journal pieces over slot bytes, gaps from the store
//   clean-extents.ts  extents without entries: memory cache, stream window, shared GETs, read-ahead
//   flusher.ts        uploads, their policy and retries, flush waiters, journal trim, drain
//   changes.ts        write, zero, discard, and the replay of the journal at startup
//   snapshot-cut.ts   crash-consistent snapshots taken while writes go on
//   journal.ts        the dirty-extent journal on local disk (format: journal-records.ts)
//   slot-file.ts      the disk cache's fixed-size slots
//
// Imports run one way, from the face down: changes → flusher → clean-extents, entry-bytes →
// entries → context. The table's one tie upwards (a write waiting for room makes the flusher
// hurry, and fails while the store refuses uploads) is a handle given to it here.
//
// Invariants, and why:
// - A write is acknowledged only after its journal record (and, for a small write, its slot
//   bytes) reached the kernel, so a crash of this process loses nothing acknowledged.
// - `gen` is the journal sequence number of the entry's last change. An upload snapshots the
//   extent at `gen`; when it ends, the entry is clean only if nothing changed since (gen still
//   equals the snapshot), so an upload that finishes late can never mark newer data clean.
//   One upload per extent at a time, so the store receives an extent's versions in order.
// - Only CLEAN entries are evicted, and only when no request holds their lock.
// - FLUSH waits until every extent dirty at that moment has been uploaded up to the gen it had;
//   FUA waits for the extents it touched. Concurrent flushes share the same uploads.
// - Dirty extents with slots are limited to --max-dirty: a write that would dirty one more
//   waits for uploads (logged), the only case where a write waits for the store.

import { mkdir } from 'node:fs/promises';
import type { ExtentRun, ExtentStore } from '../extent-store.ts';
import { ExtentLocks } from '../extents/extent-locks.ts';
import type { ExtentObjects } from '../extents/extent-objects.ts';
import { Changes } from './changes.ts';
import { CleanExtents } from './clean-extents.ts';
import { realClock } from '../../clock.ts';
import { CacheContext, type WriteBackOptions } from './context.ts';
import { EntryTable, type EntryState, stateOf } from './entries.ts';
import { EntryBytes } from './entry-bytes.ts';
import { Flusher } from './flusher.ts';
import { Journal } from './journal.ts';
import { SlotFile } from './slot-file.ts';
import { SnapshotCuts } from './snapshot-cut.ts';
import { StorageError } from '../storage-error.ts';

export type { WriteBackOptions } from './context.ts';
export { MAX_FILL_BYTES, streamWindowBytes } from './clean-extents.ts';

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
  /** Seconds since the oldest dirty extent became dirty (0 when none is): uploads that stall show here. */
  readonly oldestDirtySeconds: number;
}

export class WriteBackCache implements ExtentStore {
  readonly extentSize: number;
  get extentCount(): number {
    return this.ctx.extentCount;
  }


  private readonly ctx: CacheContext;
  private readonly table: EntryTable;
  private readonly bytes: EntryBytes;
  private readonly clean: CleanExtents;
  private readonly flusher: Flusher;
  private readonly changes: Changes;

  private readonly cuts: SnapshotCuts;

  private constructor(parts: { ctx: CacheContext; table: EntryTable; bytes: EntryBytes; clean: CleanExtents; flusher: Flusher; changes: Changes; cuts: SnapshotCuts }) {
    const { ctx } = parts;
    this.ctx = ctx;
    this.table = parts.table;
    this.bytes = parts.bytes;
    this.clean = parts.clean;
    this.flusher = parts.flusher;
    this.changes = parts.changes;
    this.cuts = parts.cuts;
    this.extentSize = ctx.extentSize;
  }

  /** Opens the cache directory, replays the journal, and starts uploading what it recovered. */
  static async open(lower: ExtentObjects, options: WriteBackOptions): Promise<WriteBackCache> {
    await mkdir(options.cacheDir, { recursive: true });
    const slotCount = Math.floor(options.cacheBytes / lower.extentSize);
    const slots = await SlotFile.open(`${options.cacheDir}/extents.cache`, slotCount, lower.extentSize);
    const started = Date.now();
    const { journal, records, bytes: journalBytes } = await Journal.open(`${options.cacheDir}/journal`, {
      syncOnRollover: options.flushMode === 'local',
      onFailed: (err) => {
        options.log.error({ cacheDir: options.cacheDir, error: err.message },
          'the journal failed (the cache disk lost or refused data): writes are refused from now on; what is dirty is uploaded, '
          + 'then the gateway exits with status 4. Check the disk (dmesg) and restart: the journal replays what it holds');
        options.onFailed?.(err);
      },
    });
    const ctx = new CacheContext(options, lower, journal, slots, new ExtentLocks(), options.clock ?? realClock);
    const table: EntryTable = new EntryTable(ctx, { hurry: (until) => flusher.hurry(until), get refused() { return flusher.refused; } });
    const clean = new CleanExtents(ctx, table);
    const bytes = new EntryBytes(ctx, table, clean);
    const flusher = new Flusher(ctx, table, bytes, clean);
    const changes = new Changes(ctx, table, bytes, clean, flusher);
    const cuts = new SnapshotCuts(ctx, table, bytes, flusher);
    changes.beforeChange = (e) => cuts.beforeChange(e);
    changes.afterChange = (e) => cuts.afterChange(e);
    flusher.onUploaded = (index, gen, generation) => cuts.uploaded(index, gen, generation);
    const replayed = await changes.replay(records);
    if (records.length > 0) {
      options.log.info({ records: records.length, replayed, bytes: journalBytes, dirtyExtents: table.dirty.size, ms: Date.now() - started },
        'recovered unuploaded writes from the journal');
    }
    flusher.start();
    return new WriteBackCache({ ctx, table, bytes, clean, flusher, changes, cuts });
  }

  /**
   * A crash-consistent snapshot as of now, without stopping writes: resolves extent → object
   * generation once every extent's version of this instant is in the store (snapshot-cut.ts).
   * Its objects stay retained; releaseSnapshot() gives them up.
   */
  snapshot(): Promise<Map<number, number>> {
    return this.cuts.take();
  }

  releaseSnapshot(refs: Map<number, number>): void {
    this.cuts.release(refs);
  }

  status(): CacheStatus {
    let pendingDeletes = 0;
    let oldest = Infinity;
    for (const e of this.table.dirty.values()) {
      if (e.zeros) pendingDeletes++;
      oldest = Math.min(oldest, e.dirtySince);
    }
    const { slots, journal } = this.ctx;
    return {
      dirtyExtents: this.table.dirtySlots,
      dirtyBytes: this.table.dirtySlots * this.extentSize,
      pendingDeletes,
      uploadsInFlight: this.flusher.uploadsInFlight,
      cachedExtents: slots.slotCount - slots.freeCount,
      cacheSlots: slots.slotCount,
      journalBytes: journal.bytes,
      uploadedExtents: this.flusher.uploadedExtents,
      uploadFailures: this.flusher.uploadFailures,
      oldestDirtySeconds: oldest === Infinity ? 0 : Math.max(0, (this.ctx.clock.now() - oldest) / 1000),
    };
  }

  /**
   * `counted`: the telemetry was told where this read found its extent (once per read, by the
   * first place it looked; a read that races a change and starts again is not told twice).
   * Kept a parameter rather than a closure: this is the hottest path, and its garbage showed
   * as tens of MiB of peak RSS under fio (test/e2e/memory.test.ts).
   */
  async read(index: number, offset: number, length: number, counted = false): Promise<Buffer | undefined> {
    const sequential = this.clean.readAhead(index);
    const remembered = this.clean.get(index);
    if (remembered) {
      if (!counted) this.tell('memory');
      return remembered.subarray(offset, offset + length);
    }
    if (!this.table.has(index)) {
      if (!this.ctx.lower.isStored(index)) return undefined;
      if (!counted) this.tell('miss');
      counted = true;
      const data = await this.clean.fetch(index, !sequential);
      if (data) return data.subarray(offset, offset + length);
      // The extent changed while we fetched it: read it as it is now.
    }
    for (;;) {
      const result = await this.ctx.locks.with(index, async () => {
        const e = this.table.get(index);
        if (!e) return { retry: true } as const;
        if (e.zeros) return { data: undefined };
        if (e.valid.covers(offset, offset + length)) {
          this.table.touch(e);
          if (!counted) this.tell('disk');
          return { data: await this.bytes.read(e, offset, length) };
        }
        return { needBase: true } as const;
      });
      if ('data' in result) return result.data;
      if ('needBase' in result) {
        if (!counted) this.tell('miss');
        counted = true;
        await this.bytes.completeFromStore(index);
      } else return this.read(index, offset, length, true);
    }
  }

  private tell(where: 'memory' | 'disk' | 'miss'): void {
    this.ctx.options.telemetry?.cacheLookup(where);
  }

  prefetch(first: number, count: number): Promise<void> {
    return this.clean.prefetch(first, count);
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

  write(index: number, offset: number, data: Buffer): Promise<boolean> {
    return this.changes.write(index, offset, data);
  }

  zero(index: number, offset: number, length: number): Promise<void> {
    return this.changes.zero(index, offset, length);
  }

  discard(first: number, count: number): Promise<void> {
    return this.changes.discard(first, count);
  }

  /**
   * FLUSH (no indexes) or FUA (the extents a request touched): resolves once every change
   * acknowledged before the call is in the object store, or, with --flush-mode local, once
   * the journal is fsynced. Rejects while the store refuses uploads (flusher.ts).
   */
  async flush(indexes?: readonly number[]): Promise<void> {
    this.ctx.checkOpen();
    if (this.ctx.options.flushMode === 'local') await this.ctx.journal.sync();
    else await this.flusher.waitForUploads(indexes);
  }

  /** Uploads everything dirty, logging progress, for up to `timeoutMs`. Resolves true when all is uploaded. */
  drain(timeoutMs: number): Promise<boolean> {
    return this.flusher.drain(timeoutMs);
  }

  /** Stops uploading (what is dirty stays in the journal) and closes the files. */
  async close(): Promise<void> {
    const { journal, slots } = this.ctx;
    this.ctx.close();
    this.cuts.abort(new StorageError('ESHUTDOWN', 'the gateway is stopping: the snapshot was not taken'));
    await this.flusher.stop();
    await this.clean.close();
    // A journal that failed for good cannot be synced; one whose sync fails now fails for
    // good. Either said so once when it failed (onFailed), and the exit status says it;
    // what it holds is replayed by the next start all the same.
    if (!journal.failure) await journal.sync().catch(() => undefined);
    await journal.trim(this.flusher.neededSeq());
    await journal.close();
    await slots.close();
  }

  /** Why the journal failed for good, if it did (the gateway then exits with status 4). */
  get failure(): Error | undefined {
    return this.ctx.journal.failure;
  }

  /** Another gateway owns the volume now: refuse changes and stop uploading. */
  fence(by: string): void {
    this.ctx.fenced = by;
  }

  /** The state of each extent the cache holds an entry for (the table in entries.ts); for tests. */
  states(): Map<number, EntryState> {
    const states = new Map<number, EntryState>();
    for (const e of this.table.values()) states.set(e.index, stateOf(e, this.extentSize));
    return states;
  }

  /** Throws if the cache's indexes disagree with its entries' states; for tests. */
  checkInvariants(): void {
    this.table.checkInvariants();
  }

  private isAllocated(index: number): boolean {
    const e = this.table.get(index);
    return e ? !e.zeros : this.ctx.lower.isStored(index);
  }
}
