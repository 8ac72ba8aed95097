// The write-back cache's flusher: when it uploads (a pause in the writes, half the dirty
// limit), the dirty limit while the store is down, and what FLUSH waits for in each mode.

import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { MemoryObjectStore } from '../../src/storage/objects/memory-object-store.ts';
import { assertSameBytes } from '../helpers/bytes.ts';
import { E, open, storeContents } from '../helpers/cache.ts';
import { FaultyStore } from '../helpers/faulty-store.ts';
import { ManualClock, until } from '../helpers/manual-clock.ts';
import { pattern, readAll } from '../helpers/model.ts';
import { tempDir } from '../helpers/gateway.ts';

describe('WriteBackCache', () => {
  const dir = tempDir('wbc-uploads');
  after(() => dir.remove());

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
    // On a manual clock: on a loaded machine, real 20 ms pauses sometimes lasted 100 ms.
    const clock = new ManualClock();
    const { dev, cache } = await open(objects, 16 * E, `${dir.path}/policy`, { uploadDelayMs: 100, maxDirtyBytes: 16 * E, clock });
    // 40 writes into one extent, 20 ms apart: never 100 ms without a change. They end at the
    // extent's end, as a writer going forward does (others wait longer: flusher-policy.test.ts).
    for (let i = 0; i < 40; i++) {
      await dev.write(E - 512, pattern(512, i), false);
      await clock.advance(20);
    }
    assert.equal(objects.calls.put, 0, 'uploaded while it was still being rewritten');
    await clock.advance(200);
    await until(() => objects.calls.put === 1 && cache.status().dirtyExtents === 0, 'one upload once the writes paused');
    assert.equal(objects.calls.put, 1, 'one upload once the writes paused');
    assertSameBytes(await storeContents(objects, 16 * E), Buffer.concat([Buffer.alloc(E - 512), pattern(512, 39), Buffer.alloc(15 * E)]), 'the last write');
    await cache.close();
  });

  it('uploads at once when dirty data passes half the dirty limit, however recent the writes', async () => {
    const objects = new FaultyStore(new MemoryObjectStore());
    const { dev, cache } = await open(objects, 16 * E, `${dir.path}/pressure`, { uploadDelayMs: 3_600_000, maxDirtyBytes: 8 * E });
    await dev.write(0, pattern(3 * E, 1), false);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(objects.calls.put, 0, 'three dirty extents of eight allowed wait for the delay');
    await dev.write(3 * E, pattern(E, 2), false);
    await until(() => cache.status().dirtyExtents === 0, 'four of eight: everything uploaded without a flush', 20_000);
    await cache.close();
  });

  it('uploads a partly written extent that memory held without fetching it again, and GETs it once memory has let it go', async () => {
    const size = 16 * E;
    const objects = new FaultyStore(new MemoryObjectStore());
    const first = await open(objects, size, `${dir.path}/base-write`);
    for (let i = 0; i < 8; i++) await first.dev.write(i * E, pattern(E, 10 + i), false);
    await first.dev.flush();
    await first.cache.close();

    const { dev, cache } = await open(objects, size, `${dir.path}/base`, { uploadDelayMs: 3_600_000 });
    // Out of order (not a sequential read): both go to the memory cache, which holds 4 extents.
    await readAll(dev, 2 * E, E);
    await readAll(dev, 0, E);
    const gets = objects.calls.get;
    await dev.write(100, pattern(200, 1), false);
    await dev.write(2 * E + 300, pattern(100, 2), false);
    // A read of the written extent fills its gaps from the same base: still no GET.
    assertSameBytes(await readAll(dev, 2 * E, E), Buffer.concat([pattern(E, 12).subarray(0, 300), pattern(100, 2), pattern(E, 12).subarray(400)]), 'extent 2 read back');
    await dev.flush();
    assert.equal(objects.calls.get, gets, 'no GET: the bases came from memory');

    // Extent 4 read, then written; its base is then pushed out of memory by four other reads.
    await readAll(dev, 4 * E, E);
    await dev.write(4 * E + 10, pattern(10, 3), false);
    for (const i of [7, 5, 3, 6]) await readAll(dev, i * E, E); // none right after the one before: not sequential
    const before = objects.calls.get;
    await dev.flush();
    assert.equal(objects.calls.get, before + 1, 'the evicted base is fetched');

    // A discarded extent's old base is never used: its gaps are zeros.
    await readAll(dev, 1 * E, E);
    await dev.write(1 * E + 8, pattern(8, 4), false);
    await dev.trim(1 * E, E, false);
    await dev.write(1 * E + 16, pattern(16, 5), false);
    await dev.flush();
    await cache.close();

    const expected = Buffer.concat(Array.from({ length: 16 }, (_, i) => (i < 8 ? pattern(E, 10 + i) : Buffer.alloc(E))));
    pattern(200, 1).copy(expected, 100);
    pattern(100, 2).copy(expected, 2 * E + 300);
    pattern(10, 3).copy(expected, 4 * E + 10);
    expected.fill(0, E, 2 * E);
    pattern(16, 5).copy(expected, E + 16);
    assertSameBytes(await storeContents(objects, size), expected, 'the store');
  });

  it('lets go of a base once the extent is written whole, so it takes no room from what reads keep', async () => {
    const size = 8 * E;
    const objects = new FaultyStore(new MemoryObjectStore());
    const first = await open(objects, size, `${dir.path}/base-drop-write`);
    await first.dev.write(0, pattern(size, 20), false);
    await first.dev.flush();
    await first.cache.close();

    const { dev, cache } = await open(objects, size, `${dir.path}/base-drop`, { uploadDelayMs: 3_600_000 });
    try {
      // The memory cache (4 extents) holds these four.
      for (const i of [0, 2, 4, 6]) await readAll(dev, i * E, E);
      await dev.write(100, pattern(10, 1), false); // extent 0's stored bytes become its base
      await dev.write(0, pattern(E, 2), false); // written whole: the base has no use; the write is kept in memory
      await new Promise((r) => setTimeout(r, 50));
      // Nothing was pushed out of memory into the disk cache: its one slot is extent 0's.
      assert.equal(cache.status().cachedExtents, 1);
      const gets = objects.calls.get;
      for (const i of [2, 4, 6]) assertSameBytes(await readAll(dev, i * E, E), pattern(size, 20).subarray(i * E, (i + 1) * E), `extent ${i}`);
      assert.equal(objects.calls.get, gets, 'extents 2, 4 and 6 are still in memory');
    } finally {
      await cache.close();
    }
  });
});
