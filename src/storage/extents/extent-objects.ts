// Extents as objects: one object per extent (keys: extent-keys.ts), whole extents only, and a
// map of which exist. This is what the write-back cache needs from below, and what the
// read-modify-write DirectExtentStore builds on where there is no cache.
//
// Absent objects read as zeros, and an all-zero extent is deleted, never stored: that is the
// caller's choice to make (the cache scans an extent for zeros once, when it snapshots it for
// upload), so put() stores whatever it is given. Which extents exist is loaded once by listing
// the store and kept in an AllocationMap, so holes, BLOCK_STATUS and discards never touch the
// store for extents that do not exist.
//
// Failures arrive as the object store's StorageErrors (each backend translates its own) and
// pass through unchanged. No per-extent lock here: each caller already runs one put or delete per extent at a time
// (the cache's flusher one upload per extent, DirectExtentStore under its own lock), and a
// second lock in this layer only doubled the work on the upload path.

import type { Logger } from 'pino';
import { LogCodes } from '../../errors.ts';
import { type ExtentCodec, type ExtentIdentity, rawCodec } from '../format/extent-codec.ts';
import { AllocationMap } from './allocation-map.ts';
import { EXTENT_PREFIX, extentIndexOf, extentKey } from './extent-keys.ts';
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
   * Stores a whole extent, which the store may keep by reference (see ObjectStore.put). One
   * put or delete per extent at a time.
   */
  put(index: number, extent: Buffer): Promise<void>;
  /** Deletes the extents' objects in batches; extents not stored cost nothing. */
  deleteExtents(indexes: readonly number[]): Promise<void>;
  /** Resolves once every put and delete that resolved before the call is durable. */
  flush(): Promise<void>;
}

/** DeleteObjects takes at most 1000 keys per request in S3. */
const DELETE_BATCH = 1000;
/**
 * Whole extents being fetched from the store at once, in bytes (at least 8 extents). A read
 * of one byte fetches a whole extent, so the NBD in-flight budget, which counts the bytes
 * asked for, did not bound them (256 one-byte reads per connection, 256 extents in memory);
 * nor did anything bound the write-back cache's read-ahead. More fetches wait their turn.
 */
export const MAX_FETCH_BYTES = 64 * 1024 * 1024;

/** How the extent layer turns extents into objects and back (format/): ObjectExtents.open()'s options. */
export interface ExtentObjectsOptions {
  /** Default rawCodec: format 1 volumes, and tests of the layers above. */
  readonly codec?: ExtentCodec | undefined;
  /** The volume's id, bound into every object's identity. */
  readonly volumeId?: string | undefined;
  /** Where an object that fails its check twice is reported. */
  readonly log?: Logger | undefined;
}

export class ObjectExtents implements ExtentObjects {
  readonly extentSize: number;
  readonly extentCount: number;
  private readonly objects: ObjectStore;
  private readonly map: AllocationMap;
  /** Fetches running (see MAX_FETCH_BYTES), and those waiting for their turn. */
  private fetching = 0;
  private readonly maxFetches: number;
  private readonly fetchQueue: Array<() => void> = [];
  private readonly codec: ExtentCodec;
  private readonly volumeId: string;
  private readonly log: Logger | undefined;

  private constructor(objects: ObjectStore, extentSize: number, extentCount: number, map: AllocationMap, options: ExtentObjectsOptions) {
    this.objects = objects;
    this.codec = options.codec ?? rawCodec;
    this.volumeId = options.volumeId ?? '';
    this.log = options.log;
    this.extentSize = extentSize;
    this.extentCount = extentCount;
    this.map = map;
    this.maxFetches = Math.max(8, Math.floor(MAX_FETCH_BYTES / extentSize));
  }

  /** Opens the layer, listing the store once to learn which extents exist. */
  static async open(objects: ObjectStore, geometry: { readonly extentSize: number; readonly extentCount: number },
    options: ExtentObjectsOptions = {}): Promise<ObjectExtents> {
    const map = new AllocationMap(geometry.extentCount);
    for await (const key of objects.list(EXTENT_PREFIX)) {
      const index = extentIndexOf(key);
      if (index !== undefined && index < geometry.extentCount) map.set(index);
    }
    return new ObjectExtents(objects, geometry.extentSize, geometry.extentCount, map, options);
  }

  get fetchesFull(): boolean {
    return this.fetching >= this.maxFetches;
  }

  get allocatedCount(): number {
    return this.map.count;
  }

  isStored(index: number): boolean {
    return this.map.has(index);
  }

  storedIn(first: number, count: number): Generator<number> {
    return this.map.allocatedIn(first, count);
  }

  runs(first: number, count: number, maxRuns: number): ExtentRun[] {
    return this.map.runs(first, count, maxRuns);
  }

  async fetch(index: number): Promise<Buffer | undefined> {
    if (!this.map.has(index)) return undefined;
    while (this.fetching >= this.maxFetches) await new Promise<void>((resolve) => this.fetchQueue.push(resolve));
    this.fetching++;
    let data: Buffer | undefined;
    try {
      data = await this.getDecoded(index);
    } finally {
      this.fetching--;
      this.fetchQueue.shift()?.();
    }
    if (data === undefined) {
      // Deleted behind our back (another writer, or by hand): it reads as zeros now.
      this.map.clear(index);
      return undefined;
    }
    if (data.length !== this.extentSize) {
      throw new StorageError('EIO', `extent ${index} has ${data.length} bytes, expected ${this.extentSize}`);
    }
    return data;
  }

  /**
   * The extent's object, decoded. A body that fails the codec's check (damaged in the store or
   * on the way, or another extent's object) is fetched once more, in case it was the way; if
   * the second fails too, the read fails with EIO and one error line names the key.
   */
  private async getDecoded(index: number): Promise<Buffer | undefined> {
    const key = extentKey(index);
    const id = this.identity(index);
    for (let attempt = 1; ; attempt++) {
      const body = await this.objects.get(key, this.codec.maxBodyBytes(this.extentSize));
      if (body === undefined) return undefined;
      try {
        return await this.codec.decode(id, body);
      } catch (err) {
        if (!(err instanceof StorageError) || attempt >= 2) {
          const reason = (err as Error).message;
          this.log?.error({ code: LogCodes.objectCorrupt, key, extent: index, generation: id.generation, bytes: body.length, reason },
            'extent object failed its check twice: the read fails with EIO (the object is never served as data)');
          throw new StorageError('EIO', `extent object ${key} failed its check: ${reason}`);
        }
        this.log?.warn({ key, extent: index, reason: err.message }, 'extent object failed its check: fetching it again');
      }
    }
  }

  private identity(index: number): ExtentIdentity {
    // TODO(generations): every object is generation 1 until the lead's immutable generation
    // keys (extents/<hh>/<n>.<g>, docs/format.md) land; then the generation is the key's.
    return { volumeId: this.volumeId, index, generation: 1 };
  }

  async put(index: number, extent: Buffer): Promise<void> {
    await this.objects.put(extentKey(index), await this.codec.encode(this.identity(index), extent));
    this.map.set(index);
  }

  async deleteExtents(indexes: readonly number[]): Promise<void> {
    const stored = indexes.filter((i) => this.map.has(i));
    for (let i = 0; i < stored.length; i += DELETE_BATCH) {
      const batch = stored.slice(i, i + DELETE_BATCH);
      await this.objects.deleteMany(batch.map(extentKey));
      for (const index of batch) this.map.clear(index);
    }
  }

  flush(): Promise<void> {
    return this.objects.flush();
  }
}
