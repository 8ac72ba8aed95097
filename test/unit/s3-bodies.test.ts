// S3 answers whose bodies are longer than what was asked for: a GET of a 1 MiB extent answered
// with `Content-Length: 4000000000` (once allocated in full), or with a chunked or
// close-delimited body that does not stop. A raw server on 127.0.0.1 sends them; the HTTP/1.1
// client, the direct S3 path and the SDK path (GETs, and the answers it reads whole: listings,
// PUT results) must refuse them before holding the body.

import assert from 'node:assert/strict';
import net from 'node:net';
import { after, describe, it } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { StorageError } from '../../src/storage/storage-error.ts';
import { Http1Client } from '../../src/storage/objects/s3/http1.ts';
import { S3ObjectStore } from '../../src/storage/objects/s3/s3-object-store.ts';

const MiB = 1 << 20;

/**
 * A server that answers every request with `head`, then sends body bytes as fast as the
 * client takes them for `ms` (a body without end), then closes.
 */
async function rawServer(head: string, ms = 3000): Promise<{ port: number; requests: () => number; close(): Promise<void> }> {
  let requests = 0;
  const sockets = new Set<net.Socket>();
  const junk = Buffer.alloc(256 * 1024, 0x61);
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    let answered = false;
    socket.on('data', () => {
      if (answered) return;
      answered = true;
      requests++;
      socket.write(head);
      const until = Date.now() + ms;
      const pump = (): void => {
        while (!socket.destroyed && Date.now() < until) if (!socket.write(junk)) return void socket.once('drain', pump);
        socket.destroy();
      };
      pump();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    requests: () => requests,
    close: () => new Promise((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
}

const HUGE = 'HTTP/1.1 200 OK\r\nETag: "e"\r\nContent-Length: 4000000000\r\n\r\n';
const CHUNKED = `HTTP/1.1 200 OK\r\nETag: "e"\r\nTransfer-Encoding: chunked\r\n\r\n${(64 * MiB).toString(16)}\r\n`;
const UNTIL_CLOSE = 'HTTP/1.1 200 OK\r\nETag: "e"\r\nConnection: close\r\n\r\n';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/**
 * Runs `fn`, failing if it takes over `ms` or if ArrayBuffers grow by more than `maxGrowth`
 * meanwhile (socket reads leave garbage too: the bounds are loose, the old code took GBs).
 */
async function bounded<T>(fn: () => Promise<T>, ms: number, maxGrowth: number): Promise<T> {
  gc();
  const before = process.memoryUsage().arrayBuffers;
  let peak = before;
  const sampler = setInterval(() => { peak = Math.max(peak, process.memoryUsage().arrayBuffers); }, 5);
  const started = Date.now();
  try {
    return await Promise.race([fn(), new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`still waiting after ${ms} ms`)), ms).unref())]);
  } finally {
    clearInterval(sampler);
    peak = Math.max(peak, process.memoryUsage().arrayBuffers);
    assert.ok(peak - before <= maxGrowth, `ArrayBuffers grew by ${((peak - before) / MiB).toFixed(0)} MiB in ${Date.now() - started} ms`);
  }
}

describe('S3 bodies longer than asked for', () => {
  const cleanups: Array<() => Promise<void> | void> = [];
  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });

  for (const [name, head] of [['a Content-Length of 4 GB', HUGE], ['a chunked body of 64 MiB', CHUNKED], ['a body until the connection closes', UNTIL_CLOSE]]) {
    it(`Http1Client refuses ${name} for a 1 MiB GET`, async () => {
      const server = await rawServer(head!);
      const client = new Http1Client(new URL(`http://127.0.0.1:${server.port}`), 1);
      cleanups.push(() => server.close(), () => client.close());
      const request = { method: 'GET', path: '/b/k', headers: { host: 'x' }, maxBody: MiB };
      await bounded(() => assert.rejects(client.request(request, new AbortController().signal), { code: 'ERR_BODY_TOO_LARGE' }), 2000, 32 * MiB);
    });
  }

  const credentials = { accessKeyId: 'test', secretAccessKey: 'test-secret' };
  const storeOf = (port: number): S3ObjectStore => new S3ObjectStore({
    bucket: 'b', endpoint: `http://127.0.0.1:${port}`, region: 'us-east-1', credentials, maxAttempts: 3, retryBaseMs: 1, retryCapMs: 2,
  });

  it('the direct S3 path retries the GET of an extent, then fails it with EIO, never holding the body', async () => {
    const server = await rawServer(HUGE);
    const store = storeOf(server.port);
    cleanups.push(() => server.close(), () => store.close());
    await bounded(() => assert.rejects(store.get('extents/00/000000000001', MiB), (err: unknown) => {
      assert.ok(err instanceof StorageError);
      assert.equal(err.errno, 'EIO');
      assert.match(err.message, /longer than the 1048576 bytes asked for .*gave up after 3 attempts/);
      return true;
    }), 5000, 32 * MiB);
    assert.equal(server.requests(), 3);
    assert.equal(store.stats.retries, 2);
  });

  it('without a limit from the caller, a GET takes at most the largest extent (32 MiB)', async () => {
    const server = await rawServer(HUGE);
    const store = storeOf(server.port);
    cleanups.push(() => server.close(), () => store.close());
    await bounded(() => assert.rejects(store.get('s3nbd-volume.json'), /longer than the 33554432 bytes asked for/), 5000, 32 * MiB);
  });

  it('answers the SDK reads whole (a listing, a conditional PUT) are capped too', async () => {
    for (const head of [HUGE.replace('ETag: "e"\r\n', 'Content-Type: application/xml\r\n'), CHUNKED]) {
      const server = await rawServer(head);
      const store = storeOf(server.port);
      cleanups.push(() => server.close(), () => store.close());
      await bounded(async () => {
        await assert.rejects((async () => { for await (const key of store.list('extents/')) assert.fail(key); })(), /longer than the 8388608 bytes asked for .*gave up after 3 attempts/);
        await assert.rejects(store.putIf('s3nbd-lease.json', Buffer.from('{}'), undefined), /longer than the 8388608 bytes asked for/);
      }, 10_000, 160 * MiB);
    }
  });

  it('the SDK path (AWS itself) refuses the body too', async () => {
    for (const head of [HUGE, CHUNKED]) {
      const server = await rawServer(head);
      // The endpoint from the environment, not the config: the store then stays on the SDK.
      const saved = process.env.AWS_ENDPOINT_URL_S3;
      process.env.AWS_ENDPOINT_URL_S3 = `http://127.0.0.1:${server.port}`;
      const store = new S3ObjectStore({ bucket: 'b', forcePathStyle: true, region: 'us-east-1', credentials, maxAttempts: 2, retryBaseMs: 1, retryCapMs: 2 });
      if (saved === undefined) delete process.env.AWS_ENDPOINT_URL_S3;
      else process.env.AWS_ENDPOINT_URL_S3 = saved;
      cleanups.push(() => server.close(), () => store.close());
      await bounded(() => assert.rejects(store.get('extents/00/000000000001', MiB), /longer than the 1048576 bytes asked for .*gave up after 2 attempts/), 5000, 64 * MiB);
      assert.equal(server.requests(), 2);
    }
  });
});
