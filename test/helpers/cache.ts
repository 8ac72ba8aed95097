// The write-back cache over a given object store, as the unit tests of the cache open it:
// extents of E bytes, a disk cache of 16 extents, memory for 4, a dirty limit of 8, and a
// silent logger; with what the store alone holds and an out-of-order read to check it by.

import { pino } from 'pino';
import { ExtentDevice } from '../../src/storage/extent-device.ts';
import { ObjectExtents } from '../../src/storage/extents/extent-objects.ts';
import { DirectExtentStore } from '../../src/storage/extents/direct-extent-store.ts';
import type { ObjectStore } from '../../src/storage/objects/object-store.ts';
import { WriteBackCache, type WriteBackOptions } from '../../src/storage/cache/write-back-cache.ts';
import { readAll } from './model.ts';

export const E = 4096;
export const log = pino({ level: 'silent' });

/** Reads whole extents out of order (even ones, then odd ones), so none is a sequential read. */
export async function readScattered(dev: ExtentDevice, size: number): Promise<Buffer> {
  const out = Buffer.alloc(size);
  for (const parity of [0, 1]) {
    for (let i = parity; i * E < size; i += 2) (await readAll(dev, i * E, E)).copy(out, i * E);
  }
  return out;
}

export async function open(objects: ObjectStore, size: number, cacheDir: string, overrides: Partial<WriteBackOptions> = {}, extentSize = E) {
  const lower = await ObjectExtents.open(objects, { extentSize, extentCount: Math.ceil(size / extentSize) });
  const cache = await WriteBackCache.open(lower, {
    cacheDir, cacheBytes: 16 * E, memoryCacheBytes: 4 * E, maxDirtyBytes: 8 * E, uploadConcurrency: 4,
    flushMode: 's3', uploadDelayMs: 5, log, ...overrides,
  });
  return { lower, cache, dev: new ExtentDevice(cache, size, false) };
}

/** What the object store alone holds, read through a fresh stack with no cache. */
export async function storeContents(objects: ObjectStore, size: number): Promise<Buffer> {
  const lower = new DirectExtentStore(await ObjectExtents.open(objects, { extentSize: E, extentCount: Math.ceil(size / E) }), E);
  return readAll(new ExtentDevice(lower, size, false), 0, size);
}
