// The byte-to-extent adapter and the extent layers without the cache, checked against a plain Buffer
// model of the device under random reads, writes, zeroes and trims of any alignment.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ExtentDevice } from '../../src/storage/extent-device.ts';
import { MemoryObjectStore } from '../../src/storage/objects/memory-object-store.ts';
import { ObjectExtents } from '../../src/storage/extents/extent-objects.ts';
import { DirectExtentStore } from '../../src/storage/extents/direct-extent-store.ts';
import { EXTENT_PREFIX } from '../../src/storage/extents/extent-keys.ts';
import type { ObjectStore } from '../../src/storage/objects/object-store.ts';
import { assertSameBytes } from '../helpers/bytes.ts';
import { FaultyStore } from '../helpers/faulty-store.ts';
import { readAll, runRandomWorkload } from '../helpers/model.ts';

const EXTENT = 4096;

async function device(objects: ObjectStore, size: number, cacheBytes = 8 * EXTENT): Promise<{ dev: ExtentDevice; extents: DirectExtentStore }> {
  const extents = new DirectExtentStore(await ObjectExtents.open(objects, { extentSize: EXTENT, extentCount: Math.ceil(size / EXTENT) }), cacheBytes);
  return { dev: new ExtentDevice(extents, size, false), extents };
}

async function countKeys(objects: ObjectStore): Promise<number> {
  let n = 0;
  for await (const _ of objects.list(EXTENT_PREFIX)) n++;
  return n;
}

describe('ExtentDevice over DirectExtentStore and ObjectExtents', () => {
  it('matches a byte model under random concurrent operations of any alignment', async () => {
    const size = 37 * EXTENT + 1536; // a partial last extent too
    for (const seed of [1, 2, 3, 4]) {
      const objects = new MemoryObjectStore();
      const { dev } = await device(objects, size, 2 * EXTENT); // a small cache forces reloads
      const model = await runRandomWorkload(dev, { seed, rounds: 60, maxLength: 3 * EXTENT, flushes: false });
      // Reopening from the store alone (empty cache) gives the same bytes.
      const reopened = await device(objects, size);
      assertSameBytes(await readAll(reopened.dev, 0, size), model, `seed ${seed} after reopen`);
    }
  });

  it('never stores all-zero extents and reports holes', async () => {
    const objects = new MemoryObjectStore();
    const { dev } = await device(objects, 16 * EXTENT);
    await dev.write(0, Buffer.alloc(3 * EXTENT), false); // zeros: nothing stored
    assert.equal(await countKeys(objects), 0);
    await dev.write(EXTENT + 10, Buffer.from('hello'), false);
    assert.equal(await countKeys(objects), 1);
    const pieces = await dev.read(0, 3 * EXTENT);
    assert.deepEqual(pieces.map((p) => p.data === undefined), [true, false, true]);
    await dev.write(EXTENT + 10, Buffer.alloc(5), false); // overwriting with zeros deletes it
    assert.equal(await countKeys(objects), 0);
    assert.deepEqual(await dev.allocation(0, 16 * EXTENT), [{ length: 16 * EXTENT, hole: true }]);
  });

  it('reports allocation runs clipped to the request', async () => {
    const objects = new MemoryObjectStore();
    const { dev } = await device(objects, 16 * EXTENT);
    await dev.write(2 * EXTENT, Buffer.alloc(2 * EXTENT, 7), false);
    assert.deepEqual(await dev.allocation(EXTENT + 100, 2 * EXTENT), [
      { length: EXTENT - 100, hole: true },
      { length: EXTENT + 100, hole: false },
    ]);
  });

  it('discards a huge range with one batched delete per 1000 stored extents, not per possible extent', async () => {
    const objects = new FaultyStore(new MemoryObjectStore());
    const size = 2 ** 40; // 1 TiB of 4 KiB extents: 268 million possible extents
    const extents = new DirectExtentStore(await ObjectExtents.open(objects, { extentSize: EXTENT, extentCount: size / EXTENT }), EXTENT);
    const dev = new ExtentDevice(extents, size, false);
    for (const at of [0, 12345 * EXTENT, size - EXTENT]) await dev.write(at, Buffer.alloc(EXTENT, 1), false);
    for (let offset = 0; offset < size; offset += 2 ** 32 - EXTENT) {
      await dev.trim(offset, Math.min(2 ** 32 - EXTENT, size - offset), false);
    }
    assert.equal(objects.deleted.length, 3);
    // Extents 0 and 12345 fall in the first trim request, the last one in the last request.
    assert.equal(objects.calls.deleteMany, 2);
    assert.equal(await countKeys(objects), 0);
  });

  it('passes an object-store failure on as it is (EIO here) and keeps serving the stored data', async () => {
    const objects = new FaultyStore(new MemoryObjectStore());
    const { dev } = await device(objects, 4 * EXTENT);
    await dev.write(0, Buffer.alloc(EXTENT, 5), false);
    objects.failAll('put');
    await assert.rejects(dev.write(100, Buffer.from('new'), false),
      (err: Error & { errno?: string }) => err.errno === 'EIO' && /injected put failure/.test(err.message));
    objects.failAll('put', false);
    assert.deepEqual(await readAll(dev, 0, EXTENT), Buffer.alloc(EXTENT, 5));
    objects.failAll('get');
    const cold = await device(objects, 4 * EXTENT);
    await assert.rejects(cold.dev.read(0, 10), (err: Error & { errno?: string }) => err.errno === 'EIO');
  });
});
