// Clones (src/storage/snapshots/clone.ts) on directory stores: a clone reads what it has not
// written from its origin snapshot's objects and writes its own; its collector never deletes
// an origin object nor a tombstone above one; its snapshots name origin objects (source 1) and
// read back; a clone of a clone's snapshot reads three volumes' objects; the origin refuses
// to delete a snapshot with clones, naming them, and forgets a clone that is gone.

import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { pino } from 'pino';
import { UserError } from '../../src/errors.ts';
import { EXTENT_PREFIX } from '../../src/storage/extents/extent-keys.ts';
import { type ExtentSource, ObjectExtents } from '../../src/storage/extents/extent-objects.ts';
import { RetainedObjects } from '../../src/storage/extents/retained-objects.ts';
import type { ExtentCodec } from '../../src/storage/format/extent-codec.ts';
import { openCodec } from '../../src/storage/format/object-settings.ts';
import { FileObjectStore } from '../../src/storage/objects/file-object-store.ts';
import type { ObjectStore } from '../../src/storage/objects/object-store.ts';
import { cloneMarkerKey, createClone, listClones, missingClones, openCloneBase } from '../../src/storage/snapshots/clone.ts';
import { SnapshotRegistry } from '../../src/storage/snapshots/registry.ts';
import { openSnapshotDevice } from '../../src/storage/snapshots/snapshot-device.ts';
import { type Volume, openVolume } from '../../src/storage/volume/volume.ts';
import { tempDir } from '../helpers/gateway.ts';

const E = 4096;
const COUNT = 16;
const log = pino({ level: 'silent' });
const fill = (byte: number): Buffer => Buffer.alloc(E, byte);

async function keys(store: ObjectStore, prefix = EXTENT_PREFIX): Promise<string[]> {
  const all: string[] = [];
  for await (const key of store.list(prefix)) all.push(key);
  return all.sort();
}

/** A writer on the volume in `path`, as the stack opens one (clone base, snapshots counted, then collecting). */
async function writer(path: string): Promise<{ store: FileObjectStore; volume: Volume; layer: ObjectExtents; registry: SnapshotRegistry; sources: readonly ExtentSource[]; codec: ExtentCodec; close(): Promise<void> }> {
  const store = new FileObjectStore(path);
  const { volume } = await openVolume(store, { mode: 'open' });
  const clone = await openCloneBase(volume, {}, log);
  // The volume's own codec (format 2: headed objects), as a gateway uses it.
  const codec = await openCodec(volume, undefined, store.description);
  const layer = await ObjectExtents.open(store, {
    extentSize: E, extentCount: COUNT, volumeId: volume.id, retained: new RetainedObjects(), collect: false, sources: clone.sources, base: clone.base, codec,
  });
  const registry = new SnapshotRegistry(store, volume, clone.descriptors);
  await registry.retainAll(layer.retained);
  layer.useEpoch(layer.maxEpoch + 1);
  layer.startCollecting();
  return {
    store, volume, layer, registry, sources: clone.sources, codec,
    async close() {
      await layer.close();
      await clone.close();
      await store.close();
    },
  };
}

async function readLayer(layer: ObjectExtents): Promise<Array<number | undefined>> {
  const bytes: Array<number | undefined> = [];
  for (let i = 0; i < COUNT; i++) bytes.push((await layer.fetch(i))?.[0]);
  return bytes;
}

describe('clones', () => {
  const dir = tempDir('clone-unit');
  after(() => dir.remove());
  const originPath = join(dir.path, 'origin');
  const clonePath = join(dir.path, 'clone');
  const grandPath = join(dir.path, 'grandclone');
  const u = undefined;

  it('reads through to the origin snapshot, writes its own objects, and never collects the origin\'s', async () => {
    await openVolume(new FileObjectStore(originPath), { mode: 'create', size: E * COUNT, extentSize: E });
    const origin = await writer(originPath);
    for (let i = 0; i < 8; i++) await origin.layer.put(i, fill(1));
    await origin.registry.create(origin.layer, 's1');
    for (let i = 0; i < 4; i++) await origin.layer.put(i, fill(2)); // the volume moves on
    await origin.layer.deleteExtents([6]);
    await origin.layer.collectGarbage();
    await origin.close();
    const originKeys = await keys(new FileObjectStore(originPath));

    const made = await createClone({ store: originPath, snapshot: 's1', to: clonePath, s3: {}, log });
    assert.equal(made.created, true);
    assert.deepEqual(made.volume.origin, { store: originPath, volumeId: origin.volume.id, snapshot: 's1' });
    // Cloning copied nothing: the clone's store holds its metadata only.
    assert.deepEqual(await keys(new FileObjectStore(clonePath), ''), ['s3nbd-volume.json']);
    // Run again: the same clone, not a second one.
    assert.equal((await createClone({ store: originPath, snapshot: 's1', to: clonePath, s3: {}, log })).created, false);
    assert.equal((await listClones(new FileObjectStore(originPath), 's1')).length, 1);

    const clone = await writer(clonePath);
    assert.deepEqual(await readLayer(clone.layer), [1, 1, 1, 1, 1, 1, 1, 1, u, u, u, u, u, u, u, u]);
    assert.equal(clone.layer.allocatedCount, 8);
    await clone.layer.put(1, fill(3));
    await clone.layer.put(9, fill(3));
    await clone.layer.deleteExtents([2]); // an origin object: a tombstone, never a deletion
    await clone.layer.put(3, fill(4));
    await clone.layer.put(3, fill(5)); // its own garbage: collected
    await clone.layer.collectGarbage();
    assert.deepEqual(await readLayer(clone.layer), [1, 3, u, 5, 1, 1, 1, 1, u, 3, u, u, u, u, u, u]);
    assert.deepEqual(await keys(new FileObjectStore(originPath)), originKeys, 'the origin\'s objects are untouched');
    const own = await keys(clone.store);
    assert.equal(own.length, 4, own.join(' ')); // 1, 9, 3 and the tombstone of 2
    assert.equal(own.filter((k) => k.endsWith('.zero')).length, 1);

    // A snapshot of the clone names origin objects (source 1) and its own (source 0).
    const c1 = await clone.registry.create(clone.layer, 'c1');
    assert.deepEqual(c1.sources, [{ store: originPath, volumeId: origin.volume.id, snapshot: 's1' }]);
    assert.deepEqual(c1.references.map((r) => [r.index, r.source]), [[0, 1], [1, 0], [3, 0], [4, 1], [5, 1], [6, 1], [7, 1], [9, 0]]);
    await clone.layer.put(0, fill(6));
    await clone.layer.collectGarbage();
    const { extents } = openSnapshotDevice(clone.store, clone.volume, (await new SnapshotRegistry(clone.store, clone.volume).load('c1'))!, 0, clone.codec, clone.sources);
    assert.deepEqual(await readLayer(extents), [1, 3, u, 5, 1, 1, 1, 1, u, 3, u, u, u, u, u, u]);
    await clone.close();
  });

  it('clones a clone\'s snapshot: three volumes\' objects, read through', async () => {
    await createClone({ store: clonePath, snapshot: 'c1', to: grandPath, s3: {}, log });
    const grand = await writer(grandPath);
    assert.deepEqual(await readLayer(grand.layer), [1, 3, u, 5, 1, 1, 1, 1, u, 3, u, u, u, u, u, u]);
    await grand.layer.put(4, fill(7));
    assert.deepEqual(await readLayer(grand.layer), [1, 3, u, 5, 7, 1, 1, 1, u, 3, u, u, u, u, u, u]);
    await grand.close();
  });

  it('a clone marked while its snapshot is being deleted: the manifest is put back, nothing collected, the deletion refused', async () => {
    const path = join(dir.path, 'race');
    await openVolume(new FileObjectStore(path), { mode: 'create', size: E * COUNT, extentSize: E });
    const w = await writer(path);
    for (let i = 0; i < 4; i++) await w.layer.put(i, fill(1));
    const r1 = await w.registry.create(w.layer, 'r1');
    for (let i = 0; i < 4; i++) await w.layer.put(i, fill(2));
    await w.layer.collectGarbage();
    const before = await keys(w.store);
    // The clone read the manifest just before it went, having marked itself first.
    const racing: ObjectStore = Object.assign(Object.create(w.store) as ObjectStore, {
      deleteMany: async (list: readonly string[]): Promise<void> => {
        await w.store.deleteMany(list);
        if (list.includes('snapshots/r1')) await w.store.put(cloneMarkerKey('r1', 'late-clone'), Buffer.from('{"store":"elsewhere","volumeId":"late-clone"}'));
      },
    });
    const registry = new SnapshotRegistry(racing, w.volume);
    await registry.retainAll(w.layer.retained);
    await assert.rejects(registry.delete(w.layer, 'r1'), (err: unknown) =>
      err instanceof UserError && err.code === 'S3NBD_SNAPSHOT_HAS_CLONES' && err.message.includes('late-clone'));
    const back = await new SnapshotRegistry(w.store, w.volume).load('r1');
    assert.deepEqual(back, r1, 'the same manifest, put back');
    await w.layer.collectGarbage();
    assert.deepEqual(await keys(w.store), before, 'nothing of r1 collected');
    await w.close();
  });

  it('refuses to delete a snapshot with clones, naming them, and forgets a clone that is gone', async () => {
    const origin = await writer(originPath);
    await assert.rejects(origin.registry.delete(origin.layer, 's1'), (err: unknown) =>
      err instanceof UserError && err.code === 'S3NBD_SNAPSHOT_HAS_CLONES' && err.message.includes(clonePath));
    // Gone for good: forgotten, and then the snapshot goes.
    const clones = await listClones(origin.store, 's1');
    assert.deepEqual(await missingClones(clones, {}, log), []);
    await rm(join(clonePath, 's3nbd-volume.json'));
    assert.equal((await missingClones(clones, {}, log)).length, 1);
    await origin.registry.delete(origin.layer, 's1', (c) => missingClones(c, {}, log));
    assert.deepEqual(await origin.registry.names(), []);
    assert.deepEqual(await keys(origin.store, 'clones/'), []);
    await origin.close();
  });
});
