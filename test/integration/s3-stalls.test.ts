// Stalls are visible and bounded (issue 14, scenario 6): a real gateway (the built CLI) reads
// through the fault proxy from MinIO with a real NBD client. An S3 answer that never comes, or
// comes a few bytes a second, ends the read with EIO within --read-timeout (plus a small
// margin), a warn line says what the gateway waits for while it waits, and the gateway goes on
// serving. A body longer than the extent is never served as its data. An upload that stalls is
// logged at warn too, and goes on once S3 answers.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { extentKeyStem } from '../../src/storage/extents/extent-keys.ts';
import { type Gateway, startGateway, tempDir } from '../helpers/gateway.ts';
import { startMinio, type S3TestServer } from '../helpers/minio.ts';
import { ERRNO, type NbdOp, nbdOps } from '../helpers/nbd-ops.ts';
import { kindIs, type S3FaultProxy, startFaultProxy } from '../helpers/s3-fault-proxy.ts';
import { requireTool } from '../helpers/tools.ts';

const MIB = 1024 * 1024;
const READ_TIMEOUT_S = 6;
/** What a read may take beyond --read-timeout: the NBD round trip and the gateway's own work. */
const MARGIN_MS = 2500;

/** The warn lines (pino level 40) the gateway logged with this message. */
function warnings(gw: Gateway, msg: string): Array<Record<string, unknown>> {
  return gw.logs().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l.level === 40 && l.msg === msg);
}

/** The stall line is rate-limited (one per 10 s): wait until the next stall, 5 s from now, gets its own line. */
async function quietLongEnough(gw: Gateway): Promise<void> {
  const last = warnings(gw, 'waiting for S3: no answer yet').at(-1);
  const wait = last === undefined ? 0 : (last.time as number) + 10_000 + 500 - (Date.now() + 5000);
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
}

async function waitFor(what: string, ready: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ready()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('S3 stalls: bounded reads, visible waits', () => {
  let minio: S3TestServer;
  let proxy: S3FaultProxy;
  const dir = tempDir('stalls');
  let env: NodeJS.ProcessEnv;
  let store: string;
  let gw: Gateway;
  const seed = (index: number): number => 7000 + index;

  before(async () => {
    requireTool('python3');
    minio = await startMinio();
    proxy = await startFaultProxy(minio.endpoint);
    env = { AWS_ACCESS_KEY_ID: minio.accessKeyId, AWS_SECRET_ACCESS_KEY: minio.secretAccessKey };
    const bucket = `stalls-${randomBytes(4).toString('hex')}`;
    await minio.createBucket(bucket);
    store = `s3://${bucket}/vol`;
    // Eight stored extents, written straight to MinIO; then a gateway with an empty cache reads
    // them through the proxy.
    const writer = await startGateway(['--store', store, '--s3-endpoint', minio.endpoint, '--size', '64M', '--extent-size', '1M'],
      { socket: join(dir.path, 'writer.sock'), env, timeoutMs: 30_000 });
    const writes: NbdOp[] = Array.from({ length: 8 }, (_, i) => ['write', i * MIB, MIB, seed(i)] as const);
    const results = await nbdOps(writer.uri, [...writes, ['flush']]);
    assert.ok(results.every((r) => r.ok), JSON.stringify(results));
    assert.equal(await writer.stop(), 0);
    // The budget from the environment (S3NBD_READ_TIMEOUT), as a container would set it.
    gw = await startGateway(['--store', store, '--s3-endpoint', proxy.endpoint],
      { socket: join(dir.path, 'reader.sock'), env: { ...env, S3NBD_READ_TIMEOUT: String(READ_TIMEOUT_S) }, timeoutMs: 30_000 });
  });
  after(async () => {
    await gw?.stop('SIGKILL');
    await proxy?.close();
    await minio?.stop();
    dir.remove();
  });

  it('a GET that S3 never answers ends the read in EIO within --read-timeout, logged at warn; other reads go on', { timeout: 60_000 }, async () => {
    proxy.stallNext(1000, kindIs('GET object', extentKeyStem(0)));
    try {
      const [stalled] = await nbdOps(gw.uri, [['read', 0, MIB, seed(0)]]);
      assert.equal(stalled!.ok, false, 'the read of a stalled extent failed');
      assert.equal(stalled!.errno, ERRNO.EIO);
      assert.ok(stalled!.ms >= READ_TIMEOUT_S * 1000 - 500, `EIO after ${Math.round(stalled!.ms)} ms: before the read timeout`);
      assert.ok(stalled!.ms < READ_TIMEOUT_S * 1000 + MARGIN_MS, `EIO after ${Math.round(stalled!.ms)} ms, budget ${READ_TIMEOUT_S} s`);
      const waiting = warnings(gw, 'waiting for S3: no answer yet');
      assert.ok(waiting.some((l) => String(l.operation).includes(`GET`) && String(l.operation).includes(extentKeyStem(0))),
        `a warn line names the stalled GET: ${JSON.stringify(waiting)}`);
      // The gateway serves other extents meanwhile, with the stalled requests still held.
      const [other] = await nbdOps(gw.uri, [['read', 3 * MIB, MIB, seed(3)]]);
      assert.deepEqual([other!.ok, other!.match], [true, true]);
    } finally {
      proxy.clearFaults();
      proxy.releaseStalled();
    }
    const [again] = await nbdOps(gw.uri, [['read', 0, MIB, seed(0)]]);
    assert.deepEqual([again!.ok, again!.match], [true, true], 'once S3 answers, the extent reads back right');
  });

  it('a body trickling at 4 KiB/s ends the read in EIO within --read-timeout; the next read works', { timeout: 60_000 }, async () => {
    await quietLongEnough(gw);
    proxy.trickleNext(1000, 4096, kindIs('GET object', extentKeyStem(5)));
    try {
      const [slow] = await nbdOps(gw.uri, [['read', 5 * MIB, MIB, seed(5)]]);
      assert.equal(slow!.ok, false);
      assert.equal(slow!.errno, ERRNO.EIO);
      assert.ok(slow!.ms < READ_TIMEOUT_S * 1000 + MARGIN_MS, `EIO after ${Math.round(slow!.ms)} ms, budget ${READ_TIMEOUT_S} s`);
      assert.ok(warnings(gw, 'waiting for S3: no answer yet').some((l) => String(l.operation).includes(extentKeyStem(5))));
    } finally {
      proxy.clearFaults();
    }
    const [again] = await nbdOps(gw.uri, [['read', 5 * MIB, MIB, seed(5)]]);
    assert.deepEqual([again!.ok, again!.match], [true, true]);
  });

  it('a body longer than the extent asked for is never served as its data; the gateway goes on', { timeout: 60_000 }, async () => {
    proxy.oversizeBodyNext(1, 4096, kindIs('GET object', extentKeyStem(6)));
    const [big] = await nbdOps(gw.uri, [['read', 6 * MIB, MIB, seed(6)]]);
    // EIO, or the right bytes from a retry: never the wrong ones.
    assert.ok(!big!.ok ? big!.errno === ERRNO.EIO : big!.match === true, `the read of an oversized answer: ${JSON.stringify(big)}`);
    assert.ok(big!.ms < READ_TIMEOUT_S * 1000 + MARGIN_MS);
    assert.ok(proxy.requests.some((r) => r.fault === 'oversize'), 'the fault was used');
    const [again] = await nbdOps(gw.uri, [['read', 6 * MIB, MIB, seed(6)]]);
    assert.deepEqual([again!.ok, again!.match], [true, true]);
  });

  it('an upload that stalls is logged at warn while it waits, and completes once S3 answers', { timeout: 60_000 }, async () => {
    proxy.stallNext(1000, kindIs('PUT object', extentKeyStem(10)));
    try {
      const [write] = await nbdOps(gw.uri, [['write', 10 * MIB, MIB, seed(10)]]);
      assert.equal(write!.ok, true, 'the write is acknowledged from the cache');
      // Repeated every 5 s while the PUT waits: one line gets past the rate limit.
      await waitFor('a warn line about the stalled PUT', () => warnings(gw, 'waiting for S3: no answer yet')
        .some((l) => String(l.operation).includes('PUT') && String(l.operation).includes(extentKeyStem(10))), 15_000);
      assert.ok(proxy.stalledCount() >= 1);
    } finally {
      proxy.clearFaults();
      proxy.releaseStalled();
    }
    const [flush] = await nbdOps(gw.uri, [['flush']], 45_000);
    assert.equal(flush!.ok, true, 'the flush waited for the upload, which went through once released');
  });
});
