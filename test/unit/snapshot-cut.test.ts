// Snapshots of a volume while the write-back cache writes it (cache/snapshot-cut.ts): each
// holds exactly the acknowledged writes before its instant, whatever is dirty, partial,
// uploading or rewritten at that instant, and writes are never held up by one.

import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { MemoryObjectStore } from '../../src/storage/objects/memory-object-store.ts';
import type { ExtentObjects } from '../../src/storage/extents/extent-objects.ts';
import { EXTENT_PREFIX } from '../../src/storage/extents/extent-keys.ts';
import { assertSameBytes } from '../helpers/bytes.ts';
import { E, open } from '../helpers/cache.ts';
import { tempDir } from '../helpers/gateway.ts';
import { until } from '../helpers/manual-clock.ts';
import { pattern, runRandomWorkload } from '../helpers/model.ts';

const COUNT = 24;
const SIZE = COUNT * E;

/** What a snapshot holds, read object by object. */
async function contents(lower: ExtentObjects, refs: Map<number, number>): Promise<Buffer> {
  const out = Buffer.alloc(SIZE);
  for (const [index, generation] of refs) {
    const data = await lower.fetchGeneration(index, generation);
    assert.ok(data, `extent ${index}: object of generation ${generation} is gone`);
    data.copy(out, index * E);
  }
  return out;
}

describe('snapshots of a volume being written', () => {
  const dir = tempDir('cut');
  after(() => dir.remove());

  it('holds the writes before the cut, not the rewrites that follow while its uploads wait', async () => {
    let uploads = false;
    const { cache, dev, lower } = await open(new MemoryObjectStore(), SIZE, `${dir.path}/held`, { maxDirtyBytes: 16 * E, cacheBytes: 24 * E, mayUpload: () => uploads });
    try {
      await dev.write(0, pattern(3 * E, 1), false);
      await dev.write(E / 2, pattern(100, 2), false); // dirty, in the journal and the slot
      const before = Buffer.alloc(SIZE);
      pattern(3 * E, 1).copy(before, 0);
      pattern(100, 2).copy(before, E / 2);
      const snapshot = cache.snapshot();
      // Writes after the cut are acknowledged at once, though nothing can be uploaded yet.
      await dev.write(0, pattern(2 * E, 3), false);
      await dev.trim(2 * E, E, false);
      await dev.write(5 * E, pattern(E, 4), false);
      uploads = true;
      assertSameBytes(await contents(lower, await snapshot), before, 'the snapshot');
      await dev.flush();
      const live = Buffer.alloc(SIZE);
      pattern(2 * E, 3).copy(live, 0);
      pattern(E, 4).copy(live, 5 * E);
      const now = await cache.snapshot();
      assertSameBytes(await contents(lower, now), live, 'a second snapshot, of the volume now');
    } finally {
      await cache.close();
    }
  });

  it('fills a partial extent rewritten after the cut from the object the store held at the cut', async () => {
    const store = new MemoryObjectStore();
    const first = await open(store, SIZE, `${dir.path}/base`);
    await first.dev.write(0, pattern(E, 7), false);
    await first.dev.flush();
    await first.cache.close();
    let uploads = false;
    const { cache, dev, lower } = await open(store, SIZE, `${dir.path}/partial`, { mayUpload: () => uploads });
    try {
      await dev.write(10, pattern(20, 8), false); // a PARTIAL entry: the rest is in the store
      const expected = Buffer.alloc(SIZE);
      pattern(E, 7).copy(expected, 0);
      pattern(20, 8).copy(expected, 10);
      const snapshot = cache.snapshot();
      await dev.write(100, pattern(50, 9), false);
      uploads = true;
      assertSameBytes(await contents(lower, await snapshot), expected, 'the snapshot');
    } finally {
      await cache.close();
    }
  });

  it('holds a change under way at the cut (past the copy-out, not yet applied), and resolves', async () => {
    let uploads = false;
    const { cache, dev, lower } = await open(new MemoryObjectStore(), SIZE, `${dir.path}/under-way`, { mayUpload: () => uploads });
    // The next change is cut in the middle: after the cache's beforeChange(), before it is applied.
    const changes = (cache as unknown as { changes: { beforeChange: (e: unknown) => Promise<void> } }).changes;
    const plain = changes.beforeChange;
    const cutDuringNextChange = (): Promise<Map<number, number>> => new Promise((resolve) => {
      changes.beforeChange = async (e) => {
        await plain(e);
        changes.beforeChange = plain;
        resolve(cache.snapshot());
      };
    });
    try {
      await dev.write(0, pattern(E, 1), false);
      await dev.write(2 * E, pattern(E, 2), false); // dirty, never uploaded
      const expected = Buffer.alloc(SIZE);
      pattern(E, 1).copy(expected, 0);
      pattern(E, 2).copy(expected, 2 * E);
      let snapshot = cutDuringNextChange();
      await dev.write(100, pattern(50, 3), false);
      pattern(50, 3).copy(expected, 100);
      uploads = true;
      assertSameBytes(await contents(lower, await snapshot), expected, 'the snapshot cut during a write');
      uploads = false;
      await dev.write(4 * E, pattern(E, 4), false);
      snapshot = cutDuringNextChange();
      await dev.trim(4 * E, E, false); // the store never had it: the discard forgets the entry
      uploads = true;
      assertSameBytes(await contents(lower, await snapshot), expected, 'the snapshot cut during a discard');
    } finally {
      await cache.close();
    }
  });

  it('matches the model at every cut of a random workload, and keeps its objects from the garbage collector', async () => {
    for (const seed of [31, 32, 33, 34]) {
      const store = new MemoryObjectStore();
      const { cache, dev, lower } = await open(store, SIZE, `${dir.path}/random-${seed}`, { maxDirtyBytes: 16 * E, cacheBytes: 24 * E, uploadDelayMs: 1 });
      const taken: Array<{ model: Buffer; refs: Promise<Map<number, number>> }> = [];
      try {
        let batch = 0;
        await runRandomWorkload(dev, {
          seed, rounds: 40, maxLength: 3 * E, flushes: false, afterStep: () => cache.checkInvariants(),
          afterBatch: (model) => {
            if (batch++ % 5 === 0) taken.push({ model: Buffer.from(model), refs: cache.snapshot() });
          },
        });
        await dev.flush();
        await lower.collectGarbage();
        for (const [k, t] of taken.entries()) assertSameBytes(await contents(lower, await t.refs), t.model, `seed ${seed} snapshot ${k}`);
        await until(() => cache.status().dirtyExtents === 0, 'all uploaded');
        // Released, the snapshots' objects are garbage: only the volume's own are left.
        for (const t of taken) cache.releaseSnapshot(await t.refs);
        await lower.collectGarbage();
        let objects = 0;
        for await (const _ of store.list(EXTENT_PREFIX)) objects++;
        assert.equal(objects, lower.allocatedCount, `seed ${seed}: one object per stored extent`);
      } finally {
        await cache.close();
      }
    }
  });
});
