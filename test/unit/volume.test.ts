import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { UserError } from '../../src/errors.ts';
import { MemoryObjectStore } from '../../src/storage/memory-object-store.ts';
import { VOLUME_KEY, openVolume } from '../../src/storage/volume.ts';

const code = (c: string) => (err: unknown) => err instanceof UserError && err.code === c;

describe('volume metadata', () => {
  it('is created once and then opened as it is', async () => {
    const store = new MemoryObjectStore();
    await assert.rejects(openVolume(store, { mode: 'open-or-create' }), code('S3NBD_NO_VOLUME'));
    const { volume, created } = await openVolume(store, { mode: 'open-or-create', size: 1 << 30 });
    assert.equal(created, true);
    assert.equal(volume.extentSize, 1 << 20);
    const again = await openVolume(store, { mode: 'open-or-create' });
    assert.equal(again.created, false);
    assert.deepEqual(again.volume, volume);
    assert.deepEqual((await openVolume(store, { mode: 'open', size: 1 << 30 })).volume, volume);
  });

  it('refuses a conflicting size or extent size, and a second create', async () => {
    const store = new MemoryObjectStore();
    await openVolume(store, { mode: 'create', size: 1 << 30, extentSize: 1 << 16 });
    await assert.rejects(openVolume(store, { mode: 'open-or-create', size: 2 * 2 ** 30 }), code('S3NBD_VOLUME_CONFLICT'));
    await assert.rejects(openVolume(store, { mode: 'open-or-create', extentSize: 1 << 20 }), code('S3NBD_VOLUME_CONFLICT'));
    await assert.rejects(openVolume(store, { mode: 'create', size: 1 << 30 }), code('S3NBD_VOLUME_EXISTS'));
  });

  it('agrees on one description when two creators race', async () => {
    const store = new MemoryObjectStore();
    const [a, b] = await Promise.all([
      openVolume(store, { mode: 'open-or-create', size: 1 << 30 }),
      openVolume(store, { mode: 'open-or-create', size: 1 << 30 }),
    ]);
    assert.equal(a.volume.id, b.volume.id);
    assert.equal([a.created, b.created].filter(Boolean).length, 1);
  });

  it('rejects bad geometry and unreadable metadata with a clear error', async () => {
    const store = new MemoryObjectStore();
    await assert.rejects(openVolume(store, { mode: 'create', size: 1000 }), code('S3NBD_BAD_DEVICE_SIZE'));
    await assert.rejects(openVolume(store, { mode: 'create', size: 1 << 30, extentSize: 3000 }), code('S3NBD_BAD_EXTENT_SIZE'));
    await assert.rejects(openVolume(store, { mode: 'create', size: 1 << 30, extentSize: 1 << 26 }), code('S3NBD_BAD_EXTENT_SIZE'));
    await store.put(VOLUME_KEY, Buffer.from('not json'));
    await assert.rejects(openVolume(store, { mode: 'open' }), code('S3NBD_BAD_VOLUME'));
    await store.put(VOLUME_KEY, Buffer.from(JSON.stringify({ format: 's3nbd-volume', version: 99 })));
    await assert.rejects(openVolume(store, { mode: 'open' }), (err: unknown) => code('S3NBD_BAD_VOLUME')(err) && /version 99/.test(String(err)));
  });
});
