// `s3nbd volume` on MinIO: volumes under s3://vols/backups are found by a delimiter listing
// (a key of a sibling prefix and a name without volume metadata are left out), created,
// listed with the gateway holding one's lease, resized (refused while that gateway holds it
// without answering, done once it stopped, and served at the new size with the data), and
// deleted: a volume with a snapshot only with --with-snapshots, and then no key of it is left.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ListObjectsV2Command, PutObjectCommand } from '@aws-sdk/client-s3';
import { cli, startGateway, tempDir } from '../helpers/gateway.ts';
import { credentialsEnv, type S3TestServer, sdkClient, startMinio } from '../helpers/minio.ts';
import { nbdOps } from '../helpers/nbd-ops.ts';
import { requireTool, runOk } from '../helpers/tools.ts';
import { assertUserError } from '../helpers/user-error.ts';

const M = 1 << 20;

describe('s3nbd volume on MinIO', () => {
  const dir = tempDir('volume-s3');
  let s3: S3TestServer;
  before(async () => {
    requireTool('nbdinfo');
    requireTool('nbdsh');
    s3 = await startMinio();
    await s3.createBucket('vols');
  });
  after(async () => {
    await s3?.stop();
    dir.remove();
  });

  const keysUnder = async (prefix: string): Promise<string[]> => {
    const client = sdkClient(s3);
    try {
      const out = await client.send(new ListObjectsV2Command({ Bucket: 'vols', Prefix: prefix }));
      return (out.Contents ?? []).map((o) => o.Key!);
    } finally {
      client.destroy();
    }
  };

  it('lists, creates, resizes and deletes the volumes under a prefix', { timeout: 300_000 }, async () => {
    const env = credentialsEnv(s3);
    const noGateway = ['--volumes', 's3://vols/backups', '--s3-endpoint', s3.endpoint, '--cache-dir', join(dir.path, 'none')];
    const volume = async (...args: string[]) => cli(['volume', ...args, ...noGateway], env);

    const client = sdkClient(s3);
    try {
      await client.send(new PutObjectCommand({ Bucket: 'vols', Key: 'backups/stray/readme.txt', Body: 'not a volume' }));
      await client.send(new PutObjectCommand({ Bucket: 'vols', Key: 'backups-old/x/s3nbd-volume.json', Body: '{}' }));
    } finally {
      client.destroy();
    }
    assert.equal((await volume('create', 'db', '--size', '8M')).code, 0);
    const web = await volume('create', 'web', '--size', '4M', '--extent-size', '256K');
    assert.equal(web.code, 0, web.stderr);
    assertUserError(await volume('create', 'db', '--size', '8M'), 'S3NBD_VOLUME_EXISTS');
    assertUserError(await volume('create', 'stray', '--size', '8M'), 'S3NBD_VOLUME_EXISTS', /holds objects but no volume/);
    const listed = JSON.parse((await volume('list', '--json')).stdout) as Array<{ name: string; size: number; extentSize: number; lease?: unknown }>;
    assert.deepEqual(listed.map((v) => [v.name, v.size, v.extentSize, v.lease]), [['db', 8 * M, M, undefined], ['web', 4 * M, 256 * 1024, undefined]]);

    // A gateway serving db holds its lease: the listing shows it, and a resize that cannot reach it is refused.
    const socket = join(dir.path, 'db.sock');
    const store = ['--store', 's3://vols/backups/db', '--s3-endpoint', s3.endpoint, '--cache-dir', join(dir.path, 'db-cache')];
    let gw = await startGateway([...store, '--export-name', 'db'], { socket, env });
    try {
      await nbdOps(gw.uri, [['write', 8 * M - 4096, 4096, 3], ['flush']]);
      const held = JSON.parse((await volume('list', '--json')).stdout) as Array<{ name: string; lease?: { owner: string } }>;
      assert.ok(held[0]!.lease?.owner, 'the listing names the holder of db\'s lease');
      assertUserError(await volume('resize', 'db', '--size', '16M'), 'S3NBD_VOLUME_IN_USE');
      assertUserError(await volume('delete', 'db'), 'S3NBD_VOLUME_IN_USE');
    } finally {
      await gw.stop();
    }
    assertUserError(await volume('resize', 'db', '--size', '4M'), 'S3NBD_VOLUME_SHRINK');
    const resized = await volume('resize', 'db', '--size', '16M');
    assert.equal(resized.code, 0, resized.stderr);
    gw = await startGateway([...store, '--export-name', 'db'], { socket, env });
    try {
      const info = JSON.parse(await runOk('nbdinfo', ['--json', gw.uri])) as { exports: Array<{ 'export-size': number }> };
      assert.equal(info.exports[0]!['export-size'], 16 * M);
      const results = await nbdOps(gw.uri, [['read', 8 * M - 4096, 4096, 3], ['write', 16 * M - 4096, 4096, 4], ['flush'], ['read', 16 * M - 4096, 4096, 4]]);
      assert.deepEqual(results.filter((r) => r.op === 'read').map((r) => r.match), [true, true]);
    } finally {
      await gw.stop();
    }

    // web has a snapshot: deleting it must be asked for, and then nothing of it is left.
    const made = await cli(['snapshot', 'create', 's1', '--store', 's3://vols/backups/web', '--s3-endpoint', s3.endpoint, '--cache-dir', join(dir.path, 'none')], env);
    assert.equal(made.code, 0, made.stderr);
    assertUserError(await volume('delete', 'web'), 'S3NBD_VOLUME_HAS_SNAPSHOTS');
    const deleted = await volume('delete', 'web', '--with-snapshots');
    assert.equal(deleted.code, 0, deleted.stderr);
    assert.deepEqual(await keysUnder('backups/web/'), []);
    const deletedDb = await volume('delete', 'db');
    assert.equal(deletedDb.code, 0, deletedDb.stderr);
    assert.deepEqual(await keysUnder('backups/db/'), []);
    assert.deepEqual(JSON.parse((await volume('list', '--json')).stdout), []);
    assert.deepEqual(await keysUnder('backups/stray/'), ['backups/stray/readme.txt'], 'what is not a volume is left alone');
  });
});
