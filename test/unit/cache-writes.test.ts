// The write-back cache's changes: a byte model under random operations with a tiny cache
// (eviction, backpressure), partial writes without a GET, journal pieces and whole-extent
// buffers, a failed slot write, and cheap whole-device discards.

import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { Journal } from '../../src/storage/cache/journal.ts';
import { MemoryObjectStore } from '../../src/storage/objects/memory-object-store.ts';
import { SlotFile } from '../../src/storage/cache/slot-file.ts';
import { assertSameBytes } from '../helpers/bytes.ts';
import { E, open, readScattered, storeContents } from '../helpers/cache.ts';
import { FaultyStore } from '../helpers/faulty-store.ts';
import { pattern, readAll, runRandomWorkload } from '../helpers/model.ts';
import { tempDir } from '../helpers/gateway.ts';

describe('WriteBackCache', () => {
  const dir = tempDir('wbc-writes');
  after(() => dir.remove());

  it('matches a byte model under random operations with eviction and backpressure, and uploads it all on flush', async () => {
    const size = 40 * E + 1000;
    for (const seed of [11, 12, 13]) {
      const objects = new MemoryObjectStore();
      const { dev, cache } = await open(objects, size, `${dir.path}/model-${seed}`);
      const model = await runRandomWorkload(dev, { seed, rounds: 50, maxLength: 3 * E, flushes: true, afterStep: () => cache.checkInvariants() });
      await dev.flush();
      assert.equal(cache.status().dirtyExtents, 0);
      assertSameBytes(await storeContents(objects, size), model, `seed ${seed}: the store holds everything after FLUSH`);
      await cache.close();
    }
  });

  it('acknowledges a partial write into a stored, uncached extent without reading the store', async () => {
    const size = 16 * E;
    const objects = new FaultyStore(new MemoryObjectStore());
    const seed = await open(objects, size, `${dir.path}/noget-seed`);
    await seed.dev.write(0, pattern(4 * E, 7), false);
    await seed.dev.flush();
    await seed.cache.close();
    const { dev, cache } = await open(objects, size, `${dir.path}/noget`);
    const gets = objects.calls.get;
    await dev.write(E + 512, Buffer.alloc(1024, 0xee), false);
    assert.equal(objects.calls.get, gets, 'no GET to acknowledge the write');
    await dev.flush();
    assert.equal(objects.calls.get, gets + 1, 'one GET to merge the rest of the extent at upload');
    const want = pattern(4 * E, 7);
    want.fill(0xee, E + 512, E + 1536);
    assertSameBytes((await readAll(dev, 0, size)).subarray(0, 4 * E), want, 'merged extent');
    await cache.close();
  });

  it('keeps writes of whole extents in the journal only, and reads, rewrites in part and uploads them right', async (t) => {
    const objects = new MemoryObjectStore();
    // Memory holds one extent: the others are read back from the journal.
    const { dev, cache } = await open(objects, 8 * E, `${dir.path}/journal-only`, { uploadDelayMs: 3_600_000, memoryCacheBytes: E });
    const slotWrites = t.mock.method(SlotFile.prototype, 'write').mock;
    const model = Buffer.alloc(8 * E);
    for (const [index, seed] of [[0, 1], [1, 2], [2, 3]] as const) {
      await dev.write(index * E, pattern(E, seed), false);
      pattern(E, seed).copy(model, index * E);
    }
    assert.equal(slotWrites.callCount(), 0, 'whole extents are not written to slots');
    assertSameBytes(await readAll(dev, 0, 8 * E), model, 'read back from the journal');

    await dev.write(E + 100, pattern(200, 9), false); // a small part of extent 1: copied into its slot first
    pattern(200, 9).copy(model, E + 100);
    assert.equal(slotWrites.callCount(), 2, 'the copy of extent 1, then the partial write');
    await dev.write(2 * E, pattern(E, 4), false); // extent 2 again, whole
    pattern(E, 4).copy(model, 2 * E);
    assertSameBytes(await readAll(dev, 0, 8 * E), model, 'after the partial and the repeated write');

    await dev.flush();
    assertSameBytes(await storeContents(objects, 8 * E), model, 'uploaded from the journal and the slot');
    assert.equal(cache.status().cachedExtents, 1, 'extents 0 and 2 left the disk cache once uploaded; extent 1 stays');
    assertSameBytes(await readAll(dev, 0, 8 * E), model, 'read back after the upload');
    await cache.close();
  });

  it('keeps large partial writes in the journal only, lays them over the slot newest last, and copies them in before a small write', async (t) => {
    const objects = new MemoryObjectStore();
    const size = 8 * E;
    const { dev, cache } = await open(objects, size, `${dir.path}/pieces`, { uploadDelayMs: 3_600_000, memoryCacheBytes: E });
    const model = Buffer.alloc(size);
    const write = async (offset: number, length: number, seed: number) => {
      const data = pattern(length, seed);
      data.copy(model, offset);
      await dev.write(offset, data, false);
    };
    await write(3 * E, E, 1);
    await dev.flush(); // extent 3 is in the store: its gaps come from there
    const slotWrites = t.mock.method(SlotFile.prototype, 'write').mock;
    // Large (>= E/16) and overlapping, with gaps: three pieces of extent 0 (never stored) and two of extent 3.
    await write(0, 1024, 2);
    await write(512, 1536, 3);
    await write(3000, E - 3000, 4);
    await write(3 * E + 100, 1000, 5);
    await write(3 * E + 600, 2000, 6);
    for (let i = 0; i < 17; i++) await write(5 * E + 200 * i, 256, 10 + i); // 17 pieces: the 17th copies 16 into the slot
    assert.equal(slotWrites.callCount(), 17, 'only the sixteen pieces of extent 5 and its seventeenth write reached a slot');
    assertSameBytes(await readScattered(dev, size), model, 'pieces over zeros, over the store, and copied into the slot');
    const beforeSmall = slotWrites.callCount();
    await write(700, 100, 30); // small: extent 0's pieces are copied into the slot first
    assert.equal(slotWrites.callCount() - beforeSmall, 4, 'three pieces, then the small write');
    await write(0, E, 31); // whole: replaces every piece
    await write(100, 300, 32);
    assertSameBytes(await readScattered(dev, size), model, 'after the small and the whole write');
    await dev.flush();
    assertSameBytes(await storeContents(objects, size), model, 'uploaded');
    assertSameBytes(await readScattered(dev, size), model, 'read back after the upload');
    await cache.close();
  });

  it('keeps the buffer of a whole-extent write, so reads and the upload need not read the journal back', async (t) => {
    const objects = new MemoryObjectStore();
    const { dev, cache } = await open(objects, 8 * E, `${dir.path}/kept`, { uploadDelayMs: 3_600_000 });
    const journalReads = t.mock.method(Journal.prototype, 'readPayload').mock;
    const model = Buffer.alloc(8 * E);
    const whole = pattern(E + 200, 5); // extent 1 whole, a small part of extent 2 (copied into its slot)
    whole.copy(model, E);
    assert.equal(await dev.write(E, whole, false), true, 'the device keeps the buffer');
    const part = pattern(100, 6);
    part.copy(model, 4 * E + 10);
    assert.equal(await dev.write(4 * E + 10, part, false), false, 'a partial write is copied: the caller may reuse its buffer');
    part.fill(0xee); // as the NBD session does with its pooled buffers
    assertSameBytes(await readAll(dev, 0, 8 * E), model, 'read back');
    await dev.flush();
    assertSameBytes(await storeContents(objects, 8 * E), model, 'uploaded');
    assert.equal(journalReads.callCount(), 0, 'the journal was not read back');
    await cache.close();
  });

  it('drops the entry of a write that failed, so reads return what the store holds', async () => {
    const objects = new MemoryObjectStore();
    const { dev, cache } = await open(objects, 16 * E, `${dir.path}/failed-write`);
    await dev.write(0, pattern(E, 1), false);
    await dev.flush(); // extent 0 is CLEAN, with a slot
    // eslint-disable-next-line @typescript-eslint/unbound-method -- put back below, and called with .call()
    const realWrite = SlotFile.prototype.write;
    SlotFile.prototype.write = async function (this: SlotFile, slot: number, offset: number, data: Buffer) {
      if (data[0] === 0x77) {
        await realWrite.call(this, slot, offset, data.subarray(0, 100)); // a torn slot write
        throw Object.assign(new Error('disk error'), { code: 'EIO' });
      }
      return realWrite.call(this, slot, offset, data);
    };
    try {
      // Small writes: a write of a whole extent or a large part goes to the journal only, not to a slot.
      await assert.rejects(dev.write(0, Buffer.alloc(200, 0x77), false), /disk error/);
      await assert.rejects(dev.write(5 * E, Buffer.alloc(200, 0x77), false), /disk error/);
    } finally {
      SlotFile.prototype.write = realWrite;
    }
    assert.equal(cache.status().cachedExtents, 0, 'no slot leaked');
    assertSameBytes((await dev.read(0, E))[0]!.data!, pattern(E, 1), 'the clean extent as the store has it');
    assert.equal((await dev.read(5 * E, E))[0]!.data, undefined, 'the never-written extent is still a hole');
    await cache.close();
  });

  it('discards a whole huge device with deletes only for stored extents', async () => {
    const size = 2 ** 40;
    const objects = new FaultyStore(new MemoryObjectStore());
    const { dev, cache } = await open(objects, size, `${dir.path}/discard`);
    for (const at of [0, 5 * E, size - E]) await dev.write(at, pattern(E, 1), false);
    await dev.flush();
    for (let offset = 0; offset < size; offset += 2 ** 32 - E) await dev.trim(offset, Math.min(2 ** 32 - E, size - offset), false);
    await dev.flush();
    assert.equal(objects.deleted.length, 3);
    assert.equal((await dev.read(0, E))[0]!.data, undefined);
    await cache.close();
  });
});
