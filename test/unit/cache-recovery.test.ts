// The write-back cache after a restart: every acknowledged write replayed from the journal
// (with a cache smaller than the journal names), and journal trims behind uploads that keep
// every record not yet uploaded.

import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { ExtentDevice } from '../../src/storage/extent-device.ts';
import { SEGMENT_BYTES } from '../../src/storage/cache/journal.ts';
import { MemoryObjectStore } from '../../src/storage/objects/memory-object-store.ts';
import { ObjectExtents } from '../../src/storage/extents/extent-objects.ts';
import { bodyParts, type ObjectStore } from '../../src/storage/objects/object-store.ts';
import { SlotFile } from '../../src/storage/cache/slot-file.ts';
import { WriteBackCache } from '../../src/storage/cache/write-back-cache.ts';
import { assertSameBytes } from '../helpers/bytes.ts';
import { E, log, open, storeContents } from '../helpers/cache.ts';
import { FaultyStore } from '../helpers/faulty-store.ts';
import { pattern, readAll } from '../helpers/model.ts';
import { tempDir } from '../helpers/gateway.ts';

describe('WriteBackCache', () => {
  const dir = tempDir('wbc-recovery');
  after(() => dir.remove());

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

  it('keeps the journal segment of a piece that an upload already covered while the extent is still dirty', { timeout: 10_000 }, async () => {
    const M = 1024 * 1024;
    const objects = new MemoryObjectStore();
    const first = pattern(M / 4, 100);
    let gate: Promise<void> | undefined;
    let release = (): void => undefined;
    const gated = new FaultyStore(objects);
    gated.put = async (key, parts) => {
      const data = Buffer.concat(bodyParts(parts));
      if (gate && data.subarray(0, 64).equals(first.subarray(0, 64))) await gate;
      return objects.put(key, data);
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

  it('trims the journal during a long write of new extents, and still recovers what was not uploaded', async () => {
    const M = 1024 * 1024;
    const objects = new MemoryObjectStore();
    const cacheDir = `${dir.path}/trim-new-extents`;
    // Extent 100 cannot be uploaded: it stays dirty, never uploaded, like the newest extent of
    // a sequential write, while the 40 before it are uploaded.
    const last = pattern(M, 100);
    const refusing = new FaultyStore(objects);
    refusing.put = async (key, parts) => {
      const data = Buffer.concat(bodyParts(parts));
      if (data.equals(last)) throw Object.assign(new Error('injected put failure'), { code: 'EIO' });
      return objects.put(key, data);
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
});
