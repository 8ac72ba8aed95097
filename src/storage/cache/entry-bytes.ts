// An entry's current bytes: its journal pieces laid over its slot's bytes, and the gaps of a
// PARTIAL entry filled from the store (or with zeros, without a request) when a read or an
// upload needs the whole extent.

import { Ranges } from './ranges.ts';
import type { CacheContext } from './context.ts';
import type { Entry, EntryTable, JournalPiece } from './entries.ts';

const ZERO_EXTENT_CHUNK = Buffer.alloc(1024 * 1024);

/** `length` zero bytes, without allocating for the common sizes. */
export function zeroBytes(length: number): Buffer {
  return length <= ZERO_EXTENT_CHUNK.length ? ZERO_EXTENT_CHUNK.subarray(0, length) : Buffer.alloc(length);
}

/** What EntryBytes uses of the memory cache (CleanExtents). */
export interface MemoryCopies {
  /** The extent's current bytes, if memory has them (a whole-extent write put them there). */
  peek(index: number): Buffer | undefined;
  /** The stored bytes an entry's gaps are filled from, if memory still holds them (CleanExtents.holdBase()). */
  base(index: number): Buffer | undefined;
  dropBase(index: number): void;
}

export class EntryBytes {
  private readonly ctx: CacheContext;
  private readonly table: EntryTable;
  private readonly clean: MemoryCopies;

  constructor(ctx: CacheContext, table: EntryTable, clean: MemoryCopies) {
    this.ctx = ctx;
    this.table = table;
    this.clean = clean;
  }

  /**
   * The entry's current bytes (which `valid` must cover): from memory if there, else its
   * journal pieces laid over the slot's bytes.
   */
  async read(e: Entry, offset: number, length: number): Promise<Buffer> {
    const remembered = this.clean.peek(e.index);
    if (remembered) return remembered.subarray(offset, offset + length);
    const { slots } = this.ctx;
    if (e.journalPieces.length === 0) return slots.read(e.slot!, offset, length);
    const end = offset + length;
    const pieces = e.journalPieces.filter((p) => p.offset < end && offset < p.offset + p.length);
    const newest = pieces.at(-1);
    if (newest && newest.offset <= offset && end <= newest.offset + newest.length) return this.readPiece(newest, offset, length);
    const inPieces = new Ranges();
    for (const p of pieces) inPieces.add(p.offset, p.offset + p.length);
    const out = inPieces.covers(offset, end) ? Buffer.allocUnsafe(length) : await slots.read(e.slot!, offset, length);
    for (const p of pieces) {
      const start = Math.max(offset, p.offset);
      await this.readPiece(p, start, Math.min(end, p.offset + p.length) - start, out.subarray(start - offset));
    }
    return out;
  }

  /**
   * Copies an entry's journal pieces into its slot, oldest first, before a change that goes
   * to the slot. Under the lock. (Memory no longer has the extent: the change has already
   * invalidated it.)
   */
  async materialize(e: Entry): Promise<void> {
    for (const p of e.journalPieces) await this.ctx.slots.write(e.slot!, p.offset, await this.readPiece(p, p.offset, p.length));
    e.journalPieces = [];
  }

  /**
   * Fills the gaps of a PARTIAL entry from the store: from `fetched` (the store's extent
   * already in hand), else from the base memory held when the entry was made
   * (CleanExtents.holdBase()), else with a GET.
   */
  async completeFromStore(index: number, fetched?: Buffer): Promise<void> {
    const { lower, locks, slots, extentSize } = this.ctx;
    // A base known to be zeros needs no request.
    const skipFetch = this.table.get(index)?.baseIsZero === true;
    const base = skipFetch ? undefined : fetched ?? this.clean.base(index) ?? await lower.fetch(index);
    await locks.with(index, async () => {
      const e = this.table.get(index);
      if (!e || e.zeros || e.slot === undefined) return;
      if (skipFetch && !e.baseIsZero) return; // changed meanwhile: the caller looks again
      const fill = e.baseIsZero ? undefined : base;
      for (const [start, end] of e.valid.gaps(extentSize)) {
        await slots.write(e.slot, start, fill ? fill.subarray(start, end) : zeroBytes(end - start));
      }
      e.valid = Ranges.full(extentSize);
      this.clean.dropBase(index);
    });
  }

  /** Bytes [offset, offset + length) of the extent, from a piece that holds them. */
  private readPiece(p: JournalPiece, offset: number, length: number, into?: Buffer): Promise<Buffer> {
    return this.ctx.journal.readPayload({ ...p.where, position: p.where.position + offset - p.offset }, length, into);
  }
}
