// `s3nbd volume create|list|resize|delete` on a directory store: on the store itself when no
// gateway serves the prefix (and their refusals: exit 2, one line, a stable code), and through
// the control socket of a running gateway, which grows a live volume: a new nbdinfo sees the
// new size, nbdsh writes at the new tail and reads it back, and the size and the data survive
// a restart and a kill -9 right after the resize was acknowledged (the real `s3nbd serve`
// opens the volume then).

import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { cli, REPO, startGateway, tempDir } from '../helpers/gateway.ts';
import { parseExtentKey } from '../../src/storage/extents/extent-keys.ts';
import { FileObjectStore } from '../../src/storage/objects/file-object-store.ts';
import { keepOutput } from '../helpers/log-sweep.ts';
import { until } from '../helpers/manual-clock.ts';
import { nbdOps } from '../helpers/nbd-ops.ts';
import { requireTool, runOk } from '../helpers/tools.ts';
import { assertUserError } from '../helpers/user-error.ts';

const M = 1 << 20;

interface VolumeGateway {
  readonly child: ChildProcess;
  readonly exited: Promise<unknown>;
  logs(): string;
}

/** Starts test/helpers/volume-gateway.ts (a gateway serving every volume under `volumes`) and waits until it listens. */
async function startVolumeGateway(volumes: string, cacheDir: string, socket: string): Promise<VolumeGateway> {
  mkdirSync(cacheDir, { recursive: true });
  const child = spawn(process.execPath, [join(REPO, 'test/helpers/volume-gateway.ts'), volumes, cacheDir, socket], { stdio: ['ignore', 'ignore', 'pipe'] });
  let logs = '';
  child.stderr.on('data', (d: Buffer) => { logs += d.toString(); });
  const exited = new Promise((resolve) => child.on('exit', () => {
    keepOutput('volume gateway log', logs);
    resolve(undefined);
  }));
  const killOnExit = (): void => { child.kill('SIGKILL'); };
  process.on('exit', killOnExit);
  void exited.then(() => process.off('exit', killOnExit));
  await until(() => /"msg":"ready"/.test(logs) || child.exitCode !== null, 'the volume gateway listens', 30_000);
  assert.equal(child.exitCode, null, logs);
  return { child, exited, logs: () => logs };
}

const exportSize = async (uri: string): Promise<number> => {
  const info = JSON.parse(await runOk('nbdinfo', ['--json', uri])) as { exports: Array<{ 'export-size': number }> };
  return info.exports[0]!['export-size'];
};

describe('s3nbd volume on a directory store', () => {
  const dir = tempDir('volume-cli');
  after(() => dir.remove());
  const volumes = join(dir.path, 'vols');
  const noGateway = ['--volumes', volumes, '--cache-dir', join(dir.path, 'no-gateway')];

  it('creates, lists, resizes and deletes volumes, each refusal one line with its code and exit 2', async () => {
    assertUserError(await cli(['volume', 'create', 'a/b', ...noGateway, '--size', '8M']), 'S3NBD_BAD_VOLUME_NAME', /"a\/b"/);
    assertUserError(await cli(['volume', 'create', 'db', ...noGateway, '--size', 'lots']), 'S3NBD_BAD_SIZE');
    assertUserError(await cli(['volume', 'create', 'db', ...noGateway, '--size', '1000']), 'S3NBD_BAD_DEVICE_SIZE');
    const created = await cli(['volume', 'create', 'db', ...noGateway, '--size', '8M']);
    assert.equal(created.code, 0, created.stderr);
    assert.match(created.stdout, /created volume db: 8 MiB/);
    assert.equal((await cli(['volume', 'create', 'web', ...noGateway, '--size', '4M', '--extent-size', '64K'])).code, 0);
    assertUserError(await cli(['volume', 'create', 'db', ...noGateway, '--size', '8M']), 'S3NBD_VOLUME_EXISTS', /"db"/);
    const listed = await cli(['volume', 'list', ...noGateway, '--json']);
    assert.equal(listed.code, 0, listed.stderr);
    const rows = JSON.parse(listed.stdout) as Array<{ name: string; size: number; extentSize: number; id: string; snapshots: number; state: string }>;
    assert.deepEqual(rows.map((r) => [r.name, r.size, r.extentSize, r.snapshots, r.state]), [['db', 8 * M, M, 0, 'ok'], ['web', 4 * M, 64 * 1024, 0, 'ok']]);
    assert.match(rows[0]!.id, /^[0-9a-f-]{36}$/);
    const table = await cli(['volume', 'list', ...noGateway], { S3NBD_VOLUMES: '' });
    assert.match(table.stdout, /^NAME +SIZE +ID +SNAPSHOTS +LEASE HELD BY\ndb +8 MiB /);
    // S3NBD_VOLUMES stands for --volumes.
    const viaEnv = await cli(['volume', 'list', '--cache-dir', join(dir.path, 'no-gateway'), '--json'], { S3NBD_VOLUMES: volumes });
    assert.equal((JSON.parse(viaEnv.stdout) as unknown[]).length, 2);

    assertUserError(await cli(['volume', 'resize', 'db', ...noGateway, '--size', '4M']), 'S3NBD_VOLUME_SHRINK', /8388608/, /4194304/);
    assertUserError(await cli(['volume', 'resize', 'nope', ...noGateway, '--size', '16M']), 'S3NBD_NO_VOLUME', /"nope"/);
    const resized = await cli(['volume', 'resize', 'db', ...noGateway, '--size', '16M']);
    assert.equal(resized.code, 0, resized.stderr);
    assert.match(resized.stdout, /volume db is 16 MiB/);

    // A snapshot of the idle volume: deleting the volume must be asked for with --with-snapshots.
    assert.equal((await cli(['snapshot', 'create', 's1', '--store', join(volumes, 'web'), '--cache-dir', join(dir.path, 'no-gateway')])).code, 0);
    assertUserError(await cli(['volume', 'delete', 'web', ...noGateway]), 'S3NBD_VOLUME_HAS_SNAPSHOTS', /1 snapshot/);
    const deleted = await cli(['volume', 'delete', 'web', ...noGateway, '--with-snapshots']);
    assert.equal(deleted.code, 0, deleted.stderr);
    assertUserError(await cli(['volume', 'delete', 'web', ...noGateway]), 'S3NBD_NO_VOLUME');
    assert.deepEqual((JSON.parse((await cli(['volume', 'list', ...noGateway, '--json'])).stdout) as Array<{ name: string; size: number }>).map((r) => [r.name, r.size]),
      [['db', 16 * M]]);
  });

  it('refuses to resize or delete a volume a gateway holds when that gateway does not answer, and says which --cache-dir serves one volume', async () => {
    const socket = join(dir.path, 'single.sock');
    const cacheDir = join(dir.path, 'single-cache');
    const gw = await startGateway(['--store', join(volumes, 'db'), '--cache-dir', cacheDir], { socket });
    try {
      assertUserError(await cli(['volume', 'resize', 'db', ...noGateway, '--size', '32M']), 'S3NBD_VOLUME_IN_USE', /--cache-dir/);
      assertUserError(await cli(['volume', 'delete', 'db', ...noGateway]), 'S3NBD_VOLUME_IN_USE');
      assertUserError(await cli(['volume', 'resize', 'db', '--volumes', volumes, '--cache-dir', cacheDir, '--size', '32M']), 'S3NBD_NOT_VOLUMES_GATEWAY');
      const listed = JSON.parse((await cli(['volume', 'list', ...noGateway, '--json'])).stdout) as Array<{ lease?: { owner: string } }>;
      assert.ok(listed[0]!.lease?.owner, 'the listing names the lease holder');
    } finally {
      await gw.stop();
    }
  });
});

describe('s3nbd volume through a running gateway: a live volume grows', () => {
  const dir = tempDir('volume-grow');
  after(() => dir.remove());
  const volumes = join(dir.path, 'vols');
  const cacheDir = join(dir.path, 'cache');
  const socket = join(dir.path, 'sock');
  const uri = `nbd+unix:///db?socket=${socket}`;
  const viaGateway = ['--volumes', volumes, '--cache-dir', cacheDir];

  it('grows without a restart; a restart and a kill -9 right after the resize keep the size and the data', async () => {
    requireTool('nbdinfo');
    requireTool('nbdsh');
    assert.equal((await cli(['volume', 'create', 'db', '--volumes', volumes, '--cache-dir', join(dir.path, 'none'), '--size', '8M'])).code, 0);
    let gw = await startVolumeGateway(volumes, cacheDir, socket);
    try {
      assert.equal(await exportSize(uri), 8 * M);
      await nbdOps(uri, [['write', 8 * M - 4096, 4096, 1], ['flush']]);
      const resized = await cli(['volume', 'resize', 'db', ...viaGateway, '--size', '24M']);
      assert.equal(resized.code, 0, resized.stderr);
      assert.match(resized.stdout, /volume db is 24 MiB .*new connections see the new size/);
      assert.match(gw.logs(), /"msg":"volume grown"/, 'the gateway did it, not the store behind its back');
      assert.equal(await exportSize(uri), 24 * M, 'a new connection sees the new size');
      // nbdsh writes at the new tail and reads it back, and the old tail, over one new connection.
      const tail = 24 * M - 512;
      const out = await runOk('nbdsh', ['-u', uri, '-c', [
        `h.pwrite(b"new tail" * 64, ${tail})`, 'h.flush()',
        `print(h.get_size(), h.pread(512, ${tail}) == b"new tail" * 64, h.pread(4096, ${16 * M}) == bytes(4096))`,
      ].join('\n')]);
      assert.equal(out.trim(), `${24 * M} True True`);
      assert.ok((await nbdOps(uri, [['read', 8 * M - 4096, 4096, 1]]))[0]!.match);
      // Creating and deleting through the gateway: it serves the new volume at once, and stops.
      assert.equal((await cli(['volume', 'create', 'extra', ...viaGateway, '--size', '4M'])).code, 0);
      assert.equal(await exportSize(`nbd+unix:///extra?socket=${socket}`), 4 * M);
      assertUserError(await cli(['volume', 'resize', 'db', ...viaGateway, '--size', '8M']), 'S3NBD_VOLUME_SHRINK');
      const listed = JSON.parse((await cli(['volume', 'list', ...viaGateway, '--json'])).stdout) as Array<{ name: string; size: number; lease?: unknown }>;
      assert.deepEqual(listed.map((v) => [v.name, v.size, v.lease !== undefined]), [['db', 24 * M, true], ['extra', 4 * M, true]]);
      assert.equal((await cli(['volume', 'delete', 'extra', ...viaGateway])).code, 0);
      assert.deepEqual((JSON.parse((await cli(['volume', 'list', ...viaGateway, '--json'])).stdout) as Array<{ name: string }>).map((v) => v.name), ['db']);
    } finally {
      gw.child.kill('SIGTERM');
      await gw.exited;
    }

    // A clean restart: the size and both tails are there.
    gw = await startVolumeGateway(volumes, cacheDir, socket);
    try {
      assert.equal(await exportSize(uri), 24 * M);
      const read = await runOk('nbdsh', ['-u', uri, '-c', `print(h.pread(512, ${24 * M - 512}) == b"new tail" * 64)`]);
      assert.equal(read.trim(), 'True');
      // Grow again, write past the old end without a flush, and kill -9 at once.
      const resized = await cli(['volume', 'resize', 'db', ...viaGateway, '--size', '40M']);
      assert.equal(resized.code, 0, resized.stderr);
      await nbdOps(uri, [['write', 40 * M - 8192, 8192, 7], ['write', 30 * M, 4096, 8]]);
      gw.child.kill('SIGKILL');
      await gw.exited;
    } finally {
      gw.child.kill('SIGKILL');
    }

    // Those writes are in the journal alone (the gateway uploads nothing before a FLUSH asks).
    const stored = new Set<number>();
    for await (const key of new FileObjectStore(join(volumes, 'db')).list('extents/')) stored.add(parseExtentKey(key)!.index);
    assert.deepEqual([stored.has(30), stored.has(39)], [false, false], 'the writes past 24M are not in the store');
    assert.ok(stored.has(23), 'the flushed tail of the first growth is');
    // The real gateway opens the volume at its new size, and replays the writes past the old end from the journal.
    const real = await startGateway(['--store', join(volumes, 'db'), '--cache-dir', join(cacheDir, 'volumes', 'db'), '--export-name', 'db'], { socket });
    try {
      assert.equal(await exportSize(uri), 40 * M);
      const results = await nbdOps(uri, [['read', 40 * M - 8192, 8192, 7], ['read', 30 * M, 4096, 8], ['read', 8 * M - 4096, 4096, 1], ['read', 32 * M, 4096, null]]);
      assert.deepEqual(results.map((r) => r.match), [true, true, true, true]);
      const read = await runOk('nbdsh', ['-u', uri, '-c', `print(h.pread(512, ${24 * M - 512}) == b"new tail" * 64)`]);
      assert.equal(read.trim(), 'True');
    } finally {
      await real.stop();
    }
  });
});
