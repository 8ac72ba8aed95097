// A clone on MinIO (issue 16's must-show): snapshots s1 and s2 of a volume in one bucket, a
// clone of s1 in another (`s3nbd clone ... --to s3://...`), written to through its own
// gateway, while the origin's gateway goes on serving the volume, @s1 and @s2: the clone reads
// as s1 and then as written, and the volume, s1 and s2 read back unchanged. Deleting s1 is
// refused, naming the clone. (The same with directory stores, and more: test/e2e/clones.test.ts.)

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cli, startGateway, tempDir } from '../helpers/gateway.ts';
import { credentialsEnv, type S3TestServer, startMinio } from '../helpers/minio.ts';
import { requireTool, runOk } from '../helpers/tools.ts';
import { assertUserError } from '../helpers/user-error.ts';

const MiB = 1024 * 1024;

describe('a clone of a snapshot on MinIO', () => {
  const dir = tempDir('clone-s3');
  let s3: S3TestServer;
  const file = (name: string): string => join(dir.path, name);

  before(async () => {
    requireTool('nbdcopy');
    s3 = await startMinio();
    for (const bucket of ['origin', 'clones']) await s3.createBucket(bucket);
  });
  after(async () => {
    await s3?.stop();
    dir.remove();
  });

  it('is written to while the origin volume, s1 and s2 stay as they were', { timeout: 300_000 }, async () => {
    const env = credentialsEnv(s3);
    const endpoint = ['--s3-endpoint', s3.endpoint];
    const origin = ['--store', 's3://origin/vol', ...endpoint];
    const originCache = file('origin-cache');
    const images = { s1: randomBytes(6 * MiB), s2: randomBytes(6 * MiB), later: randomBytes(3 * MiB), clone: randomBytes(2 * MiB) };
    for (const [name, data] of Object.entries(images)) writeFileSync(file(name), data);
    const read = async (uri: string, name: string): Promise<Buffer> => {
      await runOk('nbdcopy', [uri, file(`${name}.out`)]);
      return readFileSync(file(`${name}.out`));
    };

    const gw = await startGateway([...origin, '--size', '16M', '--cache-dir', originCache], { socket: file('origin.sock'), env });
    try {
      for (const name of ['s1', 's2'] as const) {
        await runOk('nbdcopy', [file(name), gw.uri]);
        const made = await cli(['snapshot', 'create', ...origin, '--cache-dir', originCache, name], env);
        assert.equal(made.code, 0, made.stderr);
      }
      await runOk('nbdcopy', ['--flush', file('later'), gw.uri]);
      const snapshotUri = (s: string): string => `nbd+unix:///@${s}?socket=${file('origin.sock')}`;
      const before = { volume: await read(gw.uri, 'volume-before'), s1: await read(snapshotUri('s1'), 's1-before'), s2: await read(snapshotUri('s2'), 's2-before') };
      assert.deepEqual(before.s1.subarray(0, 6 * MiB), images.s1);
      assert.deepEqual(before.s2.subarray(0, 6 * MiB), images.s2);

      const cloned = await cli(['clone', ...origin, '--snapshot', 's1', '--to', 's3://clones/c1'], env);
      assert.equal(cloned.code, 0, cloned.stderr);
      const cgw = await startGateway(['--store', 's3://clones/c1', ...endpoint], { socket: file('clone.sock'), env });
      try {
        assert.deepEqual(await read(cgw.uri, 'clone-as-made'), before.s1, 'the clone reads as s1');
        await runOk('nbdcopy', ['--flush', file('clone'), cgw.uri]);
        const written = Buffer.from(before.s1);
        images.clone.copy(written, 0);
        assert.deepEqual(await read(cgw.uri, 'clone-written'), written, 'and then as written');
      } finally {
        assert.equal(await cgw.stop(), 0, cgw.logs());
      }

      assert.deepEqual(await read(gw.uri, 'volume-after'), before.volume, 'the origin volume is unchanged');
      assert.deepEqual(await read(snapshotUri('s1'), 's1-after'), before.s1, 's1 is unchanged');
      assert.deepEqual(await read(snapshotUri('s2'), 's2-after'), before.s2, 's2 is unchanged');
      assertUserError(await cli(['snapshot', 'delete', ...origin, '--cache-dir', originCache, 's1'], env), 'S3NBD_SNAPSHOT_HAS_CLONES', /c1|clones/);
    } finally {
      assert.equal(await gw.stop(), 0, gw.logs());
    }
  });
});
