// The write-back cache's clean extents: one GET shared by concurrent reads, read-ahead and
// prefetch, the memory cache and the disk cache it spills into, and the stream window that
// keeps sequential reads (once the memory cache is full) and writes out of both.

import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { MemoryObjectStore } from '../../src/storage/objects/memory-object-store.ts';
import type { ObjectStore } from '../../src/storage/objects/object-store.ts';
import type { WriteBackOptions } from '../../src/storage/cache/write-back-cache.ts';
import { SlotFile } from '../../src/storage/cache/slot-file.ts';
import { Journal } from '../../src/storage/cache/journal.ts';
import { assertSameBytes } from '../helpers/bytes.ts';
import { E, open, readScattered } from '../helpers/cache.ts';
import { FaultyStore } from '../helpers/faulty-store.ts';
import { pattern, readAll } from '../helpers/model.ts';
import { tempDir } from '../helpers/gateway.ts';

/** Stores `data` at offset 0 through a cache of its own, uploaded, and closes it. */
async function seed(objects: ObjectStore, size: number, cacheDir: string, data: Buffer, overrides: Partial<WriteBackOptions> = {}, extentSize = E): Promise<void> {
  const { dev, cache } = await open(objects, size, cacheDir, overrides, extentSize);
  await dev.write(0, data, false);
  await dev.flush();
  await cache.close();
}

describe('WriteBackCache', () => {
  const dir = tempDir('wbc-reads');
  after(() => dir.remove());

  it('shares one GET among concurrent reads of an extent, and reads ahead on sequential reads', async () => {
    const size = 64 * E;
    const objects = new FaultyStore(new MemoryObjectStore());
    await seed(objects, size, `${dir.path}/shared-seed`, pattern(32 * E, 2));
    const { dev, cache } = await open(objects, size, `${dir.path}/shared`, { memoryCacheBytes: 32 * E });
    const before = objects.calls.get;
    const reads = await Promise.all([0, 100, 2000, 4000].map((at) => dev.read(5 * E + at, 10)));
    assert.equal(objects.calls.get - before, 1, 'four concurrent reads of one extent, one GET');
    assert.deepEqual(reads.map((r) => r[0]!.data), [0, 100, 2000, 4000].map((at) => pattern(32 * E, 2).subarray(5 * E + at, 5 * E + at + 10)));
    await dev.read(10 * E, E);
    await dev.read(11 * E, E); // sequential: the next extents are fetched ahead
    await new Promise((r) => setTimeout(r, 50));
    objects.failAll('get'); // from here on, only what read-ahead fetched can be read
    for (let i = 12; i < 18; i++) {
      assert.deepEqual((await dev.read(i * E, E))[0]!.data, pattern(32 * E, 2).subarray(i * E, (i + 1) * E), `extent ${i} came from read-ahead`);
    }
    await assert.rejects(dev.read(30 * E, E), 'an extent nobody fetched needs the store');
    objects.failAll('get', false);
    // CACHE (prefetch) fetches a range ahead of reads, in parallel.
    await dev.prefetch(20 * E, 6 * E);
    objects.failAll('get');
    for (let i = 20; i < 26; i++) assert.ok((await dev.read(i * E, 16))[0]!.data, `extent ${i} was prefetched`);
    objects.failAll('get', false);
    await cache.close();
  });

  it('keeps the fetched extents that memory evicts in the disk cache', async () => {
    const objects = new FaultyStore(new MemoryObjectStore());
    const size = 12 * E;
    const model = pattern(size, 6);
    await seed(objects, size, `${dir.path}/disk-read-a`, model);

    // A memory cache of 4 extents, a disk cache of 16: what memory evicts goes to disk, and
    // the second pass reads memory and disk only. (Not read in order: see the next test.)
    const { dev, cache } = await open(objects, size, `${dir.path}/disk-read-b`);
    assertSameBytes(await readScattered(dev, size), model, 'cold');
    const deadline = Date.now() + 2000;
    while (cache.status().cachedExtents < 8 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    assert.equal(cache.status().cachedExtents, 8, 'the 8 extents evicted from memory have slots');
    const gets = objects.calls.get;
    assertSameBytes(await readScattered(dev, size), model, 'warm, from the disk cache');
    assert.equal(objects.calls.get, gets, 'no GET for extents in the disk cache');
    // A write after caching replaces the cached copy.
    await dev.write(3 * E + 10, pattern(100, 8), false);
    pattern(100, 8).copy(model, 3 * E + 10);
    assertSameBytes(await readAll(dev, 0, size), model, 'after a write');
    await cache.close();
  });

  it('waits for disk-cache fills in flight before it closes the slot file', async (t) => {
    const objects = new MemoryObjectStore();
    await seed(objects, 4 * E, `${dir.path}/fill-a`, pattern(2 * E, 3));
    const { dev, cache } = await open(objects, 4 * E, `${dir.path}/fill-b`, { memoryCacheBytes: E });
    const events: string[] = [];
    // eslint-disable-next-line @typescript-eslint/unbound-method -- called with .call()
    const [realWrite, realClose] = [SlotFile.prototype.write, SlotFile.prototype.close];
    t.mock.method(SlotFile.prototype, 'write', async function (this: SlotFile, slot: number, offset: number, data: Buffer) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      await realWrite.call(this, slot, offset, data);
      events.push('fill written');
    });
    t.mock.method(SlotFile.prototype, 'close', function (this: SlotFile) {
      events.push('slot file closed');
      return realClose.call(this);
    });
    // Extent 1, then extent 0: not in order, so kept (see the next test).
    const data = pattern(2 * E, 3);
    assertSameBytes(await readAll(dev, E, E), data.subarray(E), 'extent 1');
    assertSameBytes(await readAll(dev, 0, E), data.subarray(0, E), 'extent 0, which pushes extent 1 from memory to disk');
    await cache.close();
    assert.deepEqual(events, ['fill written', 'slot file closed']);
  });

  it('keeps sequential reads only in free memory and sequential whole-extent writes only in the stream window, what is read or written out of order in memory', async (t) => {
    const objects = new FaultyStore(new MemoryObjectStore());
    const size = 40 * E;
    const model = pattern(size, 9);
    await seed(objects, size, `${dir.path}/stream-a`, model);

    // Memory for 4 extents, so a stream window of 2 x READ_AHEAD = 16 extents. Uploads wait for
    // the FLUSH: with the helper's 5 ms delay, a loaded machine uploaded the written extents
    // before they were read back, and the read then had to GET them ("no GET for dirty extents").
    const { dev, cache } = await open(objects, size, `${dir.path}/stream-b`, { uploadDelayMs: 3_600_000 });
    try {
      let gets = objects.calls.get;
      assertSameBytes(await readAll(dev, 0, size), model, 'a sequential read');
      assert.equal(objects.calls.get - gets, 40, 'one GET per extent');
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(cache.status().cachedExtents, 0, 'nothing written to the disk cache');
      gets = objects.calls.get;
      assertSameBytes(await readAll(dev, 0, size), model, 'read again');
      assert.ok(objects.calls.get - gets >= 40 - 16 - 4, `fetched again but the window and the 4 extents the memory had room for: ${objects.calls.get - gets} GETs`);
      gets = objects.calls.get;
      assertSameBytes(await readScattered(dev, size), model, 'read out of order');
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(cache.status().cachedExtents, 16, 'extents read out of order are kept: they fill the disk cache');

      // Whole extents written in order: every buffer is kept, the first in memory, the rest of
      // the run in the stream window, and none is read back from the journal for its upload.
      const journalReads = t.mock.method(Journal.prototype, 'readPayload').mock;
      const written = pattern(8 * E, 10);
      const kept: boolean[] = [];
      for (let i = 0; i < 8; i++) kept.push(await dev.write(i * E, Buffer.from(written.subarray(i * E, (i + 1) * E)), false));
      assert.deepEqual(kept, [true, true, true, true, true, true, true, true]);
      gets = objects.calls.get;
      assertSameBytes(await readScattered(dev, 8 * E), written, 'read back before the upload');
      assert.equal(objects.calls.get, gets, 'no GET for dirty extents');
      await dev.flush();
      assert.equal(journalReads.callCount(), 0, 'the uploads read nothing back from the journal');
      gets = objects.calls.get;
      const memoryBefore = cache.status().cachedExtents;
      assertSameBytes(await readScattered(dev, 8 * E), written, 'read back after the upload');
      assert.equal(objects.calls.get - gets, 0, 'from memory (the first) and the stream window (the rest of the run)');
      assert.equal(cache.status().cachedExtents, memoryBefore, 'none of the run went to the disk cache');
    } finally {
      await cache.close();
    }
  });

  it('keeps a sequential read in the memory cache while it has room, and never evicts the hot set for it', async () => {
    const objects = new FaultyStore(new MemoryObjectStore());
    const size = 40 * E;
    const model = pattern(size, 11);
    await seed(objects, size, `${dir.path}/room-seed`, model);

    // Room for a whole device larger than the stream window (64 MiB): a second sequential
    // pass is served from memory. 256 KiB extents keep it quick.
    const large = 80 * 2 ** 20;
    const LE = 256 * 1024;
    const largeModel = pattern(large, 12);
    const largeObjects = new FaultyStore(new MemoryObjectStore());
    await seed(largeObjects, large, `${dir.path}/room-seed-large`, largeModel, { cacheBytes: large + 2 * LE, maxDirtyBytes: large, memoryCacheBytes: 4 * LE }, LE);
    const roomy = await open(largeObjects, large, `${dir.path}/room-all`, { memoryCacheBytes: large, cacheBytes: 16 * LE, maxDirtyBytes: 8 * LE }, LE);
    try {
      assertSameBytes(await readAll(roomy.dev, 0, large), largeModel, 'first pass');
      const gets = largeObjects.calls.get;
      assertSameBytes(await readAll(roomy.dev, 0, large), largeModel, 'second pass');
      assert.equal(largeObjects.calls.get - gets, 0, 'the second pass makes no GET');
    } finally {
      await roomy.cache.close();
    }

    // Room for 4 extents, 2 of them hot: the stream takes the 2 free ones and no more, so the
    // hot ones stay in memory and nothing is evicted to the disk cache.
    const { dev, cache } = await open(objects, size, `${dir.path}/room-hot`);
    try {
      for (const hot of [30, 35]) await readAll(dev, hot * E, E);
      assertSameBytes(await readAll(dev, 0, 20 * E), model.subarray(0, 20 * E), 'a sequential read of 20 extents');
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(cache.status().cachedExtents, 0, 'nothing was evicted to the disk cache');
      const gets = objects.calls.get;
      for (const hot of [30, 35]) assertSameBytes(await readAll(dev, hot * E, E), model.subarray(hot * E, (hot + 1) * E), `extent ${hot}`);
      assert.equal(objects.calls.get - gets, 0, 'the hot extents are still in memory');
    } finally {
      await cache.close();
    }
  });

  it('does not write what a sequential read left in free memory to the disk cache when memory evicts it', async () => {
    const objects = new MemoryObjectStore();
    const size = 40 * E;
    const model = pattern(size, 13);
    await seed(objects, size, `${dir.path}/fill-seed`, model);
    const { dev, cache } = await open(objects, size, `${dir.path}/fill-evicted`);
    try {
      // Extent 0 is read out of order (kept); 1-3 are a stream, which fills the free room.
      assertSameBytes(await readAll(dev, 0, 4 * E), model.subarray(0, 4 * E), 'a sequential read');
      // Four reads out of order, far from the read-ahead, push all four out of memory.
      for (const i of [20, 22, 24, 26]) await readAll(dev, i * E, E);
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(cache.status().cachedExtents, 1, 'only extent 0 goes to the disk cache');
    } finally {
      await cache.close();
    }
  });

  it('does not write uploaded extents to the disk cache when memory evicts them', async () => {
    const objects = new MemoryObjectStore();
    const { dev, cache } = await open(objects, 12 * E, `${dir.path}/no-second-write`, { uploadDelayMs: 3_600_000 });
    await dev.write(0, pattern(8 * E, 2), false); // whole extents: journal only
    await dev.flush(); // uploaded; the memory cache (4 extents) keeps the last 4 of them
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(cache.status().cachedExtents, 0, 'no slot written for what the upload put in memory');
    assertSameBytes(await readAll(dev, 0, 8 * E), pattern(8 * E, 2), 'read back from memory and the store');
    await cache.close();
  });
});
