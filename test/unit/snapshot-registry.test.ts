// Snapshots and the garbage collector (src/storage/snapshots/registry.ts): a writer never
// collects an object a snapshot holds, nor deletes one when it zeroes an extent; deleting a
// snapshot collects exactly the objects only it held; a snapshot reads back as it was taken;
// a lease taken from a dead holder says until when its manifest PUT may still land.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { UserError } from '../../src/errors.ts';
import { EXTENT_PREFIX, parseExtentKey } from '../../src/storage/extents/extent-keys.ts';
import { ObjectExtents } from '../../src/storage/extents/extent-objects.ts';
import { keyOf } from '../../src/storage/extents/object-census.ts';
import { RetainedObjects } from '../../src/storage/extents/retained-objects.ts';
import { MemoryObjectStore } from '../../src/storage/objects/memory-object-store.ts';
import type { ObjectStore } from '../../src/storage/objects/object-store.ts';
import type { Manifest } from '../../src/storage/snapshots/manifest.ts';
import { SnapshotRegistry } from '../../src/storage/snapshots/registry.ts';
import { openSnapshotDevice } from '../../src/storage/snapshots/snapshot-device.ts';
import { LATE_WRITE_MS, Lease } from '../../src/storage/volume/lease.ts';
import type { Volume } from '../../src/storage/volume/volume.ts';

const E = 4096;
const COUNT = 16;
const volume: Volume = { id: 'vol-1', size: E * COUNT, extentSize: E, createdAt: '2026-12-06T00:00:00.000Z' };
const fill = (byte: number): Buffer => Buffer.alloc(E, byte);

async function extentKeys(store: ObjectStore): Promise<string[]> {
  const all: string[] = [];
  for await (const key of store.list(EXTENT_PREFIX)) all.push(key);
  return all.sort();
}

/** A writer as the stack opens one: snapshots counted before anything is collected. */
async function writer(store: ObjectStore): Promise<{ layer: ObjectExtents; registry: SnapshotRegistry }> {
  const layer = await ObjectExtents.open(store, { extentSize: E, extentCount: COUNT, retained: new RetainedObjects(), collect: false });
  const registry = new SnapshotRegistry(store, volume);
  await registry.retainAll(layer.retained);
  layer.useEpoch(layer.maxEpoch + 1);
  layer.startCollecting();
  return { layer, registry };
}

async function readAll(store: ObjectStore, manifest: Manifest): Promise<Array<number | undefined>> {
  const { extents } = openSnapshotDevice(store, volume, manifest, 0);
  const bytes: Array<number | undefined> = [];
  for (let i = 0; i < COUNT; i++) bytes.push((await extents.fetch(i))?.[0]);
  return bytes;
}

/** The keys the volume reads, and those each manifest names: what must be in the bucket after a full collection. */
function referenced(layer: ObjectExtents, manifests: readonly Manifest[]): string[] {
  const keys = new Set(layer.currentObjects().map(keyOf));
  for (const m of manifests) for (const r of m.references) keys.add(keyOf({ index: r.index, generation: r.generation, zero: false }));
  return [...keys].sort();
}

describe('snapshot registry', () => {
  it('keeps every object a snapshot holds while the volume is rewritten and collected, and reads the snapshot back as taken', async () => {
    const store = new MemoryObjectStore();
    const { layer, registry } = await writer(store);
    for (let i = 0; i < 4; i++) await layer.put(i, fill(1));
    const s1 = await registry.create(layer, 's1');
    for (let round = 2; round < 5; round++) for (let i = 0; i < 4; i++) await layer.put(i, fill(round));
    await layer.collectGarbage();
    assert.deepEqual(await extentKeys(store), referenced(layer, [s1]), 'the current objects and s1\'s, nothing else');
    assert.deepEqual(await readAll(store, s1), [1, 1, 1, 1, ...Array<undefined>(COUNT - 4)]);
    for (let i = 0; i < 4; i++) assert.equal((await layer.fetch(i))?.[0], 4);
  });

  it('tombstones a zeroed extent whose only object a snapshot holds, instead of deleting it', async () => {
    const store = new MemoryObjectStore();
    const { layer, registry } = await writer(store);
    await layer.put(3, fill(7));
    const s1 = await registry.create(layer, 's1');
    await layer.deleteExtents([3]);
    await layer.collectGarbage();
    assert.equal(await layer.fetch(3), undefined, 'the volume reads zeros');
    assert.equal((await readAll(store, s1))[3], 7, 'the snapshot still has its data');
    assert.ok((await extentKeys(store)).some((k) => parseExtentKey(k)!.zero), 'through a tombstone');
    // Once the snapshot is gone, so are the object and, after it, the tombstone.
    await registry.delete(layer, 's1');
    await layer.collectGarbage();
    assert.deepEqual(await extentKeys(store), []);
  });

  it('deleting a snapshot collects exactly the objects only it held', async () => {
    const store = new MemoryObjectStore();
    const { layer, registry } = await writer(store);
    for (let i = 0; i < 8; i++) await layer.put(i, fill(1));
    const s1 = await registry.create(layer, 's1');
    for (let i = 0; i < 4; i++) await layer.put(i, fill(2)); // s1 alone holds 0-3 of round 1
    const s2 = await registry.create(layer, 's2');
    for (let i = 2; i < 6; i++) await layer.put(i, fill(3)); // s1 and s2 share 4-5 of round 1; s2 alone 2-3 of round 2
    await layer.collectGarbage();
    assert.deepEqual(await extentKeys(store), referenced(layer, [s1, s2]));

    const deletes = store.size;
    await registry.delete(layer, 's1');
    assert.deepEqual(await extentKeys(store), referenced(layer, [s2]), 'the four objects s1 alone held are gone');
    assert.equal(deletes - store.size, 4 + 1, 'four objects and the manifest');
    assert.deepEqual(await readAll(store, s2), [2, 2, 2, 2, 1, 1, 1, 1, ...Array<undefined>(COUNT - 8)]);
    assert.deepEqual(await registry.names(), ['s2']);

    await registry.delete(layer, 's2');
    assert.deepEqual(await extentKeys(store), referenced(layer, []));
    await assert.rejects(registry.delete(layer, 's2'), (err: unknown) => err instanceof UserError && err.code === 'S3NBD_NO_SNAPSHOT');
  });

  it('a writer that starts counts the snapshots before it collects: the garbage a crash left is collected, what snapshots hold is not', async () => {
    const store = new MemoryObjectStore();
    const first = await writer(store);
    for (let i = 0; i < 4; i++) await first.layer.put(i, fill(1));
    const s1 = await first.registry.create(first.layer, 's1');
    for (let round = 2; round < 4; round++) for (let i = 0; i < 4; i++) await first.layer.put(i, fill(round));
    await first.layer.close(); // killed: nothing collected

    const second = await writer(store);
    assert.equal(second.layer.garbage.pending, 4, 'round 2 is garbage; round 1 is s1\'s');
    await second.layer.collectGarbage();
    assert.deepEqual(await extentKeys(store), referenced(second.layer, [s1]));
    assert.deepEqual(await readAll(store, s1), [1, 1, 1, 1, ...Array<undefined>(COUNT - 4)]);

    // Killed between the manifest's deletion and the collection: the next writer collects the rest.
    await store.deleteMany(['snapshots/s1']);
    const third = await writer(store);
    await third.layer.collectGarbage();
    assert.deepEqual(await extentKeys(store), referenced(third.layer, []));
  });

  it('takes a name once; a refused create lets go of the objects it had kept', async () => {
    const store = new MemoryObjectStore();
    const { layer, registry } = await writer(store);
    await layer.put(0, fill(1));
    await registry.create(layer, 's1');
    await layer.put(1, fill(1));
    await assert.rejects(registry.create(layer, 's1'), (err: unknown) => err instanceof UserError && err.code === 'S3NBD_SNAPSHOT_EXISTS');
    await layer.put(1, fill(2));
    await layer.collectGarbage();
    assert.equal((await extentKeys(store)).filter((k) => parseExtentKey(k)!.index === 1).length, 1, 'extent 1\'s first object was not kept');
  });

  it('fails a read of a snapshot whose object is missing with EIO, never zeros', async () => {
    const store = new MemoryObjectStore();
    const { layer, registry } = await writer(store);
    await layer.put(2, fill(9));
    const s1 = await registry.create(layer, 's1');
    await store.deleteMany(await extentKeys(store)); // by hand
    const { extents } = openSnapshotDevice(store, volume, s1, 0);
    await assert.rejects(extents.fetch(2), (err: unknown) => (err as { errno?: string }).errno === 'EIO');
    await assert.rejects(extents.put(2, fill(1)), (err: unknown) => (err as { errno?: string }).errno === 'EROFS');
  });

  it('collects nothing before startCollecting(): a reader, or a writer before its lease', async () => {
    const store = new MemoryObjectStore();
    const { layer } = await writer(store);
    for (let round = 0; round < 3; round++) await layer.put(0, fill(round));
    const reader = await ObjectExtents.open(store, { extentSize: E, extentCount: COUNT, collect: false });
    assert.equal(reader.garbage.pending, 0);
    await reader.collectGarbage();
    assert.equal((await extentKeys(store)).length, 3);
  });
});

describe('late manifests (lease lateUntil)', () => {
  const log = pino({ level: 'silent' });
  const take = (store: ObjectStore, owner: string, onlyDeletes = false): Promise<Lease> =>
    Lease.acquire(store, { owner, ttlMs: 60_000, takeOver: true, log, onLost: () => undefined, onlyDeletes });

  it('marks a lease whose holder died, carries the mark through clean holders, and adds none for a holder that only deletes', async () => {
    const store = new MemoryObjectStore();
    const first = await take(store, 'a');
    assert.equal(first.lateUntil, 0, 'nobody before it');
    // `first` dies holding the lease; the next holder takes it over.
    const second = await take(store, 'b');
    assert.ok(second.lateUntil >= Date.now() + LATE_WRITE_MS, 'the dead holder\'s expiry plus LATE_WRITE_MS');
    await second.release();
    const third = await take(store, 'c', true);
    assert.equal(third.lateUntil, second.lateUntil, 'carried through a clean release');
    // `third` only deletes, and dies: it adds nothing, the mark is carried on.
    const fourth = await take(store, 'd');
    assert.equal(fourth.lateUntil, second.lateUntil);
    for (const l of [first, third, fourth]) await l.release();
  });
});
