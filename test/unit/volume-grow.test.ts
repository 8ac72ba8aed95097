// Growing a live volume, layer by layer (Storage.grow): the allocation map, the extent layer
// and the stores above it, the write-back cache's journal (records past the old end replay
// once the volume is larger), and the whole stack on a directory store with its metadata.

import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { pino } from 'pino';
import { UserError } from '../../src/errors.ts';
import { Cmd, NbdErrno } from '../../src/protocol/constants.ts';
import type { Export } from '../../src/protocol/handshake.ts';
import { NbdServer } from '../../src/protocol/server.ts';
import { ExtentDevice } from '../../src/storage/extent-device.ts';
import { AllocationMap } from '../../src/storage/extents/allocation-map.ts';
import { DirectExtentStore } from '../../src/storage/extents/direct-extent-store.ts';
import { ObjectExtents } from '../../src/storage/extents/extent-objects.ts';
import { FileObjectStore } from '../../src/storage/objects/file-object-store.ts';
import { MemoryObjectStore } from '../../src/storage/objects/memory-object-store.ts';
import { openStorage } from '../../src/storage/stack.ts';
import { readVolume } from '../../src/storage/volume/volume.ts';
import { E, log, open, storeContents } from '../helpers/cache.ts';
import { tempDir } from '../helpers/gateway.ts';
import { RawClient } from '../helpers/raw-client.ts';
import { pattern, readAll } from '../helpers/model.ts';

const code = (c: string) => (err: unknown) => err instanceof UserError && err.code === c;

describe('growing a volume', () => {
  const dir = tempDir('grow');
  after(() => dir.remove());

  it('AllocationMap.grow keeps every bit and the count; the new extents are holes', () => {
    const map = new AllocationMap(10);
    for (const i of [0, 7, 9]) map.set(i);
    map.grow(30);
    assert.equal(map.size, 30);
    assert.equal(map.count, 3);
    assert.deepEqual([...map.allocatedIn(0, 30)], [0, 7, 9]);
    assert.deepEqual(map.runs(9, 21, 10), [{ count: 1, allocated: true }, { count: 20, allocated: false }]);
    map.set(29);
    assert.deepEqual([...map.allocatedIn(0, 30)], [0, 7, 9, 29]);
    map.grow(5); // never shrinks
    assert.equal(map.size, 30);
  });

  it('the extent layer, DirectExtentStore and the device grow together; old data stays, the new tail is writable', async () => {
    const objects = new MemoryObjectStore();
    const lower = await ObjectExtents.open(objects, { extentSize: E, extentCount: 3 });
    const direct = new DirectExtentStore(lower, 4 * E);
    const dev = new ExtentDevice(direct, 3 * E - 512, false); // the last extent is partial
    await dev.write(3 * E - 513, Buffer.from([0xab]), false);
    lower.grow(8);
    dev.grow(8 * E);
    assert.equal(direct.extentCount, 8, 'the store above reads its count from the extent layer');
    assert.equal(dev.size, 8 * E);
    // The bytes past the old end in the old last extent read as zeros.
    assert.deepEqual(await readAll(dev, 3 * E - 513, 513), Buffer.concat([Buffer.from([0xab]), Buffer.alloc(512)]));
    const tail = pattern(E, 7);
    await dev.write(7 * E, tail, false);
    assert.deepEqual(await readAll(dev, 7 * E, E), tail);
    assert.equal(lower.allocatedCount, 2);
    // A fresh layer on the same store, at the new count, sees both.
    const again = new ExtentDevice(new DirectExtentStore(await ObjectExtents.open(objects, { extentSize: E, extentCount: 8 }), E), 8 * E, false);
    assert.deepEqual(await readAll(again, 7 * E, E), tail);
    assert.deepEqual(await readAll(again, 3 * E - 513, 1), Buffer.from([0xab]));
  });

  it('the write-back cache takes writes past the old end at once; a restart at the new size replays them from the journal', async () => {
    const objects = new MemoryObjectStore();
    const cacheDir = `${dir.path}/wbc`;
    // No upload ever (the lease is not valid): only the journal holds the writes.
    const first = await open(objects, 4 * E, cacheDir, { mayUpload: () => false, uploadDelayMs: 60_000 });
    await first.dev.write(4 * E - 1, Buffer.from([1]), false);
    first.lower.grow(10);
    first.dev.grow(10 * E);
    assert.equal(first.cache.extentCount, 10);
    const tail = pattern(2 * E, 3);
    await first.dev.write(8 * E, tail, false);
    await first.dev.write(9 * E + 100, Buffer.from('partial'), false);
    assert.deepEqual(await readAll(first.dev, 8 * E, E), tail.subarray(0, E));
    await first.cache.close(); // as a crash leaves it: nothing uploaded, everything in the journal
    assert.equal(objects.size, 0, 'nothing reached the store');
    const second = await open(objects, 10 * E, cacheDir);
    try {
      assert.deepEqual(await readAll(second.dev, 4 * E - 1, 1), Buffer.from([1]));
      assert.deepEqual(await readAll(second.dev, 8 * E, E), tail.subarray(0, E));
      const last = Buffer.from(tail.subarray(E));
      Buffer.from('partial').copy(last, 100);
      assert.deepEqual(await readAll(second.dev, 9 * E, E), last);
      await second.dev.flush();
      const stored = await storeContents(objects, 10 * E);
      assert.deepEqual(stored.subarray(9 * E), last, 'the replayed tail was uploaded');
    } finally {
      await second.cache.close();
    }
  });

  it('Storage.grow rewrites the metadata first, refuses to shrink, and a restart opens the new size with the data', async () => {
    const store = `${dir.path}/store`;
    const config = (readOnly = false) => ({
      log: pino({ level: 'silent' }), store, volume: { mode: 'open-or-create' as const, size: 1 << 20, extentSize: 1 << 16 }, readOnly, memoryCacheBytes: 1 << 20,
      cache: { dir: `${dir.path}/cache`, cacheBytes: 8 << 20, maxDirtyBytes: 1 << 20, uploadConcurrency: 2, flushMode: 's3' as const, uploadDelayMs: 5, leaseTtlMs: 30_000, takeOver: false },
    });
    const storage = await openStorage(config());
    await storage.device.write((1 << 20) - 1, Buffer.from([9]), false);
    await assert.rejects(storage.grow((1 << 20) - 512), (err: unknown) => err instanceof UserError && err.code === 'S3NBD_VOLUME_SHRINK'
      && err.message.includes(String(1 << 20)) && err.message.includes(String((1 << 20) - 512)));
    await assert.rejects(storage.grow((2 << 20) + 1), code('S3NBD_BAD_DEVICE_SIZE'));
    assert.equal((await storage.grow(1 << 20)).size, 1 << 20, 'the current size changes nothing');
    const grown = await storage.grow(3 << 20);
    assert.equal(grown.size, 3 << 20);
    assert.equal(storage.volume.size, 3 << 20);
    assert.equal(storage.device.size, 3 << 20);
    assert.equal((await readVolume(new FileObjectStore(store)))?.volume.size, 3 << 20, 'the metadata says so');
    const tail = pattern(1 << 16, 5);
    await storage.device.write((3 << 20) - (1 << 16), tail, false);
    assert.equal(await storage.close(10_000), true);
    const reopened = await openStorage({ ...config(), volume: { mode: 'open-or-create', extentSize: 1 << 16 } });
    try {
      assert.equal(reopened.device.size, 3 << 20);
      assert.deepEqual(await readAll(reopened.device, (1 << 20) - 1, 1), Buffer.from([9]));
      assert.deepEqual(await readAll(reopened.device, (3 << 20) - (1 << 16), 1 << 16), tail);
    } finally {
      await reopened.close(10_000);
    }
    const readOnly = await openStorage({ ...config(true), volume: { mode: 'open' }, cache: undefined });
    try {
      await assert.rejects(readOnly.grow(4 << 20), code('S3NBD_VOLUME_NOT_WRITABLE'));
    } finally {
      await readOnly.close();
    }
  });

  it('a memory-store volume grows without a lease; an open connection keeps its size, a new one gets the new size; snapshots record it', async () => {
    const storage = await openStorage({ log, store: 'memory:', volume: { mode: 'open-or-create', size: 1 << 20 }, readOnly: false, memoryCacheBytes: 1 << 20 });
    const exp: Export = { name: 'disk', description: 'test disk', device: storage.device };
    const server = new NbdServer({ exports: { find: () => exp, list: () => [exp] }, log });
    const port = Number((await server.listen({ host: '127.0.0.1', port: 0 })).split(':').pop());
    try {
      const before = await RawClient.connect(port);
      await before.go();
      await storage.grow(2 << 20);
      before.request(Cmd.WRITE, 1 << 20, 4, 0, 1, Buffer.from('late'));
      assert.deepEqual(await before.simpleReply(), { errno: NbdErrno.ENOSPC, handle: 1 }, 'past the size this connection negotiated');
      const after = await RawClient.connect(port);
      await after.go();
      after.request(Cmd.WRITE, (2 << 20) - 4, 4, 0, 2, Buffer.from('tail'));
      assert.deepEqual(await after.simpleReply(), { errno: 0, handle: 2 });
      for (const c of [before, after]) {
        c.request(Cmd.DISC, 0, 0);
        await c.closed();
      }
      assert.deepEqual(await readAll(storage.device, (2 << 20) - 4, 4), Buffer.from('tail'));
      assert.equal(storage.extents.extentCount, 2);
      assert.equal((await storage.snapshots.create(storage.extents, 's1')).size, 2 << 20, 'a snapshot taken after the growth has the new size');
    } finally {
      await server.shutdown(1000);
      await storage.close();
    }
  });
});
