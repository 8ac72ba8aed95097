// A volume's readiness (src/service/readiness.ts) on a fake clock: ready from the store's recent
// answers without a probe, a probe when they are stale or failing, a stalled probe ending in
// "unready" at its timeout, the lease, the shutdown; and the live status of a real storage
// stack (volume-status.ts), with the age of its oldest dirty data on a manual clock.

import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { pino } from 'pino';
import { VolumeReadiness } from '../../src/service/readiness.ts';
import { VolumeCounters } from '../../src/service/volume-counters.ts';
import { volumeStatus } from '../../src/service/volume-status.ts';
import { servedVolumeView } from '../../src/service/volume-view.ts';
import { WriteBackCache } from '../../src/storage/cache/write-back-cache.ts';
import { ObjectExtents } from '../../src/storage/extents/extent-objects.ts';
import { MemoryObjectStore } from '../../src/storage/objects/memory-object-store.ts';
import { openStorage } from '../../src/storage/stack.ts';
import { ManualClock } from '../helpers/manual-clock.ts';

describe('VolumeReadiness', () => {
  function setup(probe: (signal: AbortSignal) => Promise<void>, timeoutMs = 5000) {
    let now = 100_000;
    let probes = 0;
    let lease: 'held' | 'lost' | 'none' = 'held';
    let stopping = false;
    const counters = new VolumeCounters(() => now);
    const readiness = new VolumeReadiness({
      lease: () => lease, counters, stopping: () => stopping, now: () => now,
      probe: (signal) => { probes++; return probe(signal); },
    }, 5000, timeoutMs);
    return {
      readiness, counters,
      advance: (ms: number) => { now += ms; },
      probes: () => probes,
      setLease: (l: typeof lease) => { lease = l; },
      stop: () => { stopping = true; },
    };
  }

  it('is ready without a probe while the store answered in the last 5 s and nothing failed since', async () => {
    const t = setup(() => Promise.reject(new Error('must not probe')));
    t.counters.s3Request('PutObject', '200', 0.01, false);
    t.advance(4000);
    assert.deepEqual(await t.readiness.check(), { ready: true });
    // A 404 is an answer too.
    t.counters.s3Request('GetObject', '404', 0.01, false);
    t.advance(4000);
    assert.deepEqual(await t.readiness.check(), { ready: true });
    assert.equal(t.probes(), 0);
  });

  it('probes when the last answer is stale or a request failed since, and says why it is not ready', async () => {
    let fail = true;
    const t = setup(() => (fail ? Promise.reject(new Error('connect ECONNREFUSED 127.0.0.1:9000')) : Promise.resolve()));
    t.counters.s3Request('PutObject', '200', 0.01, false);
    t.counters.s3Request('PutObject', 'ECONNREFUSED', 0.01, false);
    assert.deepEqual(await t.readiness.check(), { ready: false, reason: 'S3 unreachable: connect ECONNREFUSED 127.0.0.1:9000' });
    fail = false;
    assert.deepEqual(await t.readiness.check(), { ready: true });
    assert.equal(t.probes(), 2);
    // The probe's success is fresh for 5 s: no new probe meanwhile.
    t.advance(4000);
    assert.deepEqual(await t.readiness.check(), { ready: true });
    assert.equal(t.probes(), 2);
    t.advance(2000);
    await t.readiness.check();
    assert.equal(t.probes(), 3);
  });

  it('a probe that gets no answer ends in "unready" at its timeout and is aborted; concurrent checks share one probe', async () => {
    let aborted = false;
    const t = setup((signal) => new Promise<void>((_resolve, reject) => {
      signal.addEventListener('abort', () => { aborted = true; reject(new Error('aborted')); });
    }), 50);
    const [a, b] = await Promise.all([t.readiness.check(), t.readiness.check()]);
    assert.deepEqual(a, { ready: false, reason: 'S3 unreachable: no answer within 0.05 s' });
    assert.deepEqual(b, a);
    assert.equal(t.probes(), 1);
    assert.ok(aborted);
  });

  it('is not ready with the lease lost, or while shutting down', async () => {
    const t = setup(() => Promise.resolve());
    t.setLease('lost');
    assert.match((await t.readiness.check()).reason!, /^lease lost/);
    t.setLease('held');
    assert.equal((await t.readiness.check()).ready, true);
    t.stop();
    assert.deepEqual(await t.readiness.check(), { ready: false, reason: 'shutting down' });
  });
});

describe('a volume\'s live status', () => {
  const dirs: string[] = [];
  after(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it('reports the oldest dirty data\'s age from the cache, 0 once uploaded', async () => {
    const dir = await mkdtemp(join(tmpdir(), 's3nbd-dirty-age-'));
    dirs.push(dir);
    const clock = new ManualClock();
    const lower = await ObjectExtents.open(new MemoryObjectStore(), { extentSize: 4096, extentCount: 16 });
    const cache = await WriteBackCache.open(lower, {
      cacheDir: dir, cacheBytes: 16 * 4096, memoryCacheBytes: 0, maxDirtyBytes: 8 * 4096, uploadConcurrency: 2, flushMode: 's3',
      uploadDelayMs: 60_000, log: pino({ level: 'silent' }), clock,
    });
    assert.equal(cache.status().oldestDirtySeconds, 0);
    await cache.write(0, 0, Buffer.alloc(4096, 1));
    await clock.advance(3000);
    await cache.write(1, 0, Buffer.alloc(4096, 2));
    await clock.advance(2000);
    assert.equal(cache.status().oldestDirtySeconds, 5);
    assert.equal(cache.status().dirtyExtents, 2);
    const flushed = cache.flush();
    await clock.advance(60_000);
    await flushed;
    assert.equal(cache.status().oldestDirtySeconds, 0);
    await cache.close();
  });

  it('is what the storage stack, the counters and the connections say', async () => {
    const dir = await mkdtemp(join(tmpdir(), 's3nbd-status-'));
    dirs.push(dir);
    const storage = await openStorage({
      log: pino({ level: 'silent' }), store: join(dir, 'store'), volume: { mode: 'open-or-create', size: 8 << 20, extentSize: 1 << 20 }, readOnly: false,
      memoryCacheBytes: 1 << 20, cache: { dir: join(dir, 'cache'), cacheBytes: 8 << 20, maxDirtyBytes: 4 << 20, uploadConcurrency: 2, flushMode: 's3', uploadDelayMs: 0, leaseTtlMs: 30_000, takeOver: false },
    });
    try {
      await storage.device.write(0, Buffer.alloc(1 << 20, 3), false);
      await storage.device.flush();
      const counters = new VolumeCounters();
      counters.cacheLookup('disk');
      counters.s3Request('PutObject', '500', 0.1, false);
      counters.s3Request('PutObject', '200', 0.1, true);
      counters.upload(0.1, 12345);
      const source = { name: 'vm1', storage, counters, connections: () => 3 };
      const status = volumeStatus(source, []);
      assert.equal(status.name, 'vm1');
      assert.equal(status.volumeId, storage.volume.id);
      assert.equal(status.store, `directory ${join(dir, 'store')}`);
      assert.equal(status.size, 8 << 20);
      assert.equal(status.lease, 'held');
      assert.equal(status.connections, 3);
      assert.equal(status.storedExtents, 1);
      assert.equal(status.cache!.uploadedExtents, 1);
      assert.equal(status.cache!.uploadedBytes, 12345);
      assert.equal(status.cache!.dirtyBytes, 0);
      assert.deepEqual(status.reads, { memory: 0, disk: 1, miss: 0 });
      assert.deepEqual(status.s3, { requests: 2, errors: 1, retries: 1 });
      // Through the view the admin endpoint sees: the snapshot list is read from the store.
      await storage.snapshots.create(storage.extents, 's1');
      const view = servedVolumeView({ ...source, stopping: () => false });
      const live = await view.status();
      assert.deepEqual(live.snapshots.map((s) => s.name), ['s1']);
      assert.deepEqual(await view.readiness(), { ready: true });
    } finally {
      await storage.close();
    }
  });
});
