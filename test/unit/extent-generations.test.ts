// Immutable extent objects (docs/format.md): every upload is a new key, what it supersedes is
// deleted later, a zeroed extent is deleted or tombstoned, and no upload that lands late, from
// an earlier writer or from a failed attempt of ours, can come back as an extent's content.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { EXTENT_PREFIX, extentKey, extentKeyStem, parseExtentKey } from '../../src/storage/extents/extent-keys.ts';
import { ObjectExtents } from '../../src/storage/extents/extent-objects.ts';
import { SEQUENCE_SPAN, epochOf } from '../../src/storage/extents/generations.ts';
import { MemoryObjectStore } from '../../src/storage/objects/memory-object-store.ts';
import type { ObjectStore } from '../../src/storage/objects/object-store.ts';
import { LEASE_KEY, Lease } from '../../src/storage/volume/lease.ts';
import { VOLUME_KEY, openVolume } from '../../src/storage/volume/volume.ts';
import { FaultyStore } from '../helpers/faulty-store.ts';
import { until } from '../helpers/manual-clock.ts';

const E = 4096;
const COUNT = 16;
const fill = (byte: number): Buffer => Buffer.alloc(E, byte);

async function keys(store: ObjectStore): Promise<string[]> {
  const all: string[] = [];
  for await (const key of store.list(EXTENT_PREFIX)) all.push(key);
  return all.sort();
}

const open = (store: ObjectStore, complete = true) => ObjectExtents.open(store, { extentSize: E, extentCount: COUNT, complete });

describe('extent generations', () => {
  it('names every generation with its own key, and parses back only what it names', () => {
    assert.deepEqual(parseExtentKey(extentKey(5, 3 * SEQUENCE_SPAN + 7)), { index: 5, generation: 3 * SEQUENCE_SPAN + 7, zero: false });
    assert.deepEqual(parseExtentKey(extentKey(5, 9, true)), { index: 5, generation: 9, zero: true });
    assert.deepEqual(parseExtentKey(extentKeyStem(5)), { index: 5, generation: 0, zero: false }, 'format 1 key: generation 0');
    assert.equal(parseExtentKey(`${extentKeyStem(5)}.00000000000000`), undefined, 'generation 0 has no suffix');
    assert.equal(parseExtentKey(`${extentKeyStem(5)}.ffffffffffffff`), undefined, 'above 2^53');
    assert.equal(parseExtentKey(extentKey(5, 9).replace(/^extents\/../, 'extents/00')), undefined, 'wrong hash prefix');
  });

  it('never writes a key twice, and keeps one object per extent once the garbage is collected', async () => {
    const inner = new MemoryObjectStore();
    const store = new FaultyStore(inner);
    const written: string[] = [];
    const put = store.put.bind(store);
    store.put = (key, data) => { written.push(key); return put(key, data); };
    const layer = await open(store);
    for (let round = 0; round < 5; round++) for (let i = 0; i < 4; i++) await layer.put(i, fill(round * 10 + i));
    assert.equal(new Set(written).size, written.length, 'every PUT had a key of its own');
    assert.equal((await keys(inner)).length, 20, 'superseded objects are still there before collection');
    await layer.collectGarbage();
    const left = await keys(inner);
    assert.deepEqual(left.map((k) => parseExtentKey(k)!.index).sort(), [0, 1, 2, 3]);
    for (let i = 0; i < 4; i++) assert.deepEqual(await layer.fetch(i), fill(40 + i));
    assert.ok(store.calls.deleteMany <= 2, `garbage went in batches (${store.calls.deleteMany} requests)`);
    const reopened = await open(inner);
    for (let i = 0; i < 4; i++) assert.deepEqual(await reopened.fetch(i), fill(40 + i));
  });

  it('serves the newer writer\'s data when an earlier writer\'s upload lands late', async () => {
    const store = new MemoryObjectStore();
    const first = await open(store);
    const second = await open(store);
    second.useEpoch(first.maxEpoch + 5); // what the lease hands a later writer
    first.useEpoch(first.maxEpoch + 1);
    await second.put(2, fill(2));
    await first.put(2, fill(1)); // the earlier writer's PUT lands after the later one's
    const reopened = await open(store);
    assert.deepEqual(await reopened.fetch(2), fill(2));
  });

  it('tombstones a zeroed extent while an upload of it may have landed, so it never comes back', async () => {
    const inner = new MemoryObjectStore();
    const store = new FaultyStore(inner);
    const layer = await open(store);
    await layer.put(3, fill(1));
    store.applyThenFail('put', 1);
    await assert.rejects(layer.put(3, fill(2))); // landed, but we were told it failed
    await layer.deleteExtents([3]);
    assert.deepEqual(await (await open(inner)).fetch(3), undefined, 'zeros after a restart');
    await layer.collectGarbage();
    assert.deepEqual(await keys(inner), [], 'and no object left once collected');
  });

  it('tombstones while it does not know every object, and deletes the tombstones after recount()', async () => {
    const inner = new MemoryObjectStore();
    const writer = await open(inner);
    for (let i = 0; i < 3; i++) await writer.put(i, fill(i + 1));
    const layer = await open(inner, false);
    layer.useEpoch(layer.maxEpoch + 1);
    // An earlier writer's upload of extent 1 lands after the listing.
    await writer.put(1, fill(9));
    await layer.deleteExtents([0, 1, 2]);
    assert.equal((await keys(inner)).filter((k) => k.endsWith('.zero')).length, 3);
    await layer.collectGarbage();
    assert.ok((await keys(inner)).length >= 3, 'tombstones stay until recount()');
    assert.equal(await (await open(inner)).fetch(1), undefined, 'the late upload does not come back');
    await layer.recount();
    await layer.collectGarbage();
    assert.deepEqual(await keys(inner), []);
  });

  it('deletes an extent\'s only object at once when it knows every object', async () => {
    const inner = new MemoryObjectStore();
    const layer = await open(inner);
    await layer.put(4, fill(4));
    await layer.collectGarbage();
    await layer.deleteExtents([4]);
    assert.deepEqual(await keys(inner), []);
  });

  it('reads a format 1 object as generation 0 and collects it once superseded', async () => {
    const inner = new MemoryObjectStore();
    await inner.put(extentKeyStem(6), fill(6));
    const layer = await open(inner);
    assert.deepEqual(await layer.fetch(6), fill(6));
    await layer.put(6, fill(7));
    await layer.collectGarbage();
    const left = await keys(inner);
    assert.equal(left.length, 1);
    assert.ok(parseExtentKey(left[0]!)!.generation > 0);
  });

  it('says once that deleting garbage fails, and once that it works again', async () => {
    const inner = new MemoryObjectStore();
    const store = new FaultyStore(inner);
    const lines: Array<{ level: number; msg: string }> = [];
    const log = pino({ level: 'info' }, { write: (line: string) => { lines.push(JSON.parse(line) as { level: number; msg: string }); } });
    const layer = await ObjectExtents.open(store, { extentSize: E, extentCount: COUNT, log });
    store.failAll('deleteMany');
    await layer.put(0, fill(1));
    await layer.put(0, fill(2)); // the first object is garbage: its batch goes out within 2 s, and fails
    await until(() => lines.some((l) => l.level === 40), 'the failure is logged', 10_000);
    store.failAll('deleteMany', false);
    await until(() => lines.some((l) => l.level === 30), 'the recovery is logged', 30_000);
    assert.deepEqual(lines.map((l) => l.level), [40, 30], 'one warning, one line when it works again');
    assert.equal((await keys(inner)).length, 1);
    await layer.close();
  });

  it('finds the garbage a crash left behind at the next start', async () => {
    const inner = new MemoryObjectStore();
    const layer = await open(inner);
    for (let round = 0; round < 3; round++) await layer.put(0, fill(round));
    // "Crash": the superseded objects were never deleted.
    const next = await open(inner);
    assert.equal(next.garbage.pending, 2);
    await next.collectGarbage();
    assert.equal((await keys(inner)).length, 1);
    assert.deepEqual(await next.fetch(0), fill(2));
  });
});

describe('writer epochs', () => {
  const log = pino({ level: 'silent' });
  const lease = (store: ObjectStore, owner: string, minEpoch?: number) => Lease.acquire(store, { owner, ttlMs: 60_000, takeOver: true, log, onLost: () => {}, ...minEpoch ? { minEpoch } : {} });

  it('hands each taker of the lease a higher epoch, and never one below the bucket\'s', async () => {
    const store = new MemoryObjectStore();
    const a = await lease(store, 'a');
    const b = await lease(store, 'b');
    assert.ok(b.epoch > a.epoch);
    await store.deleteMany([LEASE_KEY]); // deleted by hand
    const c = await lease(store, 'c', 40);
    assert.equal(c.epoch, 40);
    for (const l of [a, b, c]) await l.release();
    const d = await lease(store, 'd', 2);
    assert.equal(d.epoch, 41, 'a released lease keeps its epoch for the next writer');
    await d.release();
  });

  it('gives a writer\'s objects the epoch of its lease', async () => {
    const store = new MemoryObjectStore();
    const layer = await open(store);
    const l = await lease(store, 'a', layer.maxEpoch + 1);
    layer.useEpoch(l.epoch);
    await layer.put(0, fill(1));
    assert.deepEqual((await keys(store)).map((k) => epochOf(parseExtentKey(k)!.generation)), [l.epoch]);
    await l.release();
  });
});

async function versionIn(store: ObjectStore): Promise<unknown> {
  return (JSON.parse((await store.get(VOLUME_KEY))!.toString()) as { version: unknown }).version;
}

describe('volume format upgrade', () => {
  const v1 = (id: string): Buffer => Buffer.from(`${JSON.stringify({ format: 's3nbd-volume', version: 1, id, size: 1 << 20, extentSize: E, createdAt: '2026-11-21T00:00:00.000Z' })}\n`);

  it('upgrades a format 1 volume when a writer opens it, and leaves it as it is for readers', async () => {
    const store = new MemoryObjectStore();
    await store.put(VOLUME_KEY, v1('vol-1'));
    const read = await openVolume(store, { mode: 'open', writer: false });
    assert.equal(read.volume.objects, undefined, 'format 1');
    assert.equal(await versionIn(store), 1, 'a reader writes nothing');
    const written = await openVolume(store, { mode: 'open-or-create', writer: true });
    assert.ok(written.volume.objects, 'format 2');
    assert.equal(written.volume.id, 'vol-1');
    assert.equal(await versionIn(store), 2);
    const again = await openVolume(store, { mode: 'open-or-create', writer: true });
    assert.ok(again.volume.objects);
  });
});
