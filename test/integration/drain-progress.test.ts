// Drain progress on SIGTERM (issue 18): while the gateway uploads its dirty data before
// exiting, a line every 2 s with the bytes left, the rate and an ETA, then a final line. The
// uploads are made slow by the fault proxy in front of MinIO (each extent PUT held a while,
// one upload at a time), so the drain takes several intervals.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startGateway, tempDir } from '../helpers/gateway.ts';
import { registerSecret } from '../helpers/log-sweep.ts';
import { startMinio, type S3TestServer } from '../helpers/minio.ts';
import { type NbdOp, nbdOps } from '../helpers/nbd-ops.ts';
import { kindIs, type S3FaultProxy, startFaultProxy } from '../helpers/s3-fault-proxy.ts';
import { requireTool } from '../helpers/tools.ts';

const MIB = 1024 * 1024;
const EXTENTS = 8;
const PUT_DELAY_MS = 1_500;

describe('drain progress on SIGTERM', () => {
  let minio: S3TestServer;
  let proxy: S3FaultProxy;
  const dir = tempDir('drain-progress');
  let env: NodeJS.ProcessEnv;

  before(async () => {
    requireTool('python3');
    minio = await startMinio();
    proxy = await startFaultProxy(minio.endpoint);
    env = { AWS_ACCESS_KEY_ID: minio.accessKeyId, AWS_SECRET_ACCESS_KEY: minio.secretAccessKey };
    registerSecret('MinIO secret key', minio.secretAccessKey);
  });
  after(async () => {
    await proxy?.close();
    await minio?.stop();
    dir.remove();
  });

  it('says every 2 s how much is left and how fast it goes, then that all was uploaded; exits 0 with the data in S3', { timeout: 180_000 }, async () => {
    const bucket = `drain-${randomBytes(4).toString('hex')}`;
    await minio.createBucket(bucket);
    const store = `s3://${bucket}/vol`;
    // --upload-delay keeps the writes dirty until the drain; one upload at a time, each held.
    const gw = await startGateway(['--store', store, '--s3-endpoint', proxy.endpoint, '--size', '64M', '--extent-size', '1M',
      '--upload-delay', '600000', '--upload-concurrency', '1', '--drain-timeout', '300'], { socket: join(dir.path, 'a.sock'), env, timeoutMs: 60_000 });
    const writes: NbdOp[] = Array.from({ length: EXTENTS }, (_, i) => ['write', i * MIB, MIB, 300 + i] as const);
    assert.ok((await nbdOps(gw.uri, writes)).every((r) => r.ok));
    proxy.delayNext(EXTENTS, PUT_DELAY_MS, kindIs('PUT object', 'extents/'));

    assert.equal(await gw.stop('SIGTERM'), 0, gw.logs().slice(-3000));
    const records = gw.logs().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
    const progress = records.filter((r) => typeof r.msg === 'string' && r.msg.startsWith('draining: '));
    assert.ok(progress.length >= 2, `a line every 2 s of a drain of ${EXTENTS} x ${PUT_DELAY_MS} ms:\n${gw.logs().slice(-3000)}`);
    const left = progress.map((r) => r.bytesLeft as number);
    for (let i = 1; i < left.length; i++) assert.ok(left[i]! <= left[i - 1]!, `bytes left never grow: ${left.join(', ')}`);
    assert.ok(left.at(-1)! < left[0]!, `bytes left go down: ${left.join(', ')}`);
    assert.ok(progress.some((r) => (r.bytesPerSecond as number) > 0 && typeof r.etaSeconds === 'number'), 'a rate and an ETA');
    for (const r of progress) assert.match(r.msg as string, /^draining: [\d.]+ (MiB|KiB|bytes) left to upload, [\d.]+ (MiB|KiB|bytes)\/s, /);
    const done = records.find((r) => typeof r.msg === 'string' && r.msg.startsWith('drain done: '));
    assert.ok(done, gw.logs().slice(-3000));
    assert.equal(done.bytesLeft, 0);
    assert.equal(done.uploadedBytes, EXTENTS * MIB);
    assert.equal(done.drained, true);
    assert.ok(records.indexOf(done) > records.indexOf(progress.at(-1)!), 'the final line comes last');

    // Everything is in S3: a gateway with an empty cache reads it back.
    const fresh = await startGateway(['--store', store, '--s3-endpoint', minio.endpoint], { socket: join(dir.path, 'fresh.sock'), env, timeoutMs: 60_000 });
    const back = await nbdOps(fresh.uri, Array.from({ length: EXTENTS }, (_, i) => ['read', i * MIB, MIB, 300 + i] as const));
    assert.ok(back.every((r) => r.ok && r.match), JSON.stringify(back));
    assert.equal(await fresh.stop('SIGTERM'), 0);
  });

  it('a second signal during the drain exits 130 at once, and its line is not lost', { timeout: 180_000 }, async () => {
    const bucket = `drain2-${randomBytes(4).toString('hex')}`;
    await minio.createBucket(bucket);
    const gw = await startGateway(['--store', `s3://${bucket}/vol`, '--s3-endpoint', proxy.endpoint, '--size', '64M', '--extent-size', '1M',
      '--upload-delay', '600000', '--upload-concurrency', '1', '--drain-timeout', '300'], { socket: join(dir.path, 'b.sock'), env, timeoutMs: 60_000 });
    assert.ok((await nbdOps(gw.uri, [['write', 0, 4 * MIB, 77]])).every((r) => r.ok));
    proxy.delayNext(4, 20_000, kindIs('PUT object', 'extents/'));
    gw.process.kill('SIGTERM');
    // A progress line says the drain is under way; then the second signal.
    for (const deadline = Date.now() + 60_000; !gw.logs().includes('"msg":"draining: ');) {
      if (Date.now() > deadline) throw new Error(`no progress line:\n${gw.logs().slice(-3000)}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.equal(await gw.stop('SIGTERM'), 130);
    const last = gw.logs().trimEnd().split('\n').at(-1)!;
    assert.match(last, /"msg":"second signal: exiting without waiting/, 'written before process.exit(130)');
    proxy.clearFaults();
  });
});
