// Bounded shutdown (issue 14, scenario 5): with S3 hanging (MinIO paused: connections are
// accepted, nothing answers), SIGTERM to a gateway with dirty data and --drain-timeout 3 said
// "drain timed out" at 3 s but exited after 364 s: the uploads in flight, then the lease
// release, each retried 6 x 30 s. --drain-timeout bounds the whole shutdown: the gateway exits
// within it plus SHUTDOWN_MARGIN_MS. Nothing acknowledged is lost: a restart on the same cache
// directory uploads it from the journal, and a gateway with an empty cache reads it back. With
// nothing dirty, the lease release alone (6 x 30 s against a hung S3) is bounded the same way.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SHUTDOWN_MARGIN_MS } from '../../src/cli/serve.ts';
import { startGateway, tempDir } from '../helpers/gateway.ts';
import { startMinio, type S3TestServer } from '../helpers/minio.ts';
import { type NbdOp, nbdOps } from '../helpers/nbd-ops.ts';
import { requireTool } from '../helpers/tools.ts';

const MIB = 1024 * 1024;
const DRAIN_TIMEOUT_S = 3;

describe('shutdown while S3 hangs', () => {
  let minio: S3TestServer;
  const dir = tempDir('shutdown');
  let env: NodeJS.ProcessEnv;

  before(async () => {
    requireTool('python3');
    minio = await startMinio();
    env = { AWS_ACCESS_KEY_ID: minio.accessKeyId, AWS_SECRET_ACCESS_KEY: minio.secretAccessKey };
  });
  after(async () => {
    try {
      minio?.resume();
    } catch {
      // Not running.
    }
    await minio?.stop();
    dir.remove();
  });

  it(`exits within --drain-timeout ${DRAIN_TIMEOUT_S} + ${SHUTDOWN_MARGIN_MS / 1000} s with uploads in flight, and loses nothing`, { timeout: 120_000 }, async (t) => {
    if (!minio.controllable) return t.skip('needs a local MinIO to pause (S3NBD_TEST_S3_ENDPOINT is set)');
    const bucket = `shutdown-${randomBytes(4).toString('hex')}`;
    await minio.createBucket(bucket);
    const store = `s3://${bucket}/vol`;
    const args = ['--store', store, '--s3-endpoint', minio.endpoint, '--size', '64M', '--extent-size', '1M',
      '--drain-timeout', String(DRAIN_TIMEOUT_S), '--upload-delay', '60000'];
    const socket = join(dir.path, 'a.sock');
    const gw = await startGateway(args, { socket, env, timeoutMs: 30_000 });
    // Acknowledged from the cache; --upload-delay 60 s keeps them dirty until the drain.
    const writes: NbdOp[] = Array.from({ length: 12 }, (_, i) => ['write', i * MIB, MIB, 900 + i] as const);
    const written = await nbdOps(gw.uri, writes);
    assert.ok(written.every((r) => r.ok), JSON.stringify(written));

    await minio.pause();
    let exitMs: number;
    let code: number | null;
    try {
      const signalled = Date.now();
      code = await gw.stop('SIGTERM');
      exitMs = Date.now() - signalled;
    } finally {
      minio.resume();
    }
    t.diagnostic(`exited ${exitMs} ms after SIGTERM, status ${code}`);
    assert.match(gw.logs(), /drain timed out/);
    assert.ok(exitMs < DRAIN_TIMEOUT_S * 1000 + SHUTDOWN_MARGIN_MS, `exited ${exitMs} ms after SIGTERM, --drain-timeout ${DRAIN_TIMEOUT_S}:\n${gw.logs().slice(-3000)}`);
    assert.equal(code, 0, 'a drain that timed out still exits 0: the journal keeps the rest');

    // The same cache directory: the journal replays what the drain could not upload.
    const restarted = await startGateway(args, { socket, env, timeoutMs: 30_000 });
    assert.match(restarted.logs(), /recovered unuploaded writes from the journal/);
    const flushed = await nbdOps(restarted.uri, [['flush']], 60_000);
    assert.ok(flushed[0]!.ok);
    assert.equal(await restarted.stop('SIGTERM'), 0);

    const fresh = await startGateway(['--store', store, '--s3-endpoint', minio.endpoint], { socket: join(dir.path, 'fresh.sock'), env, timeoutMs: 30_000 });
    const back = await nbdOps(fresh.uri, Array.from({ length: 12 }, (_, i) => ['read', i * MIB, MIB, 900 + i] as const));
    assert.ok(back.every((r) => r.ok && r.match), `every acknowledged write is in the store: ${JSON.stringify(back)}`);
    assert.equal(await fresh.stop('SIGTERM'), 0);
  });

  it('exits within --drain-timeout + margin with nothing dirty, when only the lease release hangs', { timeout: 60_000 }, async (t) => {
    if (!minio.controllable) return t.skip('needs a local MinIO to pause (S3NBD_TEST_S3_ENDPOINT is set)');
    const bucket = `shutdown-${randomBytes(4).toString('hex')}`;
    await minio.createBucket(bucket);
    const gw = await startGateway(['--store', `s3://${bucket}/vol`, '--s3-endpoint', minio.endpoint, '--size', '64M',
      '--drain-timeout', String(DRAIN_TIMEOUT_S)], { socket: join(dir.path, 'idle.sock'), env, timeoutMs: 30_000 });
    await minio.pause();
    let exitMs: number;
    let code: number | null;
    try {
      const signalled = Date.now();
      code = await gw.stop('SIGTERM');
      exitMs = Date.now() - signalled;
    } finally {
      minio.resume();
    }
    t.diagnostic(`exited ${exitMs} ms after SIGTERM, status ${code}`);
    assert.match(gw.logs(), /all dirty data uploaded/);
    assert.ok(exitMs < DRAIN_TIMEOUT_S * 1000 + SHUTDOWN_MARGIN_MS, `exited ${exitMs} ms after SIGTERM (the lease release was retried 6 x 30 s)`);
    assert.equal(code, 0);
  });
});
