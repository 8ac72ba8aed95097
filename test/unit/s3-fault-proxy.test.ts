// The fault proxy's own faults that hold a client without failing (stall, trickle) or send
// more than was asked for (oversized body, inflated Content-Length), against a small local
// upstream: each does what the integration tests rely on it doing.

import assert from 'node:assert/strict';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { kindIs, type S3FaultProxy, startFaultProxy } from '../helpers/s3-fault-proxy.ts';

const BODY = Buffer.alloc(4000, 0x61);

interface Answer {
  readonly status: number;
  readonly contentLength: number;
  readonly body: Buffer;
  /** Milliseconds from the request to the end of the body. */
  readonly ms: number;
}

/** GETs `path` through the proxy; rejects after `timeoutMs` (with what arrived so far in the message). */
function get(endpoint: string, path: string, timeoutMs = 5000): Promise<Answer> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const req = request(`${endpoint}${path}`, { agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.once('end', () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, contentLength: Number(res.headers['content-length']), body: Buffer.concat(chunks), ms: Date.now() - started });
      });
      res.once('error', () => undefined);
    });
    const timer = setTimeout(() => {
      req.destroy();
      reject(new Error(`no complete answer within ${timeoutMs} ms`));
    }, timeoutMs);
    req.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.end();
  });
}

describe('S3 fault proxy: stalls, trickles, oversized bodies', () => {
  let upstream: Server;
  let proxy: S3FaultProxy;

  before(async () => {
    upstream = createServer((req, res) => {
      req.resume();
      res.writeHead(200, { 'content-length': BODY.length, etag: '"x"' });
      res.end(BODY);
    });
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
    proxy = await startFaultProxy(`http://127.0.0.1:${(upstream.address() as AddressInfo).port}`);
  });
  after(async () => {
    await proxy.close();
    await new Promise((resolve) => upstream.close(resolve));
  });

  it('stalls a request without an answer until released, and passes others meanwhile', async () => {
    proxy.stallNext(1, kindIs('GET object', 'stalled'));
    let answered = false;
    const held = get(proxy.endpoint, '/bucket/stalled', 10_000).then((a) => {
      answered = true;
      return a;
    });
    const other = await get(proxy.endpoint, '/bucket/other');
    assert.equal(other.status, 200);
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(answered, false, 'the stalled request got an answer');
    assert.equal(proxy.stalledCount(), 1);
    assert.equal(proxy.releaseStalled(), 1);
    const late = await held;
    assert.equal(late.status, 200);
    assert.ok(late.body.equals(BODY));
    assert.ok(late.ms >= 500, `answered after ${late.ms} ms`);
    assert.equal(proxy.stalledCount(), 0);
  });

  it('trickles a body at the rate asked for', async () => {
    proxy.trickleNext(1, 4000, kindIs('GET object', 'slow'));
    const slow = await get(proxy.endpoint, '/bucket/slow');
    assert.ok(slow.body.equals(BODY), 'the whole body, unchanged');
    // 4000 bytes at 4000 B/s: 400 bytes per 100 ms tick, so about a second.
    assert.ok(slow.ms >= 800 && slow.ms < 3000, `4000 bytes at 4000 B/s took ${slow.ms} ms`);
    const fast = await get(proxy.endpoint, '/bucket/slow');
    assert.ok(fast.ms < 500, `the next request is not trickled (${fast.ms} ms)`);
  });

  it('sends a body longer than the object, with a Content-Length that says so', async () => {
    proxy.oversizeBodyNext(1, 1000, kindIs('GET object', 'big'));
    const big = await get(proxy.endpoint, '/bucket/big');
    assert.equal(big.contentLength, BODY.length + 1000);
    assert.equal(big.body.length, BODY.length + 1000);
    assert.ok(big.body.subarray(0, BODY.length).equals(BODY));
    assert.ok(big.body.subarray(BODY.length).equals(Buffer.alloc(1000, 0xee)));
  });

  it('announces a Content-Length larger than the body and holds the connection', async () => {
    proxy.inflateLengthNext(1, 4_000_000_000, kindIs('GET object', 'huge'));
    const headers = await new Promise<{ length: string | undefined; received: number }>((resolve, reject) => {
      const req = request(`${proxy.endpoint}/bucket/huge`, { agent: false }, (res) => {
        let received = 0;
        res.on('data', (c: Buffer) => { received += c.length; });
        // The real body arrives, then nothing: look after a moment, then give up.
        setTimeout(() => {
          resolve({ length: res.headers['content-length'], received });
          req.destroy();
        }, 500);
      });
      req.once('error', (err) => { if ((err as NodeJS.ErrnoException).code !== 'ECONNRESET') reject(err); });
      req.end();
    });
    assert.equal(headers.length, '4000000000');
    assert.equal(headers.received, BODY.length);
  });
});
