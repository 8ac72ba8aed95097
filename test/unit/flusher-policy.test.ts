// The write-back flusher's upload policy and retries (src/storage/cache/flusher.ts), driven by
// a manual clock: when an extent is due, how retries back off, and what happens when the store
// refuses uploads in a way retrying cannot fix. No real sleeps decide anything here.

import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { pino } from 'pino';
import { REFUSED_RETRY_MS, RETRY_BASE_MS, SCATTERED_IDLE_MS } from '../../src/storage/cache/flusher.ts';
import { MemoryObjectStore } from '../../src/storage/objects/memory-object-store.ts';
import { StorageError } from '../../src/storage/storage-error.ts';
import { E, open } from '../helpers/cache.ts';
import { FaultyStore } from '../helpers/faulty-store.ts';
import { tempDir } from '../helpers/gateway.ts';
import { ManualClock, settle, until } from '../helpers/manual-clock.ts';

const UPLOAD_DELAY_MS = 1000;

/** A cache over a faulty memory store, on a manual clock, with its log lines kept. */
async function setUp(cacheDir: string) {
  const objects = new FaultyStore(new MemoryObjectStore());
  const clock = new ManualClock();
  const lines: Array<{ level: number; msg: string; code?: string; errno?: string }> = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(line) as (typeof lines)[number]);
      done();
    },
  });
  const { cache, dev } = await open(objects, 16 * E, cacheDir, {
    cacheBytes: 32 * E, maxDirtyBytes: 16 * E, uploadDelayMs: UPLOAD_DELAY_MS, log: pino({ level: 'debug' }, sink), clock,
  });
  return { objects, clock, lines, cache, dev };
}

describe('the flusher, on a manual clock', () => {
  const dir = tempDir('flusher-policy');
  after(() => dir.remove());

  it('uploads an extent once it has gone unchanged for the upload delay, and not before', async () => {
    const { objects, clock, cache, dev } = await setUp(`${dir.path}/delay`);
    try {
      // Under E / 16: a slot write, so the entry stays once clean. It reaches the extent's end,
      // as a writer going forward does.
      await dev.write(E - 100, Buffer.alloc(100, 1), false);
      await clock.advance(UPLOAD_DELAY_MS - 100);
      assert.equal(objects.calls.put, 0, 'not uploaded while the extent may still change');
      await clock.advance(200);
      await until(() => objects.calls.put === 1 && cache.status().dirtyExtents === 0, 'the upload is done');
      cache.checkInvariants();
      assert.deepEqual([...cache.states()], [[0, 'CLEAN']]);
    } finally {
      await cache.close();
    }
  });

  it('waits longer for an extent whose last change stopped short of its end: random writes come back', async () => {
    const { objects, clock, cache, dev } = await setUp(`${dir.path}/scattered`);
    try {
      await dev.write(E / 2, Buffer.alloc(100, 1), false);
      await clock.advance(SCATTERED_IDLE_MS - 100);
      assert.equal(objects.calls.put, 0, 'not uploaded after the upload delay');
      await dev.write(E / 4, Buffer.alloc(100, 2), false);
      await clock.advance(SCATTERED_IDLE_MS - 100);
      assert.equal(objects.calls.put, 0, 'a second write starts the wait again');
      await clock.advance(200);
      await until(() => objects.calls.put === 1 && cache.status().dirtyExtents === 0, 'uploaded once quiet for SCATTERED_IDLE_MS');
      await dev.write(E / 2, Buffer.alloc(E / 2, 3), false);
      await clock.advance(UPLOAD_DELAY_MS + 100);
      await until(() => objects.calls.put === 2, 'a change up to the end: uploaded after the upload delay');
    } finally {
      await cache.close();
    }
  });

  it('uploads an extent rewritten whole since its last upload after the upload delay, even when its last change stopped short of its end', async () => {
    // A writer going forward whose requests arrive out of order: the kernel's writeback over
    // several connections (nbdfuse), or a client with a deep queue. The extent is done with.
    const { objects, clock, cache, dev } = await setUp(`${dir.path}/reordered`);
    try {
      await dev.write(E / 2, Buffer.alloc(E / 2, 1), false);
      await dev.write(0, Buffer.alloc(E / 2, 2), false);
      await clock.advance(UPLOAD_DELAY_MS + 100);
      await until(() => objects.calls.put === 1 && cache.status().dirtyExtents === 0, 'uploaded after the upload delay');
      // After that upload, a small change stopping short of the end is scattered again.
      await dev.write(E / 4, Buffer.alloc(100, 3), false);
      await clock.advance(SCATTERED_IDLE_MS - 100);
      assert.equal(objects.calls.put, 1, 'a small change after the upload waits SCATTERED_IDLE_MS');
      await clock.advance(200);
      await until(() => objects.calls.put === 2, 'then it is uploaded');
    } finally {
      await cache.close();
    }
  });

  it('uploads an extent that keeps changing after 10 s, not after each write', async () => {
    const { objects, clock, cache, dev } = await setUp(`${dir.path}/age`);
    try {
      for (let t = 0; t < 9_500; t += 500) {
        await dev.write(0, Buffer.alloc(E, t / 500 + 1), false);
        await clock.advance(500);
      }
      assert.equal(objects.calls.put, 0, 'rewritten every 500 ms: never quiet for the upload delay');
      for (let t = 9_500; t < 10_600; t += 500) {
        await dev.write(0, Buffer.alloc(E, 99), false);
        await clock.advance(500);
      }
      await until(() => objects.calls.put === 1, 'the extent is uploaded once it has been dirty for 10 s');
    } finally {
      await cache.close();
    }
  });

  it('backs off exponentially with full jitter between retries, and uploads once the store answers', async () => {
    const { objects, clock, cache, dev } = await setUp(`${dir.path}/backoff`);
    try {
      clock.randomValue = 0.5;
      objects.failNext('put', 3);
      await dev.write(0, Buffer.alloc(E, 1), false);
      await clock.advance(UPLOAD_DELAY_MS);
      await until(() => objects.calls.put === 1, 'the first attempt');
      // Waits of random() x 200, 400, 800 ms: 100, 200 and 400 ms here.
      for (const [n, wait] of [[2, RETRY_BASE_MS / 2], [3, RETRY_BASE_MS], [4, RETRY_BASE_MS * 2]] as const) {
        await clock.advance(wait - 10);
        assert.equal(objects.calls.put, n - 1, `attempt ${n} waits its backoff`);
        await clock.advance(10);
        await until(() => objects.calls.put === n, `attempt ${n}`);
      }
      await until(() => cache.status().dirtyExtents === 0, 'uploaded');
      assert.equal(cache.status().uploadFailures, 3);
      assert.deepEqual(clock.sleeps, [100, 200, 400]);
    } finally {
      await cache.close();
    }
  });

  it('says once that the store refuses uploads, fails FLUSH with its errno, keeps taking writes, and carries on once it is fixed', async () => {
    const { objects, clock, lines, cache, dev } = await setUp(`${dir.path}/refused`);
    try {
      objects.faultError = () => new StorageError('EPERM', 'PUT s3://b/e: AccessDenied (HTTP 403): Access Denied', { permanent: true });
      objects.failAll('put');
      await dev.write(0, Buffer.alloc(E, 1), false);
      await assert.rejects(dev.flush(), (err: StorageError) => err.errno === 'EPERM', 'FLUSH fails instead of waiting for ever');
      await dev.write(E, Buffer.alloc(E, 2), false); // writes are still acknowledged from the journal
      await assert.rejects(dev.flush(), (err: StorageError) => err.errno === 'EPERM', 'and so does the next FLUSH, at once');
      await clock.advance(UPLOAD_DELAY_MS + 100);
      await until(() => objects.calls.put === 2, 'both extents were tried');
      const refused = lines.filter((l) => l.code === 'S3NBD_UPLOADS_REFUSED');
      assert.equal(refused.length, 1, 'one line, not one per attempt');
      assert.equal(refused[0]!.level, 50);
      assert.match(refused[0]!.msg, /retrying cannot fix this.*Fix: give the credentials s3:PutObject/);
      assert.equal(lines.filter((l) => l.msg.includes('failed; retrying')).length, 0, 'no warn line per retry');

      await clock.advance(REFUSED_RETRY_MS / 2);
      assert.equal(objects.calls.put, 2, 'a refused upload is not retried at full speed');
      objects.failAll('put', false); // the bucket policy is fixed
      await clock.advance(REFUSED_RETRY_MS / 2 + 100);
      await until(() => cache.status().dirtyExtents === 0, 'both uploaded after the slow retry');
      assert.ok(lines.some((l) => l.msg.startsWith('uploads resumed')));
      await dev.flush();
      assert.equal(lines.filter((l) => l.code === 'S3NBD_UPLOADS_REFUSED').length, 1);
      await settle();
      cache.checkInvariants();
    } finally {
      await cache.close();
    }
  });
  it('fails a write that would pass --max-dirty while the store refuses uploads, instead of waiting for ever', async () => {
    const { objects, cache, dev } = await setUp(`${dir.path}/refused-full`);
    try {
      objects.faultError = () => new StorageError('EPERM', 'PUT s3://b/e: AccessDenied (HTTP 403): Access Denied', { permanent: true });
      objects.failAll('put');
      for (let i = 0; i < 16; i++) await dev.write(i * E, Buffer.alloc(E, i + 1), false); // --max-dirty is 16 extents
      // The 17th waits for room, which makes the flusher upload at once: refused, so the write fails.
      await assert.rejects(dev.write(16 * E, Buffer.alloc(E, 99), false), (err: StorageError) => err.errno === 'EPERM');
      await dev.write(3 * E, Buffer.alloc(E, 42), false); // an extent already dirty takes no more room
      assert.equal(cache.status().dirtyExtents, 16);
      cache.checkInvariants();
    } finally {
      await cache.close();
    }
  });
});
