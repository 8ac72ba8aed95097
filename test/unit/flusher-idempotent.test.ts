// Uploads are idempotent: a PUT or a batched DELETE that failed before it reached the store,
// or that took effect while its answer was lost, is retried, and the store ends up holding
// exactly what was acknowledged, also when the extent was written again before the retry and
// when a restart replays the journal and uploads everything once more.

import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { MemoryObjectStore } from '../../src/storage/objects/memory-object-store.ts';
import type { ObjectStore } from '../../src/storage/objects/object-store.ts';
import type { WriteBackOptions } from '../../src/storage/cache/write-back-cache.ts';
import { assertSameBytes } from '../helpers/bytes.ts';
import { FaultyStore } from '../helpers/faulty-store.ts';
import { tempDir } from '../helpers/gateway.ts';
import { pattern, readAll, runRandomWorkload } from '../helpers/model.ts';
import { E, open, storeContents } from '../helpers/cache.ts';
import { recordingClock, until } from '../helpers/manual-clock.ts';

const SIZE = 24 * E;

/** The cache as these tests open it: room for every extent, so only uploads are in play. */
function openCache(objects: ObjectStore, cacheDir: string, overrides: Partial<WriteBackOptions> = {}) {
  return open(objects, SIZE, cacheDir, { cacheBytes: 64 * E, maxDirtyBytes: 32 * E, ...overrides });
}

describe('flusher retries', () => {
  const dir = tempDir('flusher');
  after(() => dir.remove());

  it('counts the failures it injects: failNext fails before the store, applyThenFail after it', async () => {
    const inner = new MemoryObjectStore();
    const objects = new FaultyStore(inner);
    objects.failNext('put', 1);
    objects.applyThenFail('put', 1);
    await assert.rejects(objects.put('a', Buffer.from('1')));
    assert.equal(await inner.get('a'), undefined, 'failNext: the store never saw it');
    await assert.rejects(objects.put('a', Buffer.from('2')));
    assert.deepEqual(await inner.get('a'), Buffer.from('2'), 'applyThenFail: the store has it, the caller saw an error');
    await objects.put('a', Buffer.from('3'));
    assert.deepEqual(await inner.get('a'), Buffer.from('3'));
    assert.equal(objects.calls.put, 3);
  });

  it('leaves the store holding exactly what was acknowledged when uploads and deletes fail before or after taking effect', async () => {
    for (const seed of [21, 22, 23]) {
      const objects = new FaultyStore(new MemoryObjectStore());
      const { dev, cache } = await openCache(objects, `${dir.path}/random-${seed}`);
      try {
        objects.failNext('put', 3);
        objects.applyThenFail('put', 4);
        objects.failNext('deleteMany', 1);
        objects.applyThenFail('deleteMany', 2);
        const model = await runRandomWorkload(dev, { seed, rounds: 30, maxLength: 3 * E, flushes: true, afterStep: () => cache.checkInvariants() });
        await dev.flush();
        assert.equal(cache.status().dirtyExtents, 0);
        assertSameBytes(await storeContents(objects, SIZE), model, `seed ${seed}`);
        assert.ok(cache.status().uploadFailures >= 7, `seed ${seed}: the injected failures were met (${cache.status().uploadFailures})`);
      } finally {
        await cache.close();
      }
    }
  });

  it('uploads the newer bytes when an extent is written again while the retry of an applied upload waits', async () => {
    const objects = new FaultyStore(new MemoryObjectStore());
    // The retry's backoff is held until the second write is in: with full jitter a real backoff
    // can be shorter than any poll, and the retry would win the race the test is about.
    let releaseRetry = () => {};
    const retryHeld = new Promise<void>((resolve) => { releaseRetry = resolve; });
    const retries: number[] = [];
    const clock = recordingClock({ waits: retries, onSleep: () => retryHeld });
    const { dev, cache } = await openCache(objects, `${dir.path}/rewrite`, { clock });
    try {
      objects.applyThenFail('put', 1);
      await dev.write(0, pattern(E, 1), false);
      await until(() => retries.length === 1, 'the first PUT reached the store, failed and its retry waits');
      assert.equal(objects.calls.put, 1);
      await dev.write(0, pattern(E, 2), false);
      releaseRetry();
      await dev.flush();
      assertSameBytes(await storeContents(objects, SIZE), Buffer.concat([pattern(E, 2), Buffer.alloc(SIZE - E)]), 'the store holds the second write');
    } finally {
      releaseRetry();
      await cache.close();
    }
  });

  it('uploads again what the journal replays after a restart, whatever of it already reached the store', async () => {
    const objects = new FaultyStore(new MemoryObjectStore());
    const cacheDir = `${dir.path}/replay`;
    const first = await openCache(objects, cacheDir);
    const model = Buffer.alloc(SIZE);
    // Every upload takes effect, but the cache learns of none: at close, all is still dirty.
    objects.applyThenFail('put', 1_000_000);
    try {
      for (let i = 0; i < 6; i++) {
        const data = pattern(E + 100, 10 + i); // two extents each
        await first.dev.write(i * 3 * E, data, false);
        data.copy(model, i * 3 * E);
      }
      for (let i = 0; i < 400 && objects.calls.put < 12; i++) await new Promise((resolve) => setTimeout(resolve, 5));
      assert.ok(objects.calls.put >= 12, 'every extent was uploaded once');
      assert.equal(first.cache.status().dirtyExtents, 12, 'and the cache knows of none');
    } finally {
      await first.cache.close();
    }
    objects.clearFaults();
    objects.applyThenFail('put', 5);
    const second = await openCache(objects, cacheDir);
    try {
      await second.dev.flush();
      assertSameBytes(await storeContents(objects, SIZE), model, 'after replay and retries');
      assertSameBytes(await readAll(second.dev, 0, SIZE), model, 'through the cache');
    } finally {
      await second.cache.close();
    }
  });
});
