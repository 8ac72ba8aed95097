// What each layer tells its VolumeTelemetry (src/telemetry.ts), the metrics' only source of
// events: the NBD session (driven by nbdsh, a real client), the S3 retry loop, the write-back
// cache's uploads and where its reads find their extents, and the extent layer's fetches.

import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { pino } from 'pino';
import { realClock } from '../../src/clock.ts';
import type { Export } from '../../src/protocol/handshake.ts';
import { NbdServer } from '../../src/protocol/server.ts';
import { WriteBackCache } from '../../src/storage/cache/write-back-cache.ts';
import { ExtentDevice } from '../../src/storage/extent-device.ts';
import { ObjectExtents } from '../../src/storage/extents/extent-objects.ts';
import { MemoryObjectStore } from '../../src/storage/objects/memory-object-store.ts';
import { S3Retry } from '../../src/storage/objects/s3/s3-retry.ts';
import { openStorage } from '../../src/storage/stack.ts';
import type { VolumeTelemetry } from '../../src/telemetry.ts';
import { requireTool, runOk } from '../helpers/tools.ts';

const log = pino({ level: 'silent' });
// Through constants: test-deps.test.ts takes a quoted first argument of run() for a tool it runs.
const GET = 'get';
const PUT = 'put';
const LIST = 'list';
const DELETE = 'delete';

type Call = [string, ...unknown[]];

function recording(): { telemetry: VolumeTelemetry; calls: Call[] } {
  const calls: Call[] = [];
  return {
    calls,
    telemetry: {
      nbdRequest: (command, result, seconds, bytes) => { assert.ok(seconds >= 0); calls.push(['nbd', command, result, bytes]); },
      s3Request: (operation, status, seconds, retry) => { assert.ok(seconds >= 0); calls.push(['s3', operation, status, retry]); },
      upload: (seconds, bytes) => { assert.ok(seconds >= 0); calls.push(['upload', bytes]); },
      fetch: (seconds, bytes) => { assert.ok(seconds >= 0); calls.push(['fetch', bytes]); },
      cacheLookup: (where) => { calls.push(['lookup', where]); },
    },
  };
}

describe('telemetry from each layer', () => {
  const dirs: string[] = [];
  after(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it('the NBD session: every request by command and result, with the payload bytes of reads and writes', async () => {
    requireTool('nbdsh');
    const storage = await openStorage({ log, store: 'memory:', volume: { mode: 'open-or-create', size: 1 << 20, extentSize: 1 << 16 }, readOnly: false, memoryCacheBytes: 1 << 20 });
    const { telemetry, calls } = recording();
    const exp: Export = { name: 'disk', description: 'test', device: storage.device, telemetry };
    const server = new NbdServer({ exports: { find: () => exp, list: () => [exp] }, log });
    const port = Number((await server.listen({ host: '127.0.0.1', port: 0 })).split(':').pop());
    try {
      await runOk('nbdsh', ['-u', `nbd://127.0.0.1:${port}/disk`, '-c', [
        'h.pwrite(b"x" * 4096, 8192)',
        'assert h.pread(4096, 8192) == b"x" * 4096',
        'h.flush()',
        'h.trim(65536, 0)',
        // libnbd would refuse a read past the end itself: let the server answer it.
        'h.set_strict_mode(0)',
        'try:\n    h.pread(4096, 1 << 20)\nexcept nbd.Error:\n    pass',
      ].join('\n')]);
    } finally {
      await server.shutdown(1000);
      await storage.close();
    }
    const nbd = calls.filter((c) => c[0] === 'nbd' && c[1] !== 'block_status');
    assert.deepEqual(nbd, [['nbd', 'write', 'ok', 4096], ['nbd', 'read', 'ok', 4096], ['nbd', 'flush', 'ok', 0], ['nbd', 'trim', 'ok', 0], ['nbd', 'read', 'EINVAL', 0]]);
  });

  it('the S3 retry loop: every attempt with its operation and status, retries marked', async () => {
    const { telemetry, calls } = recording();
    const retry = new S3Retry({
      stats: { get: 0, put: 0, delete: 0, list: 0, retries: 0, throttled: 0, exhausted: 0 }, closing: new AbortController().signal,
      requestTimeoutMs: 1000, stallWarnMs: 60_000, retryBaseMs: 1, retryCapMs: 1, telemetry,
      clock: { ...realClock, sleep: () => Promise.resolve(), random: () => 0 },
    });
    let n = 0;
    const failures = [
      Object.assign(new Error('reset'), { code: 'ECONNRESET' }),
      Object.assign(new Error('SlowDown'), { Code: 'SlowDown', $metadata: { httpStatusCode: 503 } }),
    ];
    assert.equal(await retry.run(GET, 'GET k', { maxAttempts: 5, signal: undefined }, () => (n < 2 ? Promise.reject(failures[n++]!) : Promise.resolve('ok'))), 'ok');
    await assert.rejects(retry.run(PUT, 'PUT k', { maxAttempts: 5, signal: undefined },
      () => Promise.reject(Object.assign(new Error('denied'), { Code: 'AccessDenied', $metadata: { httpStatusCode: 403 } }))));
    await retry.run(LIST, 'LIST', { maxAttempts: 1, signal: undefined }, () => Promise.resolve([]));
    await retry.run(DELETE, 'DELETE', { maxAttempts: 1, signal: undefined }, () => Promise.resolve());
    assert.deepEqual(calls, [
      ['s3', 'GetObject', 'ECONNRESET', false], ['s3', 'GetObject', '503', true], ['s3', 'GetObject', '200', true],
      ['s3', 'PutObject', '403', false], ['s3', 'ListObjectsV2', '200', false], ['s3', 'DeleteObjects', '200', false],
    ]);
  });

  it('the write-back cache and the extent layer: uploads, fetches, and reads from memory, disk or the store', async () => {
    const E = 4096;
    const objects = new MemoryObjectStore();
    const openCache = async (telemetry: VolumeTelemetry) => {
      const dir = await mkdtemp(join(tmpdir(), 's3nbd-telemetry-'));
      dirs.push(dir);
      const lower = await ObjectExtents.open(objects, { extentSize: E, extentCount: 16, telemetry });
      const cache = await WriteBackCache.open(lower, {
        cacheDir: dir, cacheBytes: 16 * E, memoryCacheBytes: 4 * E, maxDirtyBytes: 8 * E, uploadConcurrency: 4, flushMode: 's3', uploadDelayMs: 5, log, telemetry,
      });
      return { cache, dev: new ExtentDevice(cache, 16 * E, false) };
    };
    const first = recording();
    const a = await openCache(first.telemetry);
    await a.dev.write(0, Buffer.alloc(2 * E, 7), false); // whole extents: kept in memory too
    await a.dev.read(0, E);
    await a.dev.write(4 * E, Buffer.alloc(E / 2, 9), false); // part of one: in the cache directory only
    await a.dev.read(4 * E, E / 2);
    await a.dev.flush();
    await a.cache.close();
    assert.deepEqual(first.calls.filter((c) => c[0] === 'upload').map((c) => c[1]), [E, E, E], 'three extents uploaded, their bytes told');
    assert.deepEqual(first.calls.filter((c) => c[0] === 'lookup'), [['lookup', 'memory'], ['lookup', 'disk']]);

    // A fresh cache over the same store: the first read fetches, the second finds it in memory.
    const second = recording();
    const b = await openCache(second.telemetry);
    assert.deepEqual((await b.dev.read(E, E))[0]!.data, Buffer.alloc(E, 7));
    await b.dev.read(E, E);
    await b.dev.read(8 * E, E); // never written: no lookup, no fetch
    await b.cache.close();
    assert.deepEqual(second.calls, [['lookup', 'miss'], ['fetch', E], ['lookup', 'memory']]);
  });
});
