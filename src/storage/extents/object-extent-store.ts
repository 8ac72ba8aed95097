// The bottom extent layer: one object per extent (see extent-keys.ts), absent objects read as
// zeros, and all-zero extents are deleted instead of stored.
//
// A partial write is a read-modify-write of the whole extent, done under the extent's lock so
// two partial writes to one extent cannot lose each other. Recently used extents stay in a
// memory cache, so a run of small writes to one extent reads it once and then patches the
// cached copy in place before putting it again; the cache only ever holds what the object
// store holds (or is being put), and an entry whose put failed is dropped.
//
// Which extents exist is loaded once by listing the store and kept in an AllocationMap, so
// holes, BLOCK_STATUS and discards never touch the store for extents that do not exist.

import type { LRUCache } from 'lru-cache';
import { AllocationMap } from './allocation-map.ts';
import { ExtentLocks } from './extent-locks.ts';
import { extentMemory } from './extent-memory.ts';
import { EXTENT_PREFIX, extentIndexOf, extentKey } from './extent-keys.ts';
import type { ExtentRun, ExtentStore } from '../extent-store.ts';
import { StorageError } from '../storage-error.ts';
import type { ObjectStore } from '../objects/object-store.ts';
import { isAllZero } from './zeros.ts';

export interface ObjectExtentStoreOptions {
  readonly extentSize: number;
  readonly extentCount: number;
  /** Bytes of extents kept in memory; at least one extent is always kept. */
  readonly cacheBytes: number;
}

/** DeleteObjects takes at most 1000 keys per request in S3. */
const DELETE_BATCH = 1000;
/** Extents fetched at once by prefetch(). */
const PREFETCH_PARALLELISM = 8;
/**
 * Whole extents being fetched from the store at once, in bytes (at least 8 extents). A read
 * of one byte fetches a whole extent, so the NBD in-flight budget, which counts the bytes
 * asked for, did not bound them (256 one-byte reads per connection, 256 extents in memory);
 * nor did anything bound the write-back cache's read-ahead. More fetches wait their turn.
 */
export const MAX_FETCH_BYTES = 64 * 1024 * 1024;

export class ObjectExtentStore implements ExtentStore {
  readonly extentSize: number;
  readonly extentCount: number;
  private readonly objects: ObjectStore;
  private readonly map: AllocationMap;
  private readonly cache: LRUCache<number, Buffer>;
  private readonly locks = new ExtentLocks();
  /** Fetches running (see MAX_FETCH_BYTES), and those waiting for their turn. */
  private fetching = 0;
  private readonly maxFetches: number;
  private readonly fetchQueue: Array<() => void> = [];

  private constructor(objects: ObjectStore, options: ObjectExtentStoreOptions, map: AllocationMap) {
    this.objects = objects;
    this.extentSize = options.extentSize;
    this.extentCount = options.extentCount;
    this.map = map;
    this.cache = extentMemory(options.cacheBytes, options.extentSize);
    this.maxFetches = Math.max(8, Math.floor(MAX_FETCH_BYTES / options.extentSize));
  }

  /** True while a fetch would have to wait for its turn (read-ahead then does not ask). */
  get fetchesFull(): boolean {
    return this.fetching >= this.maxFetches;
  }

  /** Opens the layer, listing the store once to learn which extents exist. */
  static async open(objects: ObjectStore, options: ObjectExtentStoreOptions): Promise<ObjectExtentStore> {
    const map = new AllocationMap(options.extentCount);
    for await (const key of objects.list(EXTENT_PREFIX)) {
      const index = extentIndexOf(key);
      if (index !== undefined && index < options.extentCount) map.set(index);
    }
    return new ObjectExtentStore(objects, options, map);
  }

  /** Number of extents stored (for `s3nbd info` and tests). */
  get allocatedCount(): number {
    return this.map.count;
  }

  // The calls below serve a cache layer above (the write-back cache), which keeps whole
  // extents itself and needs the objects, not read-modify-write.

  /** True when the extent's object exists. */
  isStored(index: number): boolean {
    return this.map.has(index);
  }

  /** Stored extents in [first, first + count), ascending. */
  storedIn(first: number, count: number): Generator<number> {
    return this.map.allocatedIn(first, count);
  }

  /** The whole stored extent, or undefined for a hole. The caller owns the buffer. */
  async fetch(index: number): Promise<Buffer | undefined> {
    if (!this.map.has(index)) return undefined;
    while (this.fetching >= this.maxFetches) await new Promise<void>((resolve) => this.fetchQueue.push(resolve));
    this.fetching++;
    let data: Buffer | undefined;
    try {
      data = await this.guard('read', index, () => this.objects.get(extentKey(index), this.extentSize));
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

  /** Stores a whole extent (deleting it instead when it is all zeros); takes `extent` over. */
  replace(index: number, extent: Buffer): Promise<void> {
    return this.locks.with(index, async () => {
      // The caller goes on using `extent` as its clean copy: it must not become our cached
      // copy, which write() would patch in place.
      this.cache.delete(index);
      await this.store(index, extent, true, false);
    });
  }

  /** Deletes the extents' objects in batches; extents not stored cost nothing. */
  async deleteExtents(indexes: readonly number[]): Promise<void> {
    const stored = indexes.filter((i) => this.map.has(i));
    for (let i = 0; i < stored.length; i += DELETE_BATCH) {
      const batch = stored.slice(i, i + DELETE_BATCH);
      await this.locks.withAll(batch, async () => {
        await this.guard('delete', batch[0]!, () => this.objects.deleteMany(batch.map(extentKey)));
        for (const index of batch) {
          this.map.clear(index);
          this.cache.delete(index);
        }
      });
    }
  }

  async read(index: number, offset: number, length: number): Promise<Buffer | undefined> {
    if (!this.map.has(index)) return undefined;
    const extent = this.cache.get(index) ?? await this.locks.with(index, () => this.load(index));
    return extent?.subarray(offset, offset + length);
  }

  write(index: number, offset: number, data: Buffer): Promise<boolean> {
    return this.locks.with(index, async () => {
      // Whole or partial, a write patches the extent's existing buffer in place: copying into
      // memory that is already mapped is several times cheaper than allocating a new extent,
      // and with the memory store the loaded buffer is the stored one.
      const extent = await this.load(index) ?? Buffer.alloc(this.extentSize);
      data.copy(extent, offset);
      await this.store(index, extent, isAllZero(data));
      return false;
    });
  }

  zero(index: number, offset: number, length: number): Promise<void> {
    if (!this.map.has(index)) return Promise.resolve();
    return this.locks.with(index, async () => {
      const extent = await this.load(index);
      if (!extent) return;
      extent.fill(0, offset, offset + length);
      await this.store(index, extent, true);
    });
  }

  discard(first: number, count: number): Promise<void> {
    return this.deleteExtents([...this.map.allocatedIn(first, count)]);
  }

  allocation(first: number, count: number, maxRuns: number): Promise<ExtentRun[]> {
    return Promise.resolve(this.map.runs(first, count, maxRuns));
  }

  async prefetch(first: number, count: number): Promise<void> {
    const wanted = [...this.map.allocatedIn(first, count)].filter((i) => !this.cache.has(i));
    // Never fetch more than the cache can hold: the first ones would be evicted by the last.
    wanted.length = Math.min(wanted.length, Math.floor(this.cache.maxSize / this.extentSize));
    for (let i = 0; i < wanted.length; i += PREFETCH_PARALLELISM) {
      await Promise.all(wanted.slice(i, i + PREFETCH_PARALLELISM).map((index) => this.locks.with(index, () => this.load(index))));
    }
  }

  /** Every put is already done when it resolves; what is left is the store's own flush. */
  flush(): Promise<void> {
    return this.guard('flush', -1, () => this.objects.flush());
  }

  async close(): Promise<void> {
    await this.flush();
    this.cache.clear();
  }

  /** The whole extent, from the cache or the store; undefined for a hole. Call under the lock. */
  private async load(index: number): Promise<Buffer | undefined> {
    const cached = this.cache.get(index);
    if (cached) return cached;
    const data = await this.fetch(index);
    if (data) this.cache.set(index, data);
    return data;
  }

  /**
   * Puts the extent, or deletes it when it is all zeros. `maybeZero` is false when the bytes
   * just written were not all zeros, which saves scanning the extent. Call under the lock.
   */
  private async store(index: number, extent: Buffer, maybeZero: boolean, remember = true): Promise<void> {
    try {
      if (maybeZero && isAllZero(extent)) {
        this.cache.delete(index);
        if (this.map.has(index)) await this.guard('delete', index, () => this.objects.deleteMany([extentKey(index)]));
        this.map.clear(index);
        return;
      }
      if (remember) this.cache.set(index, extent);
      await this.guard('write', index, () => this.objects.put(extentKey(index), extent));
      this.map.set(index);
    } catch (err) {
      // The cached copy may now be ahead of the store: drop it so reads see the truth.
      this.cache.delete(index);
      throw err;
    }
  }

  /** Runs an object-store call, reporting its failure as EIO (or EPERM/ENOSPC if it said so). */
  private async guard<T>(what: string, index: number, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof StorageError) throw err;
      const code = (err as NodeJS.ErrnoException).code;
      const errno = code === 'EACCES' || code === 'EPERM' ? 'EPERM' : code === 'ENOSPC' || code === 'EDQUOT' ? 'ENOSPC' : 'EIO';
      const where = index >= 0 ? ` extent ${index}` : '';
      throw new StorageError(errno, `${what}${where} failed in ${this.objects.description}: ${(err as Error).message}`, { cause: err });
    }
  }
}
