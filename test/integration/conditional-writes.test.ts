// Conditional writes (If-None-Match: *, If-Match) are all that keeps two gateways from writing
// one volume, so a writer checks that the S3 server honours them before it writes, and
// refuses with S3NBD_NO_CONDITIONAL_WRITES where it does not (docs/s3.md). The server that
// ignores them is a real one (MinIO, Ceph RGW) behind the fault proxy, which strips both
// headers and signs the requests again. Against each real server as it is, the check costs
// two PUTs when a writer opens a volume, and nothing per write.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { GetObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { CLI, startGateway, tempDir } from '../helpers/gateway.ts';
import type { S3TestServer } from '../helpers/minio.ts';
import { kindIs, type S3FaultProxy, startFaultProxy } from '../helpers/s3-fault-proxy.ts';
import { S3_SERVERS } from '../helpers/s3-servers.ts';
import { requireTool, run, runOk } from '../helpers/tools.ts';

const CONDITIONAL_HEADERS = ['if-match', 'if-none-match'];

for (const kind of S3_SERVERS) describe(`conditional writes: ${kind.name}`, () => {
  const dir = tempDir('cond');
  const bucket = `s3nbd-cond-${randomBytes(4).toString('hex')}`;
  let s3: S3TestServer;
  let proxy: S3FaultProxy;
  let client: S3Client;
  let env: NodeJS.ProcessEnv;
  let volumes = 0;

  before(async () => {
    requireTool('nbdcopy');
    s3 = await kind.start();
    await s3.createBucket(bucket);
    proxy = await startFaultProxy(s3.endpoint);
    client = new S3Client({ endpoint: s3.endpoint, region: s3.region, forcePathStyle: true,
      credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } });
    env = { ...process.env, AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: s3.region };
  });
  after(async () => {
    client?.destroy();
    await proxy?.close();
    await s3?.stop();
    dir.remove();
  });

  const newPrefix = (): string => `vol${++volumes}`;

  async function keys(prefix: string): Promise<string[]> {
    const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: `${prefix}/` }));
    return (page.Contents ?? []).map((o) => o.Key!.slice(prefix.length + 1)).sort();
  }

  /** `s3nbd ARGS` for at most 20 s: on a build without the check, serve would run until killed. */
  function s3nbd(args: readonly string[], endpoint: string): Promise<{ code: number | null; stderr: string }> {
    return run(process.execPath, [CLI, ...args, '--s3-endpoint', endpoint], { env, timeoutMs: 20_000 });
  }

  function assertRefused(result: { code: number | null; stderr: string }, header: RegExp): void {
    assert.equal(result.code, 2, `exit ${result.code}:\n${result.stderr}`);
    const lines = result.stderr.split('\n').filter((l) => l !== '');
    assert.equal(lines.length, 1, `one line:\n${result.stderr}`);
    assert.match(lines[0]!, /^s3nbd: the S3 server of s3:\/\/\S+ at http:\/\/127\.0\.0\.1:\d+ /);
    assert.match(lines[0]!, header);
    assert.match(lines[0]!, /\(S3NBD_NO_CONDITIONAL_WRITES\)\. Fix: use an S3 service that supports conditional writes .*\.$/);
  }

  it('refuses to create a volume on a server that ignores them, in one line, and leaves nothing in the bucket', async () => {
    const prefix = newPrefix();
    proxy.stripHeaders(CONDITIONAL_HEADERS, s3.secretAccessKey);
    try {
      const served = await s3nbd(['serve', '--store', `s3://${bucket}/${prefix}`, '--size', '64M',
        '--socket', join(dir.path, 'a.sock'), '--cache-dir', join(dir.path, 'a-cache')], proxy.endpoint);
      assertRefused(served, /ignores If-None-Match: \* on PutObject/);
      assert.deepEqual(await keys(prefix), [], 'the volume it created was deleted again');
      const created = await s3nbd(['create', '--store', `s3://${bucket}/${prefix}`, '--size', '64M'], proxy.endpoint);
      assertRefused(created, /ignores If-None-Match: \* on PutObject/);
      assert.deepEqual(await keys(prefix), []);
    } finally {
      proxy.stripHeaders([]);
    }
  });

  it('refuses to create a volume on a server that answers conditional PUTs with 501 NotImplemented', async () => {
    const prefix = newPrefix();
    proxy.failNext(20, 501, 'NotImplemented', kindIs('PUT object', `${prefix}/s3nbd-volume.json`));
    try {
      const created = await s3nbd(['create', '--store', `s3://${bucket}/${prefix}`, '--size', '64M'], proxy.endpoint);
      assertRefused(created, /refuses If-None-Match on PutObject \(HTTP 501 NotImplemented\)/);
      assert.deepEqual(await keys(prefix), []);
    } finally {
      proxy.clearFaults();
    }
  });

  it('refuses to serve an existing volume there before taking the lease; read-only serving and info need no check', async () => {
    const prefix = newPrefix();
    const store = `s3://${bucket}/${prefix}`;
    await runOk(process.execPath, [CLI, 'create', '--store', store, '--size', '64M', '--s3-endpoint', s3.endpoint], { env });
    const metadata = async (): Promise<string> => (await client.send(new GetObjectCommand({ Bucket: bucket, Key: `${prefix}/s3nbd-volume.json` }))).Body!.transformToString();
    const before = await metadata();
    proxy.stripHeaders(CONDITIONAL_HEADERS, s3.secretAccessKey);
    try {
      const served = await s3nbd(['serve', '--store', store, '--socket', join(dir.path, 'b.sock'), '--cache-dir', join(dir.path, 'b-cache')], proxy.endpoint);
      assertRefused(served, /ignores If-None-Match: \* on PutObject/);
      assert.deepEqual(await keys(prefix), ['s3nbd-volume.json'], 'no lease was written');
      assert.equal(await metadata(), before, 'the check rewrote the volume with its own bytes at most');

      const info = await s3nbd(['info', '--store', store, '--json'], proxy.endpoint);
      assert.equal(info.code, 0, info.stderr);
      const readOnly = await startGateway(['--store', store, '--s3-endpoint', proxy.endpoint, '--read-only'], { socket: join(dir.path, 'c.sock'), env });
      assert.equal(await readOnly.stop(), 0);
    } finally {
      proxy.stripHeaders([]);
    }
  });

  it('costs two PUTs of the volume when a writer opens it, none per write, none when read-only', async () => {
    const prefix = newPrefix();
    const store = `s3://${bucket}/${prefix}`;
    const volumePuts = (): number => proxy.requests.filter(kindIs('PUT object', `${prefix}/s3nbd-volume.json`)).length;
    proxy.clearRequests();
    const first = await startGateway(['--store', store, '--s3-endpoint', proxy.endpoint, '--size', '64M'], { socket: join(dir.path, 'd.sock'), env });
    assert.equal(volumePuts(), 3, 'created, then checked twice');
    const image = join(dir.path, 'image');
    writeFileSync(image, randomBytes(8 << 20));
    await runOk('nbdcopy', ['--flush', image, first.uri]);
    assert.equal(volumePuts(), 3, 'writes and flushes add none');
    assert.ok(proxy.requests.filter(kindIs('PUT object', `${prefix}/extents/`)).length >= 8);
    assert.equal(await first.stop(), 0);

    const second = await startGateway(['--store', store, '--s3-endpoint', proxy.endpoint], { socket: join(dir.path, 'e.sock'), env });
    assert.equal(volumePuts(), 5, 'opening it to write checks twice');
    assert.equal(await second.stop(), 0);
    const readOnly = await startGateway(['--store', store, '--s3-endpoint', proxy.endpoint, '--read-only'], { socket: join(dir.path, 'f.sock'), env });
    assert.equal(await readOnly.stop(), 0);
    assert.equal(volumePuts(), 5, 'serving read-only checks nothing');
  });
});
