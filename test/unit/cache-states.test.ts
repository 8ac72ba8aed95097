// The write-back cache's state table as code (src/storage/cache/entries.ts): stateOf() names
// the row each entry is in as a workload walks it through the table, and checkInvariants()
// fails when the indexes disagree with the entries' states.

import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { extentKeyStem } from '../../src/storage/extents/extent-keys.ts';
import { MemoryObjectStore } from '../../src/storage/objects/memory-object-store.ts';
import { E, open } from '../helpers/cache.ts';
import { FaultyStore } from '../helpers/faulty-store.ts';
import { tempDir } from '../helpers/gateway.ts';
import { until } from '../helpers/manual-clock.ts';

/** A store whose puts and deletes can be held, to look at the cache while one is in flight. */
class GatedStore extends FaultyStore {
  private gate: Promise<void> | undefined;
  private open: () => void = () => undefined;
  held = 0;

  hold(): void {
    this.gate = new Promise((resolve) => { this.open = resolve; });
  }

  release(): void {
    this.gate = undefined;
    this.open();
  }

  override async put(key: string, data: Buffer): Promise<void> {
    await this.wait();
    return super.put(key, data);
  }

  override async deleteMany(keys: readonly string[]): Promise<void> {
    await this.wait();
    return super.deleteMany(keys);
  }

  private async wait(): Promise<void> {
    if (!this.gate) return;
    this.held++;
    await this.gate;
    this.held--;
  }
}

async function setUp(cacheDir: string) {
  const objects = new GatedStore(new MemoryObjectStore());
  await objects.put(extentKeyStem(1), Buffer.alloc(E, 7)); // extent 1 is stored before the cache opens
  // Nothing is uploaded unless a flush asks.
  return { objects, ...await open(objects, 8 * E, cacheDir, { uploadDelayMs: 3_600_000 }) };
}

describe('the write-back cache state table', () => {
  const dir = tempDir('cache-states');
  after(() => dir.remove());

  it('names each entry by its row as writes, discards, uploads and deletes walk it through the table', async () => {
    const { objects, cache, dev } = await setUp(`${dir.path}/walk`);
    const state = (index: number) => {
      cache.checkInvariants();
      return cache.states().get(index);
    };
    try {
      await dev.write(0, Buffer.alloc(100, 1), false);
      assert.equal(state(0), 'PARTIAL', 'a small write into an extent the store does not have');
      await dev.write(2 * E, Buffer.alloc(E, 2), false);
      assert.equal(state(2), 'DIRTY', 'a whole extent');
      await dev.trim(E, E, false);
      assert.equal(state(1), 'ZERO-DIRTY', 'a stored extent discarded');

      objects.hold();
      const uploading = dev.flush();
      await until(() => objects.held === 3, 'the uploads of extents 0 and 2 and the delete of extent 1 are in flight');
      assert.equal(state(2), 'UPLOADING');
      assert.equal(state(1), 'DELETING');
      assert.equal(state(0), 'UPLOADING', 'its zero base was filled in for the upload');
      await dev.write(2 * E, Buffer.alloc(E, 3), false);
      assert.equal(state(2), 'REWRITTEN-WHILE-UPLOADING');
      await dev.trim(0, E, false);
      assert.equal(state(0), 'DISCARDED-WHILE-UPLOADING');
      await dev.write(E, Buffer.alloc(100, 4), false);
      assert.equal(state(1), 'REWRITTEN-WHILE-UPLOADING', 'written while its delete is in flight');
      objects.release();
      await uploading;
      assert.equal(state(2), 'DIRTY', 'the rewrite is still to be uploaded');
      assert.equal(state(0), 'ZERO-DIRTY');

      await dev.flush();
      assert.equal(state(1), 'CLEAN', 'uploaded, and kept in its slot');
      assert.equal(state(0), undefined, 'deleted: the store alone describes it');
      assert.equal(state(2), undefined, 'a whole-extent write lives in the journal; once uploaded the store has it');
      assert.deepEqual([...cache.states().values()], ['CLEAN']);
    } finally {
      objects.release();
      await cache.close();
    }
  });

  it('checkInvariants() fails when an index disagrees with the states', async () => {
    const { cache, dev } = await setUp(`${dir.path}/broken`);
    // The test reaches into the table on purpose, to break what the code never should.
    const table = (cache as unknown as { table: { dirty: Map<number, unknown>; dirtySlotCount: number } }).table;
    try {
      await dev.write(0, Buffer.alloc(100, 1), false);
      cache.checkInvariants();
      table.dirtySlotCount++;
      assert.throws(() => cache.checkInvariants(), /dirtySlots is 2, 1 entries count/);
      table.dirtySlotCount--;
      const entry = table.dirty.get(0);
      table.dirty.delete(0);
      assert.throws(() => cache.checkInvariants(), /extent 0 \(PARTIAL\): dirty but not in dirty/);
      table.dirty.set(0, entry);
      cache.checkInvariants();
    } finally {
      await cache.close();
    }
  });
});
