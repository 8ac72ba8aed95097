// The write-back cache over the memory store: a byte model under random operations with a
// tiny cache (eviction, backpressure), recovery from the journal, no GET on partial writes,
// the dirty limit while the store is down, and cheap whole-device discards.

import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { pino } from 'pino';
import { ExtentDevice } from '../../src/storage/extent-device.ts';
import { Journal, SEGMENT_BYTES } from '../../src/storage/cache/journal.ts';
import { MemoryObjectStore } from '../../src/storage/objects/memory-object-store.ts';
import { ObjectExtents } from '../../src/storage/extents/extent-objects.ts';
import { DirectExtentStore } from '../../src/storage/extents/direct-extent-store.ts';
import type { ObjectStore } from '../../src/storage/objects/object-store.ts';
import { SlotFile } from '../../src/storage/cache/slot-file.ts';
import { WriteBackCache, type WriteBackOptions } from '../../src/storage/cache/write-back-cache.ts';
import { assertSameBytes } from '../helpers/bytes.ts';
import { FaultyStore } from '../helpers/faulty-store.ts';
import { pattern, readAll, runRandomWorkload } from '../helpers/model.ts';
import { tempDir } from '../helpers/gateway.ts';

const E = 4096;
const log = pino({ level: 'silent' });

/** Reads whole extents out of order (even ones, then odd ones), so none is a sequential read. */
async function readScattered(dev: ExtentDevice, size: number): Promise<Buffer> {
  const out = Buffer.alloc(size);
  for (const parity of [0, 1]) {
    for (let i = parity; i * E < size; i += 2) (await readAll(dev, i * E, E)).copy(out, i * E);
  }
  return out;
}

async function open(objects: ObjectStore, size: number, cacheDir: string, overrides: Partial<WriteBackOptions> = {}) {
  const lower = await ObjectExtents.open(objects, { extentSize: E, extentCount: Math.ceil(size / E) });
  const cache = await WriteBackCache.open(lower, {
    cacheDir, cacheBytes: 16 * E, memoryCacheBytes: 4 * E, maxDirtyBytes: 8 * E, uploadConcurrency: 4,
    flushMode: 's3', uploadDelayMs: 5, log, ...overrides,
  });
  return { lower, cache, dev: new ExtentDevice(cache, size, false) };
}

/** What the object store alone holds, read through a fresh stack with no cache. */
async function storeContents(objects: ObjectStore, size: number): Promise<Buffer> {
  const lower = new DirectExtentStore(await ObjectExtents.open(objects, { extentSize: E, extentCount: Math.ceil(size / E) }), E);
  return readAll(new ExtentDevice(lower, size, false), 0, size);
}

describe('WriteBackCache', () => {
  const dir = tempDir('wbc');
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

  it('recovers every acknowledged write from the journal after stopping without uploading', async () => {
    const size = 32 * E;
    const objects = new MemoryObjectStore();
    const cacheDir = `${dir.path}/recover`;
    // Some extents are in the store before the crash, so partial writes land on them unread.
    const first = await open(objects, size, cacheDir);
    await first.dev.write(0, pattern(8 * E, 3), false);
    await first.dev.flush();
    await first.cache.close();

    const second = await open(objects, size, cacheDir, { uploadDelayMs: 3_600_000 }); // never uploads on its own
    const model = await readAll(second.dev, 0, size);
    const writes: Array<[number, Buffer]> = [[100, pattern(300, 9)], [E + 17, pattern(2 * E, 5)], [20 * E, pattern(E, 1)], [5 * E, Buffer.alloc(E)]];
    for (const [at, data] of writes) {
      await second.dev.write(at, data, false);
      data.copy(model, at);
    }
    await second.dev.trim(6 * E, 2 * E, false);
    model.fill(0, 6 * E, 8 * E);
    assert.ok(second.cache.status().journalBytes > 0);
    await second.cache.close(); // as after a crash: nothing of this was uploaded
    assert.notDeepEqual(await storeContents(objects, size), model, 'the store alone does not have the writes yet');

    const third = await open(objects, size, cacheDir);
    assertSameBytes(await readAll(third.dev, 0, size), model, 'replayed from the journal');
    await third.dev.flush();
    assertSameBytes(await storeContents(objects, size), model, 'uploaded after recovery');
    await third.cache.close();
    const fourth = await open(objects, size, cacheDir);
    assert.equal(fourth.cache.status().dirtyExtents, 0, 'nothing left to replay once uploaded');
    await fourth.cache.close();
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

  it('keeps acknowledging writes while the store is down until the dirty limit, then waits; flush completes when it returns', async () => {
    const size = 64 * E;
    const objects = new FaultyStore(new MemoryObjectStore());
    const { dev, cache } = await open(objects, size, `${dir.path}/down`, { maxDirtyBytes: 4 * E });
    objects.failAll('put');
    for (let i = 0; i < 4; i++) await dev.write(i * E, pattern(E, i), false);
    let fifthDone = false;
    const fifth = dev.write(10 * E, pattern(E, 10), false).then(() => { fifthDone = true; });
    const flushed = dev.flush();
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(fifthDone, false, 'the write beyond the dirty limit waits');
    assert.ok(cache.status().uploadFailures > 0, 'uploads are being retried');
    objects.failAll('put', false);
    await fifth;
    await flushed;
    await dev.flush();
    const contents = await storeContents(objects, size);
    for (const i of [0, 1, 2, 3, 10]) assertSameBytes(contents.subarray(i * E, (i + 1) * E), pattern(E, i), `extent ${i}`);
    await cache.close();
  });

  it('shares one GET among concurrent reads of an extent, and reads ahead on sequential reads', async () => {
    const size = 64 * E;
    const objects = new FaultyStore(new MemoryObjectStore());
    const seed = await open(objects, size, `${dir.path}/shared-seed`);
    await seed.dev.write(0, pattern(32 * E, 2), false);
    await seed.dev.flush();
    await seed.cache.close();
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

  it('keeps the journal record of a write whose slot write is still running while another upload trims the journal', async () => {
    const objects = new MemoryObjectStore();
    const cacheDir = `${dir.path}/trim-race`;
    const a = await open(objects, 64 * E, cacheDir, { uploadDelayMs: 3_600_000 });
    await a.cache.write(2, 0, pattern(E, 2));
    // A slow disk for one slot write: its journal record lands first, its slot bytes later.
    // eslint-disable-next-line @typescript-eslint/unbound-method -- put back below, and called with .call()
    const realWrite = SlotFile.prototype.write;
    let slow = true;
    SlotFile.prototype.write = async function (this: SlotFile, slot: number, offset: number, data: Buffer) {
      if (slow && data[0] === 0x11) await new Promise((r) => setTimeout(r, 300));
      return realWrite.call(this, slot, offset, data);
    };
    try {
      const w = a.cache.write(1, 0, Buffer.alloc(E, 0x11));
      await new Promise((r) => setTimeout(r, 50));
      await a.cache.flush([2]); // extent 2 uploaded: the journal is trimmed while w is in flight
      slow = false;
      await w;
    } finally {
      SlotFile.prototype.write = realWrite;
    }
    await a.cache.close(); // as after kill -9: extent 1 was never uploaded
    const b = await open(objects, 64 * E, cacheDir);
    assertSameBytes((await b.dev.read(E, E))[0]!.data ?? Buffer.alloc(E), Buffer.alloc(E, 0x11), 'the acknowledged write survived');
    await b.cache.close();
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

  it('keeps the journal segment of a piece that an upload already covered while the extent is still dirty', { timeout: 10_000 }, async () => {
    const M = 1024 * 1024;
    const objects = new MemoryObjectStore();
    const first = pattern(M / 4, 100);
    let gate: Promise<void> | undefined;
    let release = (): void => undefined;
    const gated = new FaultyStore(objects);
    gated.put = async (key, data) => {
      if (gate && data.subarray(0, 64).equals(first.subarray(0, 64))) await gate;
      return objects.put(key, Buffer.from(data));
    };
    const lower = await ObjectExtents.open(gated, { extentSize: M, extentCount: 32 });
    const cache = await WriteBackCache.open(lower, {
      cacheDir: `${dir.path}/piece-trim`, cacheBytes: 32 * M, memoryCacheBytes: M, maxDirtyBytes: 32 * M, uploadConcurrency: 4,
      flushMode: 's3', uploadDelayMs: 3_600_000, log,
    });
    const dev = new ExtentDevice(cache, 32 * M, false);
    const model = Buffer.alloc(M);
    const piece = async (offset: number, data: Buffer) => {
      data.copy(model, offset);
      await dev.write(offset, data, false);
    };
    try {
      await piece(0, first); // in the first journal segment
      for (let i = 1; i <= 17; i++) await dev.write(i * M, pattern(M, i), false); // fills it
      await piece(M / 4, pattern(M / 4, 2)); // in the second
      gate = new Promise((resolve) => { release = resolve; });
      const uploaded = cache.flush([0]); // extent 0 as of the second piece: held in its put
      await new Promise((r) => setTimeout(r, 20));
      await piece(M / 2, pattern(M / 4, 3)); // a third piece while the upload runs
      await cache.flush(Array.from({ length: 17 }, (_, i) => i + 1));
      release();
      await uploaded;
      await new Promise((r) => setTimeout(r, 50)); // a trim of the first segment would be done by now
      assertSameBytes(await readAll(dev, 0, M), model, 'the first piece is still read from the journal');
      await dev.flush();
      const stored = await (await ObjectExtents.open(objects, { extentSize: M, extentCount: 32 })).fetch(0);
      assertSameBytes(stored ?? Buffer.alloc(0), model, 'uploaded');
    } finally {
      release();
      await cache.close();
    }
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

  it('keeps the fetched extents that memory evicts in the disk cache', async () => {
    const objects = new FaultyStore(new MemoryObjectStore());
    const size = 12 * E;
    const model = pattern(size, 6);
    const first = await open(objects, size, `${dir.path}/disk-read-a`);
    await first.dev.write(0, model, false);
    await first.dev.flush();
    await first.cache.close();

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
    const first = await open(objects, 4 * E, `${dir.path}/fill-a`);
    await first.dev.write(0, pattern(2 * E, 3), false);
    await first.dev.flush();
    await first.cache.close();
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

  it('keeps neither sequential reads nor sequential whole-extent writes in memory or on disk, only what is read or written out of order', async () => {
    const objects = new FaultyStore(new MemoryObjectStore());
    const size = 40 * E;
    const model = pattern(size, 9);
    const first = await open(objects, size, `${dir.path}/stream-a`);
    await first.dev.write(0, model, false);
    await first.dev.flush();
    await first.cache.close();

    // Memory for 4 extents, so a stream window of 2 x READ_AHEAD = 16 extents.
    const { dev, cache } = await open(objects, size, `${dir.path}/stream-b`);
    try {
      let gets = objects.calls.get;
      assertSameBytes(await readAll(dev, 0, size), model, 'a sequential read');
      assert.equal(objects.calls.get - gets, 40, 'one GET per extent');
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(cache.status().cachedExtents, 0, 'nothing written to the disk cache');
      gets = objects.calls.get;
      assertSameBytes(await readAll(dev, 0, size), model, 'read again');
      assert.ok(objects.calls.get - gets >= 40 - 16 - 1, `fetched again but the window and extent 0 (the read that started the run): ${objects.calls.get - gets} GETs`);
      gets = objects.calls.get;
      assertSameBytes(await readScattered(dev, size), model, 'read out of order');
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(cache.status().cachedExtents, 16, 'extents read out of order are kept: they fill the disk cache');

      // Whole extents written in order: the first is kept, the rest of the run is not.
      const written = pattern(8 * E, 10);
      const kept: boolean[] = [];
      for (let i = 0; i < 8; i++) kept.push(await dev.write(i * E, Buffer.from(written.subarray(i * E, (i + 1) * E)), false));
      assert.deepEqual(kept, [true, false, false, false, false, false, false, false]);
      gets = objects.calls.get;
      assertSameBytes(await readScattered(dev, 8 * E), written, 'read back before the upload, from the journal');
      assert.equal(objects.calls.get, gets, 'no GET for dirty extents');
      await dev.flush();
      gets = objects.calls.get;
      assertSameBytes(await readScattered(dev, 8 * E), written, 'read back after the upload');
      assert.equal(objects.calls.get - gets, 7, 'only the first extent of the run was kept in memory');
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

  it('recovers with a cache smaller than the extents the journal names, when most of them were uploaded', async () => {
    const size = 64 * E;
    const objects = new MemoryObjectStore();
    const cacheDir = `${dir.path}/small-recover`;
    const a = await open(objects, size, cacheDir, { cacheBytes: 6 * E, maxDirtyBytes: 4 * E, uploadDelayMs: 0 });
    const model = Buffer.alloc(size);
    for (let i = 0; i < 40; i++) {
      const data = pattern(E / 4, i);
      await a.dev.write(i * E + 100, data, false);
      data.copy(model, i * E + 100);
    }
    await a.cache.close(); // a crash: the journal names 40 extents, the cache has 6 slots
    const b = await open(objects, size, cacheDir, { cacheBytes: 6 * E, maxDirtyBytes: 4 * E });
    assertSameBytes(await readAll(b.dev, 0, size), model, 'everything acknowledged is there');
    await b.dev.flush();
    assertSameBytes(await storeContents(objects, size), model, 'and in the store after FLUSH');
    await b.cache.close();
  });

  it('with --flush-mode local, FLUSH only makes the journal durable and uploads nothing', async () => {
    const objects = new FaultyStore(new MemoryObjectStore());
    const { dev, cache } = await open(objects, 16 * E, `${dir.path}/local`, { flushMode: 'local', uploadDelayMs: 3_600_000 });
    objects.failAll('put'); // S3 unreachable: a FLUSH in s3 mode would wait
    await dev.write(0, pattern(2 * E, 4), true);
    await dev.flush();
    assert.equal(objects.calls.put, 0);
    assert.equal(cache.status().dirtyExtents, 2);
    await cache.close();
  });

  it('uploads an extent once its writes pause, not after every write while they keep coming', async () => {
    const objects = new FaultyStore(new MemoryObjectStore());
    const { dev, cache } = await open(objects, 16 * E, `${dir.path}/policy`, { uploadDelayMs: 100, maxDirtyBytes: 16 * E });
    // 40 writes into one extent, 20 ms apart: never 100 ms without a change.
    for (let i = 0; i < 40; i++) {
      await dev.write(0, pattern(512, i), false);
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(objects.calls.put, 0, 'uploaded while it was still being rewritten');
    const deadline = Date.now() + 2000;
    while (objects.calls.put === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.equal(objects.calls.put, 1, 'one upload once the writes paused');
    assertSameBytes(await storeContents(objects, 16 * E), Buffer.concat([pattern(512, 39), Buffer.alloc(16 * E - 512)]), 'the last write');
    await cache.close();
  });

  it('uploads at once when dirty data passes half the dirty limit, however recent the writes', async () => {
    const objects = new FaultyStore(new MemoryObjectStore());
    const { dev, cache } = await open(objects, 16 * E, `${dir.path}/pressure`, { uploadDelayMs: 3_600_000, maxDirtyBytes: 8 * E });
    await dev.write(0, pattern(3 * E, 1), false);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(objects.calls.put, 0, 'three dirty extents of eight allowed wait for the delay');
    await dev.write(3 * E, pattern(E, 2), false);
    const deadline = Date.now() + 2000;
    while (cache.status().dirtyExtents > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.equal(cache.status().dirtyExtents, 0, 'four of eight: everything uploaded without a flush');
    await cache.close();
  });

  it('trims the journal during a long write of new extents, and still recovers what was not uploaded', async () => {
    const M = 1024 * 1024;
    const objects = new MemoryObjectStore();
    const cacheDir = `${dir.path}/trim-new-extents`;
    // Extent 100 cannot be uploaded: it stays dirty, never uploaded, like the newest extent of
    // a sequential write, while the 40 before it are uploaded.
    const last = pattern(M, 100);
    const refusing = new FaultyStore(objects);
    refusing.put = async (key, data) => {
      if (data.equals(last)) throw Object.assign(new Error('injected put failure'), { code: 'EIO' });
      return objects.put(key, Buffer.from(data));
    };
    const openBig = async (store: ObjectStore, uploadDelayMs: number) => {
      const lower = await ObjectExtents.open(store, { extentSize: M, extentCount: 128 });
      const cache = await WriteBackCache.open(lower, {
        cacheDir, cacheBytes: 96 * M, memoryCacheBytes: M, maxDirtyBytes: 256 * M, uploadConcurrency: 4, flushMode: 's3', uploadDelayMs, log,
      });
      return { cache, dev: new ExtentDevice(cache, 128 * M, false) };
    };
    const a = await openBig(refusing, 20);
    try {
      for (let i = 0; i < 40; i++) await a.dev.write(i * M, pattern(M, i), false);
      await a.dev.write(100 * M, last, false);
      const deadline = Date.now() + 5000;
      while ((a.cache.status().uploadedExtents < 40 || a.cache.status().journalBytes > SEGMENT_BYTES) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 10));
      }
      assert.equal(a.cache.status().uploadedExtents, 40);
      // 41 MiB were written in three segments; the last holds extent 100's record.
      assert.ok(a.cache.status().journalBytes <= SEGMENT_BYTES, `the journal keeps only the segment of extent 100, not ${a.cache.status().journalBytes} bytes`);
    } finally {
      await a.cache.close(); // as after kill -9: extent 100 was never uploaded
    }
    const b = await openBig(objects, 3_600_000);
    try {
      assert.equal(b.cache.status().dirtyExtents, 1, 'only extent 100 is replayed');
      assertSameBytes((await b.dev.read(100 * M, M))[0]!.data ?? Buffer.alloc(M), last, 'the acknowledged write survived');
      assertSameBytes((await b.dev.read(7 * M, M))[0]!.data ?? Buffer.alloc(M), pattern(M, 7), 'an uploaded extent');
    } finally {
      await b.cache.close();
    }
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
