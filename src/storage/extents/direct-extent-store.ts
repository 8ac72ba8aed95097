// An ExtentStore straight over the extent objects, for stacks without the write-back cache
// (the volatile memory store, read-only serving, `s3nbd info`): every change is put at once.
//
// A partial write is a read-modify-write of the whole extent, done under the extent's lock so
// two partial writes to one extent cannot lose each other. Recently used extents stay in a
// memory cache, so a run of small writes to one extent reads it once and then patches the
// cached copy in place before putting it again; the cache only ever holds what the object
// store holds (or is being put), and an entry whose put failed is dropped. An all-zero extent
// is deleted instead of stored.

import type { ExtentRun, ExtentStore } from '../extent-store.ts';
import { ExtentLocks } from './extent-locks.ts';
import { type ExtentMemory, extentMemory } from './extent-memory.ts';
import type { ExtentObjects } from './extent-objects.ts';
import { isAllZero } from './zeros.ts';

/** Extents fetched at once by prefetch(). */
const PREFETCH_PARALLELISM = 8;
/** Extents locked and deleted at once by discard(): one DeleteObjects request's worth. */
const DISCARD_BATCH = 1000;

export class DirectExtentStore implements ExtentStore {
  readonly extentSize: number;
  /** The layer below's: it grows with the volume (ObjectExtents.grow). */
  get extentCount(): number {
    return this.lower.extentCount;
  }

  private readonly lower: ExtentObjects;
  private readonly cache: ExtentMemory;
  private readonly locks = new ExtentLocks();

  /** `cacheBytes`: extents kept in memory; at least one extent is always kept. */
  constructor(lower: ExtentObjects, cacheBytes: number) {
    this.lower = lower;
    this.extentSize = lower.extentSize;
    this.cache = extentMemory(cacheBytes, lower.extentSize, { elastic: true });
  }

  async read(index: number, offset: number, length: number): Promise<Buffer | undefined> {
    if (!this.lower.isStored(index)) return undefined;
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
    if (!this.lower.isStored(index)) return Promise.resolve();
    return this.locks.with(index, async () => {
      const extent = await this.load(index);
      if (!extent) return;
      extent.fill(0, offset, offset + length);
      await this.store(index, extent, true);
    });
  }

  /** Deletes the stored extents in the range, a batch of DISCARD_BATCH under their locks at a time. */
  async discard(first: number, count: number): Promise<void> {
    const stored = [...this.lower.storedIn(first, count)];
    for (let i = 0; i < stored.length; i += DISCARD_BATCH) {
      const batch = stored.slice(i, i + DISCARD_BATCH);
      await this.locks.withAll(batch, async () => {
        await this.lower.deleteExtents(batch);
        for (const index of batch) this.cache.delete(index);
      });
    }
  }

  allocation(first: number, count: number, maxRuns: number): Promise<ExtentRun[]> {
    return Promise.resolve(this.lower.runs(first, count, maxRuns));
  }

  async prefetch(first: number, count: number): Promise<void> {
    const wanted = [...this.lower.storedIn(first, count)].filter((i) => !this.cache.has(i));
    // Never fetch more than the cache can hold: the first ones would be evicted by the last.
    wanted.length = Math.min(wanted.length, Math.floor(this.cache.ceiling / this.extentSize));
    for (let i = 0; i < wanted.length; i += PREFETCH_PARALLELISM) {
      await Promise.all(wanted.slice(i, i + PREFETCH_PARALLELISM).map((index) => this.locks.with(index, () => this.load(index))));
    }
  }

  /** Every put is already done when it resolves; what is left is the store's own flush. */
  flush(): Promise<void> {
    return this.lower.flush();
  }

  async close(): Promise<void> {
    await this.flush();
    this.cache.clear();
  }

  /** The whole extent, from the cache or the store; undefined for a hole. Call under the lock. */
  private async load(index: number): Promise<Buffer | undefined> {
    const cached = this.cache.get(index);
    if (cached) return cached;
    const data = await this.lower.fetch(index);
    if (data) this.cache.set(index, data);
    return data;
  }

  /**
   * Puts the extent, or deletes it when it is all zeros. `maybeZero` is false when the bytes
   * just written were not all zeros, which saves scanning the extent. Call under the lock.
   */
  private async store(index: number, extent: Buffer, maybeZero: boolean): Promise<void> {
    try {
      if (maybeZero && isAllZero(extent)) {
        this.cache.delete(index);
        await this.lower.deleteExtents([index]);
        return;
      }
      this.cache.set(index, extent);
      await this.lower.put(index, extent);
    } catch (err) {
      // The cached copy may now be ahead of the store: drop it so reads see the truth.
      this.cache.delete(index);
      throw err;
    }
  }
}
