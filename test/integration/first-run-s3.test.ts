// First runs against the real S3 servers (MinIO and Ceph RGW, helpers/s3-servers.ts):
// refused credentials, a missing bucket and TLS spoken to the plain-HTTP port are one line
// with a code and a fix; a start refused for any reason creates nothing in the bucket (listed
// after each); `--read-only` never writes to it; and `info --cache-dir` shows the local state
// while S3 does not answer.

import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { CLI, startGateway, tempDir } from '../helpers/gateway.ts';
import type { S3TestServer } from '../helpers/minio.ts';
import { S3_SERVERS } from '../helpers/s3-servers.ts';
import { run, runOk, type RunResult } from '../helpers/tools.ts';
import { assertUserError, TEST_SECRET } from '../helpers/user-error.ts';

const BUCKET = 's3nbd-first-run';


for (const kind of S3_SERVERS) describe(`first runs on a real S3 server: ${kind.name}`, () => {
  const dir = tempDir('first-run-s3');
  let s3: S3TestServer;
  let env: NodeJS.ProcessEnv;
  let n = 0;
  const newPrefix = (): string => `vol${++n}-${Date.now()}`;

  before(async () => {
    s3 = await kind.start();
    await s3.createBucket(BUCKET);
    env = { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: s3.region, AWS_EC2_METADATA_DISABLED: 'true' };
  });
  after(async () => {
    await s3.stop();
    dir.remove();
  });

  async function s3nbd(args: readonly string[], extra: NodeJS.ProcessEnv = {}, timeoutMs = 30_000): Promise<RunResult & { ms: number }> {
    const started = Date.now();
    const r = await run(process.execPath, [CLI, ...args], { env: { ...process.env, ...env, ...extra }, timeoutMs });
    return { ...r, ms: Date.now() - started };
  }

  async function keys(prefix: string): Promise<string[]> {
    const client = new S3Client({ endpoint: s3.endpoint, region: s3.region, forcePathStyle: true,
      credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } });
    try {
      const page = await client.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: `${prefix}/` }));
      return (page.Contents ?? []).map((o) => o.Key!);
    } finally {
      client.destroy();
    }
  }

  it('says which credentials S3 refused, and never prints the secret', async () => {
    const store = `s3://${BUCKET}/${newPrefix()}`;
    const unknown = await s3nbd(['info', '--store', store, '--s3-endpoint', s3.endpoint], { AWS_ACCESS_KEY_ID: 'AKIANOSUCHKEY', AWS_SECRET_ACCESS_KEY: TEST_SECRET });
    assertUserError(unknown, 'S3NBD_BAD_CREDENTIALS', /InvalidAccessKeyId/, /AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY/);
    const wrong = await s3nbd(['serve', '--store', store, '--s3-endpoint', s3.endpoint, '--size', '64M', '--cache-dir', join(dir.path, 'c-cred'),
      '--socket', join(dir.path, 'cred.sock')], { AWS_SECRET_ACCESS_KEY: TEST_SECRET });
    assertUserError(wrong, 'S3NBD_BAD_CREDENTIALS', /SignatureDoesNotMatch/);
  });

  it('names a missing bucket and how to create it', async () => {
    const r = await s3nbd(['serve', '--store', 's3://no-such-bucket-here/vol', '--s3-endpoint', s3.endpoint, '--size', '64M',
      '--cache-dir', join(dir.path, 'c-bucket'), '--socket', join(dir.path, 'bucket.sock')]);
    assertUserError(r, 'S3NBD_NO_BUCKET', /"no-such-bucket-here" does not exist/, /mb s3:\/\/no-such-bucket-here/);
  });

  it('says https:// was spoken to its plain-HTTP port', async () => {
    const r = await s3nbd(['info', '--store', `s3://${BUCKET}/x`, '--s3-endpoint', s3.endpoint.replace('http://', 'https://')]);
    assertUserError(r, 'S3NBD_S3_NOT_TLS', /http:\/\//);
  });

  it('creates nothing in the bucket when a start is refused, and nothing with --read-only', async () => {
    const prefix = newPrefix();
    const store = `s3://${BUCKET}/${prefix}`;
    const base = ['serve', '--store', store, '--s3-endpoint', s3.endpoint, '--size', '64M'];
    // A cache directory that cannot be made (read-only and root-owned ones: first-run.test.ts).
    const blocked = join(dir.path, 'blocked');
    mkdirSync(blocked);
    const file = join(blocked, 'not-a-dir');
    writeFileSync(file, '');
    assertUserError(await s3nbd([...base, '--cache-dir', join(file, 'cache'), '--socket', join(dir.path, 'r1.sock')]), 'S3NBD_NOT_A_DIRECTORY');
    assertUserError(await s3nbd([...base, '--cache-dir', join(dir.path, 'c-r2'), '--socket', join(dir.path, 'no/dir/r2.sock')]), 'S3NBD_NO_SUCH_DIRECTORY');
    assertUserError(await s3nbd([...base, '--read-only', '--socket', join(dir.path, 'r3.sock')]), 'S3NBD_NO_VOLUME', /--read-only/);
    // A cache directory of another volume: a wrong --store would otherwise create a volume there.
    const other = await startGateway(['--store', `s3://${BUCKET}/${newPrefix()}`, '--s3-endpoint', s3.endpoint, '--size', '64M',
      '--cache-dir', join(dir.path, 'c-other')], { socket: join(dir.path, 'other.sock'), env });
    assert.equal(await other.stop(), 0);
    assertUserError(await s3nbd([...base, '--cache-dir', join(dir.path, 'c-other'), '--socket', join(dir.path, 'r4.sock')]), 'S3NBD_CACHE_DIR_IN_USE');
    assert.deepEqual(await keys(prefix), [], 'nothing written under the prefix');
  });

  it('leaves the volume as it was when a second gateway is refused by the lease or the listen address', async () => {
    const prefix = newPrefix();
    const store = `s3://${BUCKET}/${prefix}`;
    const first = await startGateway(['--store', store, '--s3-endpoint', s3.endpoint, '--size', '64M'], { socket: join(dir.path, 'l1.sock'), env });
    const before = await keys(prefix);
    assertUserError(await s3nbd(['serve', '--store', store, '--s3-endpoint', s3.endpoint, '--cache-dir', join(dir.path, 'c-l2'),
      '--socket', join(dir.path, 'l2.sock')]), 'S3NBD_VOLUME_IN_USE');
    const fresh = newPrefix();
    assertUserError(await s3nbd(['serve', '--store', `s3://${BUCKET}/${fresh}`, '--s3-endpoint', s3.endpoint, '--size', '64M',
      '--cache-dir', join(dir.path, 'c-l3'), '--socket', join(dir.path, 'l1.sock')]), 'S3NBD_LISTEN_FAILED', /another server/);
    assert.deepEqual(await keys(prefix), before);
    assert.deepEqual(await keys(fresh), [], 'no volume created where the listen failed');
    assert.equal(await first.stop(), 0);
  });

  it('shows the cache directory\'s state while S3 does not answer, then says so in one line', async () => {
    const cache = join(dir.path, 'c-info');
    const store = `s3://${BUCKET}/${newPrefix()}`;
    const gw = await startGateway(['--store', store, '--s3-endpoint', s3.endpoint, '--size', '64M', '--cache-dir', cache,
      '--upload-delay', '600000', '--flush-mode', 'local'], { socket: join(dir.path, 'info.sock'), env });
    await runOk('qemu-io', ['-f', 'raw', gw.uri, '-c', 'write -P 5 0 2M']);
    await new Promise((r) => setTimeout(r, 2_500)); // the status file is written every 2 s
    await s3.pause();
    try {
      const r = await s3nbd(['info', '--store', store, '--s3-endpoint', s3.endpoint, '--cache-dir', cache], {}, 40_000);
      assertUserError({ ...r, stdout: '' }, 'S3NBD_S3_UNREACHABLE', /no answer within 5 s/);
      assert.ok(r.ms < 15_000, `took ${r.ms} ms`);
      assert.match(r.stdout, /dirty: +2 MiB in 2 extents/);
      assert.match(r.stdout, /running/);
    } finally {
      s3.resume();
    }
    assert.equal(await gw.stop(), 0);
  });
});
