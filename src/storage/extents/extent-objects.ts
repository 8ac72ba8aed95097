// Extents as objects: whole extents only, each version of an extent a new, immutable object
// (keys: extent-keys.ts; the format: docs/format.md). This is what the write-back cache needs
// from below, and what the read-modify-write DirectExtentStore builds on where there is no cache.
//
// Absent objects read as zeros, and an all-zero extent is deleted or tombstoned, never stored:
// that is the caller's choice to make (the cache scans an extent for zeros once, when it
// snapshots it for upload), so put() stores whatever it is given. Which objects exist is
// learnt once by listing the store and kept in an ObjectCensus, so holes, BLOCK_STATUS and
// discards never touch the store for extents that do not exist.
//
// Every put writes the next generation of the writer (generations.ts) under a new key; what it
// supersedes is deleted later in batches (garbage-collector.ts). Making a stored extent zeros
// deletes its object when it is the extent's only one and this layer knows every object in
// the bucket; otherwise it writes a tombstone. "Knows every object": an earlier writer's
// upload still in flight when this one listed the store may land after the listing, unseen.
// recount() lists the store again once such uploads cannot still land (the stack calls it a
// lease lifetime and a request timeout after taking the lease); until then, tombstones.
//
// A clone (docs/format.md, "Clones") reads the extents it has not written from its origin
// snapshot's objects, in other stores: its `base`, one object per extent, each of a `source`
// (1: the origin volume; 2, …: the origin's own origins, for a clone of a clone's snapshot).
// They join the census as the oldest objects of their extents (the clone's epochs are above
// every epoch they carry, as its lease's epoch is above the census's highest), and are kept
// for good in `retained`: so the collector never deletes one (they are not ours), never
// deletes a tombstone above one (that would bring it back), and zeroing such an extent writes
// a tombstone. Fetching one decodes it with its own volume's id, which its checksum binds.
//
// Failures arrive as the object store's StorageErrors (each backend translates its own) and
// pass through unchanged. No per-extent lock here: each caller already runs one put or delete per extent at a time
// (the cache's flusher one upload per extent, DirectExtentStore under its own lock), and a
// second lock in this layer only doubled the work on the upload path.

import type { Logger } from 'pino';
import type { VolumeTelemetry } from '../../telemetry.ts';
import { type ExtentCodec, rawCodec } from '../format/extent-codec.ts';
import { EXTENT_PREFIX, type ExtentObjectName, parseExtentKey } from './extent-keys.ts';
import { DELETE_BATCH, GarbageCollector } from './garbage-collector.ts';
import { GenerationCounter } from './generations.ts';
import { ObjectCensus, keyOf } from './object-census.ts';
import { type ExtentSource, ObjectReader } from './object-reader.ts';
import { RetainedObjects } from './retained-objects.ts';
import type { ExtentRun } from '../extent-store.ts';
import { StorageError } from '../storage-error.ts';
import type { ObjectStore } from '../objects/object-store.ts';

/** The extent layer as the layers above see it. */
export interface ExtentObjects {
  readonly extentSize: number;
  readonly extentCount: number;
  /** Number of extents stored (for `s3nbd info` and tests). */
  readonly allocatedCount: number;
  /** True while a fetch would have to wait for its turn (read-ahead then does not ask). */
  readonly fetchesFull: boolean;
  /** True when the extent's object exists. */
  isStored(index: number): boolean;
  /** Stored extents in [first, first + count), ascending. */
  storedIn(first: number, count: number): Iterable<number>;
  /** Runs of stored and absent extents covering [first, first + count), at most `maxRuns`. */
  runs(first: number, count: number, maxRuns: number): ExtentRun[];
  /** The whole stored extent, or undefined for a hole. The caller owns the buffer. */
  fetch(index: number): Promise<Buffer | undefined>;
  /**
   * Stores a whole extent, which the store may keep by reference (see ObjectStore.put), as a
   * new object; resolves its generation. One put or delete per extent at a time.
   */
  put(index: number, extent: Buffer): Promise<number>;
  /** A generation for a later putCopy() (it takes the one after it too), below every generation handed out later. */
  reserveCopyGeneration(): number;
  /**
   * Stores a snapshot's copy of an extent as it was before its current content, under a
   * generation from reserveCopyGeneration(). It never becomes the extent's content: when it
   * lands above every object of the extent, a tombstone at the next generation follows it,
   * so that no listing takes it for the extent's content. The caller retains it first.
   */
  putCopy(index: number, extent: Buffer, generation: number): Promise<void>;
  /** The generation of every extent's current data object (a snapshot of the volume as it is in the store). */
  currentGenerations(): Map<number, number>;
  /** The extent as one given object holds it (a snapshot's), or undefined if that object is gone. */
  fetchGeneration(index: number, generation: number): Promise<Buffer | undefined>;
  /** The objects snapshots keep. */
  readonly retained: RetainedObjects;
  /** Looks for garbage again among these extents' objects (a snapshot released them). */
  considerGarbage(indexes: Iterable<number>): void;
  /** Deletes the extents' objects in batches; extents not stored cost nothing. */
  deleteExtents(indexes: readonly number[]): Promise<void>;
  /** Resolves once every put and delete that resolved before the call is durable. */
  flush(): Promise<void>;
}

export { MAX_FETCH_BYTES, type ExtentSource } from './object-reader.ts';

export interface ObjectExtentsOptions {
  readonly extentSize: number;
  readonly extentCount: number;
  /** Bound into every object's checksum or authenticated data, with the extent and generation. */
  readonly volumeId?: string;
  /** Default rawCodec: format 1 volumes, and tests of the layers above. */
  readonly codec?: ExtentCodec;
  /** Where an object that fails its check twice is reported. */
  readonly log?: Logger | undefined;
  /** Told of every extent fetched (the admin endpoint's metrics). */
  readonly telemetry?: VolumeTelemetry | undefined;
  /** The objects snapshots keep (default: none). */
  readonly retained?: RetainedObjects;
  /** A clone's origins: source i is sources[i - 1] (see the top of the file). */
  readonly sources?: readonly ExtentSource[];
  /** A clone's origin objects, one per extent at most, each of a source ≥ 1 (open() only). */
  readonly base?: Iterable<{ readonly index: number; readonly generation: number; readonly source: number }>;
  /**
   * False where an earlier writer's uploads may still land after the listing at open (a
   * gateway taking the lease): until recount(), zeroed extents get tombstones. Default true.
   */
  readonly complete?: boolean;
  /**
   * False: queue no garbage until startCollecting(). Only the writer that holds the lease
   * deletes objects, once it knows every snapshot (a reader, or a writer before its lease, may
   * not know a snapshot taken since it listed the store). Default true (tests, volatile stores).
   */
  readonly collect?: boolean;
}

/** Tombstones put at once by one deleteExtents() call. */
const TOMBSTONE_CONCURRENCY = 16;

export class ObjectExtents implements ExtentObjects {
  readonly extentSize: number;
  private extents: number;
  private readonly objects: ObjectStore;
  private readonly census: ObjectCensus;
  private readonly generations: GenerationCounter;
  private readonly collector: GarbageCollector;
  private readonly codec: ExtentCodec;
  private readonly volumeId: string;
  private readonly reader: ObjectReader;
  /** Extent → generation of the clone's origin object (none for a volume that is not a clone). */
  private readonly base = new Map<number, number>();
  readonly retained: RetainedObjects;
  private complete: boolean;
  private collecting: boolean;
  /** A snapshot's extents (ofSnapshot): the census is the manifest's, and a missing object is an error, not zeros. */
  private readonly fixed: boolean;

  private constructor(objects: ObjectStore, options: ObjectExtentsOptions, census: ObjectCensus, fixed = false) {
    this.objects = objects;
    this.extentSize = options.extentSize;
    this.extents = options.extentCount;
    this.census = census;
    this.codec = options.codec ?? rawCodec;
    this.volumeId = options.volumeId ?? '';
    this.reader = new ObjectReader({
      extentSize: options.extentSize, own: { objects, volumeId: this.volumeId, codec: this.codec }, sources: options.sources ?? [], log: options.log, telemetry: options.telemetry,
    });
    this.complete = options.complete ?? true;
    this.collecting = !fixed && (options.collect ?? true);
    this.fixed = fixed;
    this.generations = new GenerationCounter(census.maxEpoch + 1);
    this.retained = options.retained ?? new RetainedObjects();
    this.collector = new GarbageCollector(objects, census, this.retained, () => this.complete, options.log);
  }

  /** Opens the layer, listing the store once to learn which objects exist; queues the garbage found. */
  static async open(objects: ObjectStore, options: ObjectExtentsOptions): Promise<ObjectExtents> {
    const census = new ObjectCensus(options.extentCount);
    await listInto(objects, census, options.extentCount);
    const base = [...options.base ?? []];
    // Before the layer is made: its generations start above every epoch in the census, the base's too.
    for (const { index, generation, source } of base) census.add({ index, generation, zero: false, source });
    const layer = new ObjectExtents(objects, options, census);
    for (const ref of base) layer.addBase(ref);
    for (const index of census.mayHaveGarbage()) layer.consider(index);
    return layer;
  }

  /**
   * A snapshot's extents, read-only: the census is the manifest's references (every one a data
   * object of this volume), nothing is listed, and nothing is ever put, deleted or collected.
   * An object the manifest names but the store lacks fails the read with EIO.
   */
  static ofSnapshot(objects: ObjectStore, options: ObjectExtentsOptions,
    references: ReadonlyArray<{ index: number; generation: number; source?: number }>): ObjectExtents {
    const census = new ObjectCensus(options.extentCount);
    for (const { index, generation, source } of references) census.add({ index, generation, zero: false, ...source ? { source } : {} });
    const layer = new ObjectExtents(objects, options, census, true);
    for (const { index, generation, source } of references) {
      if (!source) continue;
      layer.reader.sourceOf(index, source);
      layer.base.set(index, generation);
    }
    return layer;
  }

  /** A clone's origin object (in the census already): the extent's oldest, kept for good (see the top of the file). */
  private addBase(ref: { index: number; generation: number; source: number }): void {
    this.reader.sourceOf(ref.index, ref.source);
    this.base.set(ref.index, ref.generation);
    this.retained.add(ref.index, ref.generation);
  }

  /** 0 when the object is this volume's, i ≥ 1 when it is the clone's origin object of source i. */
  referenceSource(index: number, generation: number): number {
    if (this.base.get(index) !== generation) return 0;
    const current = this.census.current(index);
    if (current?.generation === generation) return current.source ?? 0;
    return this.census.others(index).find((o) => o.generation === generation)?.source ?? 0;
  }

  /** Extents in the volume; grows with the volume (grow()), never shrinks. */
  get extentCount(): number {
    return this.extents;
  }

  /**
   * The volume grew to `extentCount` extents (Storage.grow, once its metadata says so): the
   * new extents are holes, and recount() lists them too from now on. A snapshot's layer
   * keeps the size it was taken with.
   */
  grow(extentCount: number): void {
    if (this.fixed) throw new Error('a snapshot does not grow');
    if (extentCount <= this.extents) return;
    this.census.grow(extentCount);
    this.extents = extentCount;
  }

  /** Starts collecting garbage (the stack calls it once it holds the lease and knows every snapshot). */
  startCollecting(): void {
    if (this.fixed || this.collecting) return;
    this.collecting = true;
    for (const index of this.census.mayHaveGarbage()) this.collector.consider(index);
  }

  private consider(index: number): void {
    if (this.collecting) this.collector.consider(index);
  }

  /** The current data object of every stored extent (not tombstones), ascending, with its source: what a snapshot holds. */
  currentObjects(): ExtentObjectName[] {
    const names: ExtentObjectName[] = [];
    for (const index of this.census.stored.allocatedIn(0, this.extentCount)) {
      const current = this.census.current(index);
      if (current && !current.zero) names.push(current);
    }
    return names;
  }

  /** True when the object is the extent's current one (what the volume reads). */
  isCurrent(index: number, generation: number): boolean {
    return this.census.current(index)?.generation === generation;
  }

  /** The highest epoch in the bucket: a new writer's must be above it (the lease sees to that). */
  get maxEpoch(): number {
    return this.census.maxEpoch;
  }

  /** Uploads from here on carry generations of this epoch (the writer's, from its lease). */
  useEpoch(epoch: number): void {
    this.generations.use(epoch);
  }

  /**
   * Lists the store again, once no earlier writer's upload can still land: from then on this
   * layer knows every object, and may delete an extent's only object instead of tombstoning it.
   */
  async recount(): Promise<void> {
    await listInto(this.objects, this.census, this.extentCount);
    this.complete = true;
    for (const index of this.census.mayHaveGarbage()) this.consider(index);
  }

  /** Objects queued for deletion, and deleted so far. */
  get garbage(): { pending: number; deleted: number } {
    return { pending: this.collector.pending, deleted: this.collector.deleted };
  }

  /** False until recount(): an earlier writer's uploads may still land, and zeroed extents get tombstones meanwhile. */
  get knowsEveryObject(): boolean {
    return this.complete;
  }

  /** Looks for garbage again among these extents' objects (a snapshot released them). */
  considerGarbage(indexes: Iterable<number>): void {
    for (const index of indexes) this.consider(index);
  }

  /** Deletes the garbage queued now, and what that makes garbage in turn. */
  collectGarbage(): Promise<void> {
    return this.collector.collect();
  }

  /** Stops collecting garbage (what is left, the next start finds). */
  close(): Promise<void> {
    return this.collector.close();
  }

  get fetchesFull(): boolean {
    return this.reader.full;
  }

  get allocatedCount(): number {
    return this.census.stored.count;
  }

  isStored(index: number): boolean {
    return this.census.stored.has(index);
  }

  storedIn(first: number, count: number): Generator<number> {
    return this.census.stored.allocatedIn(first, count);
  }

  runs(first: number, count: number, maxRuns: number): ExtentRun[] {
    return this.census.stored.runs(first, count, maxRuns);
  }

  async fetch(index: number): Promise<Buffer | undefined> {
    if (!this.census.stored.has(index)) return undefined;
    for (;;) {
      const current = this.census.current(index);
      if (!current || current.zero) return undefined;
      const data = await this.reader.read(current);
      if (data !== undefined) return data;
      if (current.source) throw new StorageError('EIO', `extent ${index}'s object ${keyOf(current)} in the clone's origin ${this.reader.sourceOf(index, current.source).objects.description} is missing`);
      if (this.fixed) throw new StorageError('EIO', `extent ${index}'s object ${keyOf(current)}, which the snapshot holds, is missing from the store`);
      // Superseded and collected while we asked for it: ask for the newer one.
      if (this.census.current(index) !== current) continue;
      // Deleted behind our back (by hand): it reads as zeros now.
      this.census.remove(current);
      return undefined;
    }
  }

  fetchGeneration(index: number, generation: number): Promise<Buffer | undefined> {
    const source = this.base.get(index) === generation ? this.referenceSource(index, generation) : 0;
    return this.reader.read({ index, generation, zero: false, ...source ? { source } : {} });
  }

  reserveCopyGeneration(): number {
    const generation = this.generations.next();
    this.generations.next(); // for the tombstone that may follow the copy
    return generation;
  }

  async putCopy(index: number, extent: Buffer, generation: number): Promise<void> {
    await this.putObject({ index, generation, zero: false }, extent, true);
    const current = this.census.current(index);
    if (!current || current.generation < generation) await this.putObject({ index, generation: generation + 1, zero: true }, Buffer.alloc(0));
  }

  currentGenerations(): Map<number, number> {
    return this.census.currentData();
  }

  async put(index: number, extent: Buffer): Promise<number> {
    const generation = this.generations.next();
    await this.putObject({ index, generation, zero: false }, extent);
    return generation;
  }

  async deleteExtents(indexes: readonly number[]): Promise<void> {
    this.checkWritable();
    const stored = indexes.filter((i) => this.census.stored.has(i));
    // The extent's only object, when every object is known and no snapshot keeps it: deleted. Otherwise a tombstone.
    const alone = (i: number): boolean => {
      const current = this.census.current(i);
      return this.complete && this.census.others(i).length === 0 && current !== undefined && !this.retained.has(i, current.generation);
    };
    const tombstones = stored.filter((i) => !alone(i));
    for (let i = 0; i < tombstones.length; i += TOMBSTONE_CONCURRENCY) {
      await Promise.all(tombstones.slice(i, i + TOMBSTONE_CONCURRENCY).map((index) =>
        this.putObject({ index, generation: this.generations.next(), zero: true }, Buffer.alloc(0))));
    }
    const deletable = stored.filter(alone);
    for (let i = 0; i < deletable.length; i += DELETE_BATCH) {
      const batch = deletable.slice(i, i + DELETE_BATCH).flatMap((index) => this.census.current(index) ?? []);
      await this.objects.deleteMany(batch.map(keyOf));
      for (const name of batch) this.census.remove(name);
    }
  }

  private checkWritable(): void {
    if (this.fixed) throw new StorageError('EROFS', 'a snapshot is read-only');
  }

  /** `copy`: a snapshot's copy, never the current object (putCopy()). */
  private async putObject(name: ExtentObjectName, extent: Buffer, copy = false): Promise<void> {
    this.checkWritable();
    const body = name.zero ? extent : await this.codec.encode({ volumeId: this.volumeId, index: name.index, generation: name.generation }, extent);
    try {
      await this.objects.put(keyOf(name), body);
    } catch (err) {
      this.census.addUncertain(name);
      this.consider(name.index);
      throw err;
    }
    this.census.putDone(name, copy);
    this.consider(name.index);
  }

  flush(): Promise<void> {
    return this.objects.flush();
  }
}

async function listInto(objects: ObjectStore, census: ObjectCensus, extentCount: number): Promise<void> {
  for await (const key of objects.list(EXTENT_PREFIX)) {
    const name = parseExtentKey(key);
    if (name !== undefined && name.index < extentCount) census.add(name);
  }
}
