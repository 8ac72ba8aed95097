// A real gateway in front of MinIO whose extent GETs are answered, through a small proxy in
// this file, with `Content-Length: 4000000000` and a body that does not end: the read must fail
// (EIO, after the store's retries) without the gateway's RSS growing (it used to allocate the
// whole 4 GB, then fill it as the bytes came).

import assert from 'node:assert/strict';
import net from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { peakMemoryBytes } from '../../src/memory-budget.ts';
import { HEADER_BYTES } from '../../src/storage/format/object-header.ts';
import { s3ConnectionsFor } from '../../src/storage/stack.ts';
import { startGateway, tempDir } from '../helpers/gateway.ts';
import { credentialsEnv, type S3TestServer, startMinio } from '../helpers/minio.ts';
import { MiB, mib, sampleRss } from '../helpers/rss.ts';
import { requireTool, run, runOk } from '../helpers/tools.ts';

const BUCKET = 's3nbd-memory';
/** What the proxy declares for an extent (its bytes then come as fast as the gateway takes them). */
const LENGTH = 4_000_000_000;

/** Forwards to `target`; while `hostile()`, a GET of an extent is answered with a 4 GB body that lasts 3 s. */
async function interceptingProxy(target: URL, hostile: () => boolean): Promise<{ endpoint: string; intercepted: () => number; close(): Promise<void> }> {
  let intercepted = 0;
  const sockets = new Set<net.Socket>();
  const junk = Buffer.alloc(256 * 1024, 0x61);
  const server = net.createServer((client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => undefined);
    const upstream = net.connect(Number(target.port), target.hostname);
    sockets.add(upstream);
    const hangUp = (): void => { client.destroy(); };
    upstream.on('close', () => sockets.delete(upstream));
    upstream.on('close', hangUp);
    upstream.on('error', hangUp);
    upstream.pipe(client);
    client.on('data', (data: Buffer) => {
      // One request at a time per connection (http1.ts): a request line starts a chunk.
      if (hostile() && /^GET \S*\/extents\//.test(data.toString('latin1', 0, 200))) {
        intercepted++;
        upstream.unpipe(client);
        upstream.off('close', hangUp);
        upstream.off('error', hangUp);
        upstream.on('error', () => undefined);
        upstream.destroy();
        client.write(`HTTP/1.1 200 OK\r\nETag: "x"\r\nContent-Length: ${LENGTH}\r\n\r\n`);
        const until = Date.now() + 3000;
        const pump = (): void => {
          while (!client.destroyed && Date.now() < until) if (!client.write(junk)) return void client.once('drain', pump);
          client.destroy();
        };
        pump();
        return;
      }
      if (!upstream.destroyed) upstream.write(data);
    });
    client.on('end', () => upstream.end());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    intercepted: () => intercepted,
    close: () => new Promise((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
}

describe('gateway memory with an S3 server that sends oversized bodies', () => {
  const dir = tempDir('memory-s3');
  let s3: S3TestServer;
  let env: NodeJS.ProcessEnv;
  before(async () => {
    requireTool('qemu-io');
    s3 = await startMinio();
    await s3.createBucket(BUCKET);
    env = credentialsEnv(s3);
  });
  after(async () => {
    await s3.stop();
    dir.remove();
  });

  it('fails the read with EIO and keeps its RSS when a 1 MiB extent is answered with Content-Length: 4000000000', async () => {
    let hostile = false;
    const proxy = await interceptingProxy(new URL(s3.endpoint), () => hostile);
    try {
      const store = `s3://${BUCKET}/vol-${Date.now()}`;
      const args = ['--store', store, '--s3-endpoint', proxy.endpoint, '--size', '64M', '--memory-cache', '64M'];
      // Write and flush one extent, then serve it from a gateway with an empty cache.
      const first = await startGateway(args, { socket: join(dir.path, 'a.sock'), env });
      await runOk('qemu-io', ['-f', 'raw', first.uri, '-c', 'write -P 0xab 0 1M', '-c', 'flush']);
      assert.equal(await first.stop(), 0);
      const second = await startGateway(args, { socket: join(dir.path, 'b.sock'), env });
      try {
        const rss = sampleRss(second.process.pid!, 20);
        const start = rss.now();
        hostile = true;
        const started = Date.now();
        const read = await run('qemu-io', ['-f', 'raw', second.uri, '-c', 'read -P 0xab 0 1M'], { timeoutMs: 60_000 });
        const peak = rss.peak();
        rss.stop();
        const bound = peakMemoryBytes({ memoryCacheBytes: 64 * MiB, extentSize: MiB, uploadConcurrency: 16, s3Connections: s3ConnectionsFor(16) }, 1);
        console.log(`oversized body: RSS ${mib(start)} at start, peak ${mib(peak)} (bound ${mib(bound)}), ${proxy.intercepted()} GETs refused in ${Date.now() - started} ms`);
        assert.notEqual(read.code, 0, 'the read failed');
        assert.match(read.stdout + read.stderr, /Input\/output error/);
        assert.ok(proxy.intercepted() >= 2, 'the GET was retried');
        assert.ok(peak - start < 32 * MiB, `RSS grew from ${mib(start)} to ${mib(peak)}`);
        assert.ok(peak <= bound);
        // The GET of an extent asks for at most the extent and its object header (format 2).
        assert.match(second.logs(), new RegExp(`longer than the ${MiB + HEADER_BYTES} bytes asked for`));
        hostile = false;
        await runOk('qemu-io', ['-f', 'raw', second.uri, '-c', 'read -P 0xab 0 1M']);
      } finally {
        await second.stop();
      }
    } finally {
      await proxy.close();
    }
  });
});
