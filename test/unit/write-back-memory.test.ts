// What the write-back cache holds in memory for reads it did not get a byte budget for: a read
// of one byte fetches a whole extent, and read-ahead fetches extents no request waits for.
// Fetches in flight must stay within MAX_FETCH_BYTES however many reads come (in the object
// extent layer, so read-only serving too), and read-ahead must not queue behind them.

import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { pino } from 'pino';
import { extentKeyStem } from '../../src/storage/extents/extent-keys.ts';
import { MemoryObjectStore } from '../../src/storage/objects/memory-object-store.ts';
import { MAX_FETCH_BYTES, ObjectExtents } from '../../src/storage/extents/extent-objects.ts';
import { DirectExtentStore } from '../../src/storage/extents/direct-extent-store.ts';
import { WriteBackCache } from '../../src/storage/cache/write-back-cache.ts';
import { tempDir } from '../helpers/gateway.ts';

const E = 4 * 1024 * 1024;
const EXTENTS = 128;
const MAX_FETCHES = MAX_FETCH_BYTES / E;

/** A memory store whose GETs wait until released, counting how many wait at once. */
class GatedStore extends MemoryObjectStore {
  waiting = 0;
  peak = 0;
  gets = 0;
  private open: () => void = () => undefined;
  private readonly gate = new Promise<void>((resolve) => { this.open = resolve; });
  override async get(key: string): Promise<Buffer | undefined> {
    this.gets++;
    this.peak = Math.max(this.peak, ++this.waiting);
    await this.gate;
    this.waiting--;
    return super.get(key);
  }
  release(): void {
    this.open();
  }
}

describe('WriteBackCache fetch memory', () => {
  const dir = tempDir('wbc-memory');
  after(() => dir.remove());

  async function open(name: string): Promise<{ store: GatedStore; cache: WriteBackCache }> {
    const store = new GatedStore();
    const extent = Buffer.alloc(E, 7); // one buffer under every key: the memory store shares it
    for (let i = 0; i < EXTENTS; i++) await store.put(extentKeyStem(i), extent);
    const lower = await ObjectExtents.open(store, { extentSize: E, extentCount: EXTENTS });
    const cache = await WriteBackCache.open(lower, {
      cacheDir: `${dir.path}/${name}`, cacheBytes: 4 * E, memoryCacheBytes: 2 * E, maxDirtyBytes: 2 * E, uploadConcurrency: 2,
      flushMode: 's3', uploadDelayMs: 5, log: pino({ level: 'silent' }),
    });
    return { store, cache };
  }

  /** One-byte reads of every other extent (so none is sequential): at most MAX_FETCHES fetches at once. */
  async function scatteredReads(store: GatedStore, read: (index: number) => Promise<Buffer | undefined>): Promise<void> {
    const reads = Array.from({ length: EXTENTS / 2 }, (_, i) => read(2 * i));
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.ok(store.peak <= MAX_FETCHES, `${store.peak} fetches of ${E / 1048576} MiB in flight`);
    store.release();
    for (const data of await Promise.all(reads)) assert.equal(data?.[0], 7);
  }

  it(`keeps at most ${MAX_FETCHES} whole-extent fetches in flight for one-byte reads of ${EXTENTS / 2} extents`, async () => {
    const { store, cache } = await open('scattered');
    try {
      await scatteredReads(store, (index) => cache.read(index, 0, 1));
    } finally {
      store.release();
      await cache.close();
    }
  });

  it('keeps the limit without the write-back cache too (read-only serving)', async () => {
    const { store, cache } = await open('read-only');
    await cache.close();
    const lower = new DirectExtentStore(await ObjectExtents.open(store, { extentSize: E, extentCount: EXTENTS }), 2 * E);
    try {
      await scatteredReads(store, (index) => lower.read(index, 0, 1));
    } finally {
      store.release();
      await lower.close();
    }
  });

  it('does not queue read-ahead behind a full fetch limit', async () => {
    const { store, cache } = await open('ahead');
    try {
      // Pairs of sequential reads far apart: each second read starts 8 extents of read-ahead.
      const reads: Array<Promise<Buffer | undefined>> = [];
      for (let at = 0; at + 1 < EXTENTS; at += 16) reads.push(cache.read(at, 0, 1), cache.read(at + 1, 0, 1));
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.ok(store.peak <= MAX_FETCHES, `${store.peak} fetches in flight`);
      store.release();
      for (const data of await Promise.all(reads)) assert.equal(data?.[0], 7);
      // The 16 reads themselves, and no more read-ahead than could start while fetches were free.
      assert.ok(store.gets <= 16 + MAX_FETCHES, `${store.gets} GETs for 16 reads`);
    } finally {
      store.release();
      await cache.close();
    }
  });
});
