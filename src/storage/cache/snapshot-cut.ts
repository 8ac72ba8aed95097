// A crash-consistent snapshot of a volume while the cache writes it: the generation of the
// object that holds each extent as it was at one instant, the cut, with every write
// acknowledged before it and none after, taken without stopping writes.
//
// At the cut (synchronously, so no change falls inside it):
//   - extents the cache holds clean, or does not hold: the store's current object (the
//     census), kept from the garbage collector from this moment (RetainedObjects);
//   - extents discarded but not yet deleted: zeros;
//   - dirty extents are PENDING, each with two generations reserved now, below every
//     generation of a later upload (a copy's, and its tombstone's: ExtentObjects.putCopy()).
//     A pending extent is resolved by the first of:
//       * the flusher's upload of exactly the cut's version (uploaded(), with the object's
//         generation, or zeros when the extent turned out all zeros);
//       * a change to it after the cut (beforeChange(), under the extent's lock, before the
//         change touches anything): its bytes as of the cut are copied out (FROZEN) and
//         uploaded here under the reserved generation, which stays below the newer version's
//         whatever order the two uploads land in; the census keeps the older one beside the
//         current, for the snapshot. A frozen PARTIAL extent's missing bytes come from the
//         object the store held at the cut (retained for that).
//     A change under way at the cut (past beforeChange(), not yet applied) was not acknowledged
//     before it: the snapshot may hold it or not. It holds it: once the change is applied
//     (afterChange()), the extent's pending version is the changed one (or zeros, for a discard).
// Writes go on throughout: a change after the cut costs at most one local copy of its extent.
// Frozen copies wait in memory for their upload (at most the dirty extents of the cut).
//
// One cut at a time. The snapshot's objects stay retained once it resolves; the caller
// releases them (release()) if it cannot record the snapshot.

import type { CacheContext } from './context.ts';
import type { Entry, EntryTable } from './entries.ts';
import type { EntryBytes } from './entry-bytes.ts';
import type { Flusher } from './flusher.ts';
import { isAllZero } from '../extents/zeros.ts';

interface Pending {
  /** The entry's version at the cut (or once the change under way at the cut is applied). */
  gen: number;
  /** The object generation a frozen copy is uploaded under. */
  readonly reserved: number;
  frozen: boolean;
  /** A change to the extent was under way at the cut: afterChange() takes its version. */
  inChange: boolean;
}

interface Cut {
  /** Extent → object generation: the snapshot, complete once nothing is pending. */
  readonly refs: Map<number, number>;
  /** The census at the cut (retained until the cut ends). */
  readonly atCut: Map<number, number>;
  readonly pending: Map<number, Pending>;
  readonly done: Promise<void>;
  resolveDone(): void;
  failDone(err: unknown): void;
}

export class SnapshotCuts {
  private active: Cut | undefined;
  /** Extents a live change is being applied to (between beforeChange() and afterChange()). */
  private readonly changing = new Set<number>();
  private readonly ctx: CacheContext;
  private readonly table: EntryTable;
  private readonly bytes: EntryBytes;
  private readonly flusher: Flusher;

  constructor(ctx: CacheContext, table: EntryTable, bytes: EntryBytes, flusher: Flusher) {
    this.ctx = ctx;
    this.table = table;
    this.bytes = bytes;
    this.flusher = flusher;
  }

  /** Extents of the cut in progress still waiting for their object (for status and tests). */
  get pending(): number {
    return this.active?.pending.size ?? 0;
  }

  /** Takes a snapshot at this instant; resolves extent → object generation once all of it is in the store. */
  async take(): Promise<Map<number, number>> {
    while (this.active) await this.active.done.catch(() => undefined);
    this.ctx.checkOpen();
    const { lower } = this.ctx;
    // From here to the end of the loop nothing awaits: this is the instant of the cut.
    const atCut = lower.currentGenerations();
    for (const [index, generation] of atCut) lower.retained.add(index, generation);
    const refs = new Map(atCut);
    const pending = new Map<number, Pending>();
    for (const e of this.table.dirty.values()) {
      if (e.zeros) refs.delete(e.index);
      else pending.set(e.index, { gen: e.gen, reserved: lower.reserveCopyGeneration(), frozen: false, inChange: this.changing.has(e.index) });
    }
    let resolveDone = (): void => {};
    let failDone = (_err: unknown): void => {};
    const done = new Promise<void>((resolve, reject) => { resolveDone = resolve; failDone = reject; });
    const cut: Cut = { refs, atCut, pending, done, resolveDone, failDone };
    this.active = cut;
    if (pending.size === 0) cut.resolveDone();
    try {
      await this.flusher.hurry(done);
      return refs;
    } catch (err) {
      this.release(refs);
      throw err;
    } finally {
      this.active = undefined;
      // What the cut kept only because it was the store's at the cut is garbage again if superseded.
      const dropped = [...atCut].filter(([index, generation]) => refs.get(index) !== generation);
      for (const [index, generation] of dropped) lower.retained.release(index, generation);
      lower.considerGarbage(dropped.map(([index]) => index));
    }
  }

  /** Ends the cut in progress, if any, with `err` (the cache is closing: its uploads stop). */
  abort(err: Error): void {
    this.active?.failDone(err);
  }

  /** Lets the garbage collector have a snapshot's objects (it could not be recorded, or was deleted). */
  release(refs: Map<number, number>): void {
    const { lower } = this.ctx;
    for (const [index, generation] of refs) lower.retained.release(index, generation);
    lower.considerGarbage(refs.keys());
  }

  /** Before a change to `e` (under its lock): a pending extent's bytes at the cut are copied out first. */
  async beforeChange(e: Entry): Promise<void> {
    this.changing.add(e.index);
    const cut = this.active;
    const p = cut?.pending.get(e.index);
    // Changed since the cut (already frozen), or its upload of the cut's version is under way.
    if (!cut || !p || p.frozen || e.gen !== p.gen || e.uploading === e.gen) return;
    p.frozen = true;
    const { extentSize } = this.ctx;
    const data = Buffer.alloc(extentSize);
    const valid = e.valid.list();
    for (const [start, end] of valid) (await this.bytes.read(e, start, end - start)).copy(data, start);
    // Bytes the entry never had are the store's (or zeros, already in `data`).
    const fromStore = e.baseIsZero ? [] : e.valid.gaps(extentSize);
    void this.uploadFrozen(cut, e.index, p, data, fromStore).catch((err: unknown) => cut.failDone(err));
  }

  /** After a change to `e` (applied or failed; under its lock, as beforeChange() was before it). */
  afterChange(e: Entry): void {
    this.changing.delete(e.index);
    const cut = this.active;
    const p = cut?.pending.get(e.index);
    if (!cut || !p?.inChange) return;
    p.inChange = false;
    // A discard may have forgotten the entry (the store never had the extent): nothing to upload.
    if (e.zeros) this.resolve(cut, e.index, undefined);
    else p.gen = e.gen; // unchanged if it failed
  }

  /** The flusher's upload of version `gen` of an extent ended: `generation` holds it (undefined: the extent is zeros). Under the lock. */
  uploaded(index: number, gen: number, generation: number | undefined): void {
    const cut = this.active;
    const p = cut?.pending.get(index);
    if (cut && p && !p.frozen && p.gen === gen) this.resolve(cut, index, generation);
  }

  private async uploadFrozen(cut: Cut, index: number, p: Pending, data: Buffer, fromStore: Array<[number, number]>): Promise<void> {
    const { lower } = this.ctx;
    if (fromStore.length > 0) {
      // A PARTIAL extent: the bytes it never had come from the store's object at the cut. The
      // live entry gets them too, now: the copy may be followed by a tombstone (putCopy()),
      // after which the store no longer shows that object as the extent's.
      const baseGeneration = cut.atCut.get(index);
      const base = baseGeneration === undefined ? undefined : await lower.fetchGeneration(index, baseGeneration);
      if (base) for (const [start, end] of fromStore) base.copy(data, start, start, end);
      await this.bytes.completeFromStore(index, base ?? Buffer.alloc(this.ctx.extentSize));
    }
    if (isAllZero(data)) {
      this.resolve(cut, index, undefined);
      return;
    }
    // Retained before it exists: the garbage collector looks at the extent as soon as it lands.
    lower.retained.add(index, p.reserved);
    await this.flusher.putCopy(index, data, p.reserved);
    this.resolve(cut, index, p.reserved, true);
  }

  /** `retained`: the caller has retained the object already. */
  private resolve(cut: Cut, index: number, generation: number | undefined, retained = false): void {
    const { lower } = this.ctx;
    if (this.active !== cut || !cut.pending.delete(index)) {
      // A cut that failed (the cache closed) keeps nothing: a late copy is garbage.
      if (retained && generation !== undefined && lower.retained.release(index, generation)) lower.considerGarbage([index]);
      return;
    }
    if (generation === undefined) cut.refs.delete(index);
    else {
      cut.refs.set(index, generation);
      if (!retained) lower.retained.add(index, generation);
    }
    if (cut.pending.size === 0) cut.resolveDone();
  }
}
