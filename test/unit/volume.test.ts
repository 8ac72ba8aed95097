import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Errors, UserError } from '../../src/errors.ts';
import { MemoryObjectStore } from '../../src/storage/objects/memory-object-store.ts';
import { VOLUME_KEY, openVolume } from '../../src/storage/volume/volume.ts';

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

  it('has a writer check the store\'s conditional writes, and deletes a volume it created when the check fails', async () => {
    // A store whose conditions someone else evaluates (S3) has the check; here it fails or passes on demand.
    class CheckedStore extends MemoryObjectStore {
      checks: Array<{ key: string; data: string }> = [];
      honours = false;
      checkConditionalWrites(key: string, data: Buffer): Promise<void> {
        this.checks.push({ key, data: data.toString() });
        return this.honours ? Promise.resolve() : Promise.reject(Errors.noConditionalWrites('memory:', 'ignores If-None-Match: *'));
      }
    }
    const store = new CheckedStore();
    await assert.rejects(openVolume(store, { mode: 'open-or-create', size: 1 << 30 }), code('S3NBD_NO_CONDITIONAL_WRITES'));
    assert.equal(await store.get(VOLUME_KEY), undefined, 'the volume it created is gone again');
    assert.equal(store.checks.length, 1);
    store.honours = true;
    const { volume } = await openVolume(store, { mode: 'create', size: 1 << 30 });
    const stored = (await store.get(VOLUME_KEY))!.toString();
    assert.deepEqual(store.checks[1], { key: VOLUME_KEY, data: stored }, 'checked with the bytes it holds');
    store.honours = false;
    await assert.rejects(openVolume(store, { mode: 'open-or-create', writer: true }), code('S3NBD_NO_CONDITIONAL_WRITES'));
    assert.equal((await store.get(VOLUME_KEY))?.toString(), stored, 'an existing volume stays');
    assert.equal((await openVolume(store, { mode: 'open-or-create' })).volume.id, volume.id, 'no check without a writer');
    assert.equal((await openVolume(store, { mode: 'open' })).volume.id, volume.id);
    assert.equal(store.checks.length, 3);
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
