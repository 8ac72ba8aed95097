// The entry table of the write-back cache: what the cache knows about each extent it holds,
// the indexes over the entries, and the room (dirty limit, disk slots) that writes wait for.
//
// Every extent the cache knows about has an Entry. Its state follows from a few fields, and
// stateOf() computes it:
//
//   state                      slot  valid   gen vs uploadedGen   uploading        zeros
//   (no entry)                 -     -       -                    -                -      the object store is the truth
//   CLEAN                      yes   full    equal or less        no               no     evictable (in cleanOrder)
//   DIRTY                      yes   full    gen > uploadedGen    no               no     waits for the flusher
//   PARTIAL (a kind of DIRTY)  yes   some    gen > uploadedGen    no               no     the rest is in the store (or zeros: baseIsZero)
//   UPLOADING                  yes   full    gen = uploading      yes              no     a put of `uploading` is in flight
//   REWRITTEN-WHILE-UPLOADING  yes   any     gen > uploading      yes              no     uploaded again once the put or delete ends
//   ZERO-DIRTY                 no    none    gen > uploadedGen    no               yes    discarded: a delete is pending
//   DELETING                   no    none    gen = uploading      yes              yes    the delete is in flight
//   DISCARDED-WHILE-UPLOADING  no    none    gen > uploading      yes              yes    deleted once the put ends
//   FILLING                    yes   some    equal or less        no               no     a slot just taken, under the extent's lock
//
// FILLING is the moment between taking a slot and the first change (or, for an extent the
// memory cache evicted, the disk write that makes it CLEAN); it only exists while the extent's
// lock is held. The indexes: `entries` holds every entry, `cleanOrder` the CLEAN ones (least
// recently used first), `dirty` those with gen > uploadedGen (oldest first), and `dirtySlots`
// counts the dirty ones with a slot (what --max-dirty limits). checkInvariants() reconciles
// them with stateOf(); the random-workload tests call it after every round.
//
// Large writes are not copied into the slot: the entry's `journalPieces` point at their
// journal records, whose payloads lie over the slot's bytes (newest last); see changes.ts.

import { Errors } from '../../errors.ts';
import { LogThrottle } from '../../log-throttle.ts';
import { StorageError } from '../storage-error.ts';
import { type CacheContext, REPEAT_LOG_INTERVAL_MS } from './context.ts';
import type { JournalLocation } from './journal.ts';
import { Ranges } from './ranges.ts';

export interface Entry {
  readonly index: number;
  slot: number | undefined;
  /** Bytes of the slot that are current; gaps are still only in the object store. */
  valid: Ranges;
  /** The bytes outside `valid` are zeros (the store has no such extent, or it was discarded). */
  baseIsZero: boolean;
  /** The extent is all zeros (discarded); it has no slot. */
  zeros: boolean;
  /** The journal sequence number of the entry's last change. */
  gen: number;
  uploadedGen: number;
  /**
   * The first change since the extent was last wholly in the store (gen <= uploadedGen): no
   * older journal record is needed to rebuild it, so the journal may be trimmed up to here.
   */
  firstDirtySeq: number;
  /** Generation being uploaded (or deleted), if an upload is in flight. */
  uploading: number | undefined;
  /**
   * Changes whose bytes are only in the journal, oldest first: they lie over the slot's bytes,
   * which they make stale. A piece of the whole extent leaves the slot wholly stale. Emptied
   * by materialize().
   */
  journalPieces: JournalPiece[];
  /**
   * The last change was a whole-extent write in a run of sequential ones: its bytes stay out
   * of the memory cache, before the upload and after it (see changes.ts).
   */
  streamedWrite: boolean;
  /**
   * The last change reached the extent's end: a writer going forward has moved on to the next
   * extent, so the upload need not wait long (flusher.ts, pump()).
   */
  changedToEnd: boolean;
  /**
   * The bytes changed since the last upload took its copy (Changes.apply()), while they are
   * a few runs; undefined once they are more (random writes). Covering the whole extent, they
   * say that the extent was rewritten whole, in whatever order its requests came: the
   * kernel's writeback over several connections ends an extent with any of its pieces. Such an
   * extent need not wait long either (flusher.ts, pump()).
   */
  changedSinceUpload: Ranges | undefined;
  /** When the entry last became dirty, and when it last changed (for the upload policy). */
  dirtySince: number;
  lastChange: number;
}

/** A change whose bytes are the payload of a journal record, not (yet) in the slot. */
export interface JournalPiece {
  readonly seq: number;
  readonly offset: number;
  readonly length: number;
  readonly where: JournalLocation;
}

export type EntryState = 'CLEAN' | 'DIRTY' | 'PARTIAL' | 'UPLOADING' | 'REWRITTEN-WHILE-UPLOADING'
  | 'ZERO-DIRTY' | 'DELETING' | 'DISCARDED-WHILE-UPLOADING' | 'FILLING';

/** The row of the table above that the entry is in. */
export function stateOf(e: Entry, extentSize: number): EntryState {
  if (e.zeros) {
    if (e.uploading === undefined) return 'ZERO-DIRTY';
    return e.gen === e.uploading ? 'DELETING' : 'DISCARDED-WHILE-UPLOADING';
  }
  if (e.uploading !== undefined) return e.gen === e.uploading ? 'UPLOADING' : 'REWRITTEN-WHILE-UPLOADING';
  const full = e.valid.covers(0, extentSize);
  if (e.gen > e.uploadedGen) return full ? 'DIRTY' : 'PARTIAL';
  return full && e.journalPieces.length === 0 ? 'CLEAN' : 'FILLING';
}

/** Whether the entry counts against --max-dirty: dirty and holding a slot. */
function counted(e: Entry): boolean {
  return e.slot !== undefined && e.gen > e.uploadedGen;
}

/** What the table needs of the flusher. */
export interface FlusherHandle {
  /** Uploads without delay until `until` settles. */
  hurry(until: Promise<void>): Promise<void>;
  /** What the store refuses uploads with, while it does (flusher.ts). */
  readonly refused: Error | undefined;
}

interface UploadWaiter {
  readonly gen: number;
  resolve(): void;
  reject(err: Error): void;
}

export class EntryTable {
  private readonly entries = new Map<number, Entry>();
  /** CLEAN entries with slots, least recently used first. */
  private readonly cleanOrder = new Map<number, Entry>();
  /** Dirty entries (including ZERO-DIRTY), in the order they became dirty. */
  readonly dirty = new Map<number, Entry>();
  private dirtySlotCount = 0;
  /** Flushes waiting for an extent's upload, by extent. */
  private readonly uploadWaiters = new Map<number, UploadWaiter[]>();
  /** Writes waiting for room: under the dirty limit, or a free slot. */
  private readonly roomWaiters: Array<() => void> = [];
  private warnedFull = false;
  private readonly dirtyLimitLog: LogThrottle;

  private readonly ctx: CacheContext;
  private readonly flusher: FlusherHandle;

  /** `flusher`: the flusher sits above this table, so it comes as a handle, not an import. */
  constructor(ctx: CacheContext, flusher: FlusherHandle) {
    this.ctx = ctx;
    this.flusher = flusher;
    this.dirtyLimitLog = new LogThrottle(ctx.log, 'warn', { intervalMs: REPEAT_LOG_INTERVAL_MS });
  }

  get(index: number): Entry | undefined {
    return this.entries.get(index);
  }

  has(index: number): boolean {
    return this.entries.has(index);
  }

  values(): IterableIterator<Entry> {
    return this.entries.values();
  }

  /** Dirty extents holding a slot: what --max-dirty limits. */
  get dirtySlots(): number {
    return this.dirtySlotCount;
  }

  /** True while writes wait for room: a disk fill must not take a slot from them. */
  get roomWanted(): boolean {
    return this.roomWaiters.length > 0;
  }

  create(index: number): Entry {
    const e: Entry = {
      index, slot: undefined, valid: new Ranges(), baseIsZero: false, zeros: false, gen: 0, uploadedGen: 0,
      firstDirtySeq: 0, uploading: undefined, journalPieces: [], streamedWrite: false, changedToEnd: false, changedSinceUpload: new Ranges(), dirtySince: 0, lastChange: 0,
    };
    this.entries.set(index, e);
    return e;
  }

  /** Applies `mutate` to the entry, keeping the dirty-slot count right. */
  update(e: Entry, mutate: () => void): void {
    const before = counted(e);
    mutate();
    this.dirtySlotCount += Number(counted(e)) - Number(before);
  }

  markDirty(e: Entry, seq: number): void {
    if (this.entries.get(e.index) !== e) throw new StorageError('EIO', `internal error: extent ${e.index} changed without an entry`);
    e.lastChange = this.ctx.clock.now();
    if (e.gen <= e.uploadedGen) {
      e.dirtySince = e.lastChange;
      e.firstDirtySeq = seq;
    }
    this.update(e, () => { e.gen = seq; });
    this.cleanOrder.delete(e.index);
    this.dirty.set(e.index, e);
  }

  /** The entry is CLEAN now (uploaded, or filled from memory): it may be evicted, oldest first. */
  markClean(e: Entry): void {
    this.dirty.delete(e.index);
    this.cleanOrder.set(e.index, e);
  }

  /** A read used the entry: it is evicted last. */
  touch(e: Entry): void {
    if (this.cleanOrder.has(e.index)) {
      this.cleanOrder.delete(e.index);
      this.cleanOrder.set(e.index, e);
    }
  }

  /** Drops the entry: the object store alone describes the extent from now on. */
  forget(e: Entry): void {
    this.cleanOrder.delete(e.index);
    this.dirty.delete(e.index);
    this.entries.delete(e.index);
    // Flushes waiting for this extent have nothing left to wait for: what they covered was
    // superseded (a discard) before it needed uploading.
    for (const w of this.uploadWaiters.get(e.index) ?? []) w.resolve();
    this.uploadWaiters.delete(e.index);
  }

  releaseSlot(e: Entry): void {
    const slot = e.slot;
    if (slot === undefined) return;
    this.update(e, () => { e.slot = undefined; e.journalPieces = []; });
    this.cleanOrder.delete(e.index);
    this.ctx.slots.release(slot);
    this.wakeRoomWaiters();
  }

  /** A free slot, evicting the least recently used CLEAN entry if need be; waits if none can go. */
  async takeSlot(): Promise<number> {
    for (;;) {
      const slot = this.takeSlotNow();
      if (slot !== undefined) return slot;
      await this.waitForRoom();
    }
  }

  /** A free slot, or the slot of the least recently used CLEAN entry; undefined if none can go. */
  takeSlotNow(): number | undefined {
    const free = this.ctx.slots.take();
    if (free !== undefined) return free;
    for (const victim of this.cleanOrder.values()) {
      if (this.ctx.locks.isBusy(victim.index)) continue;
      const slot = victim.slot!;
      this.forget(victim);
      victim.slot = undefined;
      return slot;
    }
    return undefined;
  }

  /** Waits while one more dirty extent would exceed --max-dirty or no slot can be freed. */
  async admit(index: number): Promise<void> {
    for (;;) {
      const e = this.entries.get(index);
      if (e !== undefined && counted(e)) return;
      const underLimit = (this.dirtySlotCount + 1) * this.ctx.extentSize <= this.ctx.options.maxDirtyBytes;
      const slotAvailable = e?.slot !== undefined || this.ctx.slots.freeCount > 0 || this.cleanOrder.size > 0;
      if (underLimit && slotAvailable) return;
      // No upload will make room until someone fixes what the store refuses: the write fails
      // with that error instead of waiting for ever (the journal keeps what was acknowledged).
      const refused = this.flusher.refused;
      if (refused) throw refused;
      if (!this.warnedFull) {
        // Once per wait for room; under sustained load that is many times a second, so the
        // line itself is throttled (the count of waits since the last line goes with it).
        this.warnedFull = true;
        this.dirtyLimitLog.write({ dirtyBytes: this.dirtySlotCount * this.ctx.extentSize, maxDirty: this.ctx.options.maxDirtyBytes },
          'dirty limit reached: writes wait for uploads');
      }
      await this.waitForRoom();
    }
  }

  /** Room was made (an upload ended, a slot was freed): waiting writes look again. */
  wakeRoomWaiters(): void {
    this.warnedFull = false;
    for (const wake of this.roomWaiters.splice(0)) wake();
  }

  private waitForRoom(): Promise<void> {
    return this.flusher.hurry(new Promise<void>((resolve) => this.roomWaiters.push(resolve)));
  }

  /** Resolves once generation `gen` of the extent is in the store (or superseded by a discard). */
  waitUploaded(index: number, gen: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const list = this.uploadWaiters.get(index) ?? [];
      list.push({ gen, resolve, reject });
      this.uploadWaiters.set(index, list);
    });
  }

  /** The entry's uploadedGen rose: the flushes it satisfies go on. */
  uploaded(e: Entry): void {
    const waiting = this.uploadWaiters.get(e.index);
    if (!waiting) return;
    const still = waiting.filter((w) => w.gen > e.uploadedGen);
    for (const w of waiting) if (w.gen <= e.uploadedGen) w.resolve();
    if (still.length > 0) this.uploadWaiters.set(e.index, still);
    else this.uploadWaiters.delete(e.index);
  }

  /**
   * The store refuses uploads: every flush waiting for one fails with `err`, and the writes
   * waiting for room look again (admit() then fails them too).
   */
  failWaiters(err: Error): void {
    for (const list of this.uploadWaiters.values()) for (const w of list) w.reject(err);
    this.uploadWaiters.clear();
    this.wakeRoomWaiters();
  }

  /** Throws if the indexes disagree with the entries' states (the table above); for tests. */
  checkInvariants(): void {
    const { extentSize, slots, locks } = this.ctx;
    const fail = (e: Entry, what: string): never => {
      throw new Error(`cache invariant broken at extent ${e.index} (${stateOf(e, extentSize)}): ${what}`);
    };
    let dirtySlots = 0;
    const slotsUsed = new Set<number>();
    for (const [index, e] of this.entries) {
      if (e.index !== index) fail(e, `filed under ${index}`);
      const state = stateOf(e, extentSize);
      if (counted(e)) dirtySlots++;
      if (e.slot !== undefined) {
        if (slotsUsed.has(e.slot)) fail(e, `slot ${e.slot} is used twice`);
        slotsUsed.add(e.slot);
      }
      if ((state === 'CLEAN') !== this.cleanOrder.has(index) && !(state === 'CLEAN' && locks.isBusy(index))) {
        fail(e, this.cleanOrder.has(index) ? 'in cleanOrder' : 'CLEAN but not in cleanOrder');
      }
      if ((e.gen > e.uploadedGen) !== this.dirty.has(index)) fail(e, this.dirty.has(index) ? 'in dirty but not dirty' : 'dirty but not in dirty');
      if (e.zeros && (e.slot !== undefined || !e.valid.isEmpty() || e.journalPieces.length > 0)) fail(e, 'zeros with a slot or bytes');
      if (!e.zeros && e.slot === undefined && !locks.isBusy(index)) fail(e, 'neither zeros nor a slot, and no change under way');
      if (e.journalPieces.length > 0 && e.slot === undefined) fail(e, 'journal pieces without a slot');
      if (e.uploading !== undefined && (e.uploading > e.gen || e.uploading <= e.uploadedGen)) {
        fail(e, `uploading ${e.uploading} outside (${e.uploadedGen}, ${e.gen}]`);
      }
      if (state === 'FILLING' && !locks.isBusy(index)) fail(e, 'FILLING without its lock held');
    }
    for (const [index, e] of this.cleanOrder) if (this.entries.get(index) !== e) fail(e, 'in cleanOrder without its entry');
    for (const [index, e] of this.dirty) if (this.entries.get(index) !== e) fail(e, 'in dirty without its entry');
    if (dirtySlots !== this.dirtySlotCount) throw new Error(`cache invariant broken: dirtySlots is ${this.dirtySlotCount}, ${dirtySlots} entries count`);
    if (slotsUsed.size + slots.freeCount > slots.slotCount) {
      throw new Error(`cache invariant broken: ${slotsUsed.size} slots used and ${slots.freeCount} free of ${slots.slotCount}`);
    }
    for (const [index, list] of this.uploadWaiters) {
      const e = this.entries.get(index);
      if (!e) throw new Error(`cache invariant broken: a flush waits for extent ${index}, which has no entry`);
      if (list.some((w) => w.gen <= e.uploadedGen)) fail(e, 'a flush waits for a generation already uploaded');
    }
  }

  /** Replay found a change for an extent without a slot and none is free: the cache is too small. */
  checkRoomToRecover(index: number): void {
    const { slots, extentSize, options } = this.ctx;
    if (this.entries.get(index)?.slot === undefined && slots.freeCount === 0) {
      throw Errors.cacheTooSmallToRecover(options.cacheDir, slots.slotCount * extentSize);
    }
  }
}
