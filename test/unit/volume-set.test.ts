// serve --volumes below the CLI: volume names, finding the volumes under a prefix, each
// volume's share of the budgets (and that its storage gets exactly that), skipping a bad
// volume, and creating and deleting volumes at runtime. Real directory stores and caches.

import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { pino } from 'pino';
import { callGateway } from '../../src/control/control-socket.ts';
import { UserError } from '../../src/errors.ts';
import { bufferBudgetBytes, gatewayBufferBytes } from '../../src/memory-budget.ts';
import { FileObjectStore } from '../../src/storage/objects/file-object-store.ts';
import { MemoryObjectStore } from '../../src/storage/objects/memory-object-store.ts';
import { openObjectStore } from '../../src/storage/objects/store-url.ts';
import { openStorage } from '../../src/storage/stack.ts';
import { checkVolumeName, checkVolumesStore, discoverVolumes, isVolumeName, volumeStoreUrl } from '../../src/storage/volume/volume-names.ts';
import { openVolume, VOLUME_KEY } from '../../src/storage/volume/volume.ts';
import type { VolumeStatus } from '../../src/service/gateway-view.ts';
import { VolumeSet, type VolumeSetConfig } from '../../src/service/volume-set.ts';
import { shareOf } from '../../src/service/volume-shares.ts';

const code = (c: string) => (err: unknown) => err instanceof UserError && err.code === c;
const log = pino({ level: 'silent' });
const MiB = 2 ** 20;
const dirs: string[] = [];
const tempDir = (): string => {
  const dir = mkdtempSync(join(tmpdir(), 's3nbd-volume-set-'));
  dirs.push(dir);
  return dir;
};
after(() => { for (const dir of dirs) rmSync(dir, { recursive: true, force: true }); });

async function makeVolume(root: string, name: string, size = 16 * MiB): Promise<string> {
  const { volume } = await openVolume(new FileObjectStore(join(root, name)), { mode: 'create', size });
  return volume.id;
}

describe('volume names', () => {
  it('are 1 to 63 letters, digits, dots, dashes and underscores, starting with a letter or digit', () => {
    for (const good of ['a', 'A9', 'laptop-anna', 'db_1.img', 'x'.repeat(63), '0']) assert.equal(isVolumeName(good), true, good);
    for (const bad of ['', '.hidden', '-x', '_x', 'a/b', 'a@b', 'a b', 'x'.repeat(64), '..', 'é']) assert.equal(isVolumeName(bad), false, bad);
    assert.throws(() => checkVolumeName('a@b'), code('S3NBD_BAD_VOLUME_NAME'));
    assert.equal(checkVolumeName('vm-01'), 'vm-01');
  });

  it('name a sub-prefix of the --volumes URL, as --store would', () => {
    const s3 = openObjectStore('s3://bucket/backups/');
    assert.equal(volumeStoreUrl('s3://bucket/backups/', 'vm1', s3), 's3://bucket/backups/vm1');
    assert.equal(volumeStoreUrl('s3://bucket//a//b', 'vm1', s3), 's3://bucket/a/b/vm1');
    assert.equal(volumeStoreUrl('s3://bucket', 'vm1', openObjectStore('s3://bucket')), 's3://bucket/vm1');
    const root = tempDir();
    assert.equal(volumeStoreUrl(root, 'vm1', openObjectStore(root)), join(root, 'vm1'));
    assert.throws(() => volumeStoreUrl(root, '../etc', openObjectStore(root)), code('S3NBD_BAD_VOLUME_NAME'));
  });
});

describe('finding the volumes under a prefix', () => {
  it('finds the sub-prefixes that hold volume metadata, in name order, in a directory', async () => {
    const root = tempDir();
    await makeVolume(root, 'web');
    await makeVolume(root, 'db');
    mkdirSync(join(root, 'empty'));
    mkdirSync(join(root, 'other', 'x'), { recursive: true });
    writeFileSync(join(root, 'other', 'x', VOLUME_KEY), '{}'); // deeper: not a volume of this prefix
    writeFileSync(join(root, 'stray-file'), 'x');
    mkdirSync(join(root, '.bad name'));
    writeFileSync(join(root, '.bad name', VOLUME_KEY), '{}');
    assert.deepEqual(await discoverVolumes(new FileObjectStore(root)), { volumes: ['db', 'web'], badNames: ['.bad name'] });
    assert.deepEqual(await discoverVolumes(new FileObjectStore(join(root, 'missing'))), { volumes: [], badNames: [] });
  });

  it('falls back to listing every key in a store without listPrefixes', async () => {
    const store = new MemoryObjectStore();
    await store.put(`b/${VOLUME_KEY}`, Buffer.from('{}'));
    await store.put('b/extents/0', Buffer.from('x'));
    await store.put(`a/${VOLUME_KEY}`, Buffer.from('{}'));
    await store.put('c/lease', Buffer.from('x'));
    const withoutPrefixes = Object.assign(Object.create(store) as MemoryObjectStore, { listPrefixes: undefined });
    assert.deepEqual(await discoverVolumes(withoutPrefixes), { volumes: ['a', 'b'], badNames: [] });
  });

  it('refuses memory: and a prefix that is a volume itself', async () => {
    await assert.rejects(checkVolumesStore('memory:', new MemoryObjectStore()), code('S3NBD_BAD_VOLUMES'));
    const root = tempDir();
    await makeVolume(root, '');
    await assert.rejects(checkVolumesStore(root, new FileObjectStore(root)), code('S3NBD_BAD_VOLUMES'));
  });
});

describe('budget shares', () => {
  const totals = { memoryCacheBytes: 1024 * MiB, cacheBytes: 4096 * MiB, maxDirtyBytes: 1024 * MiB, uploadConcurrency: 16 };

  it('gives each of --max-volumes slots an equal part of each total, at least one upload', () => {
    assert.deepEqual(shareOf(totals, 1), totals);
    assert.deepEqual(shareOf(totals, 8), { memoryCacheBytes: 128 * MiB, cacheBytes: 512 * MiB, maxDirtyBytes: 128 * MiB, uploadConcurrency: 2 });
    assert.deepEqual(shareOf({ ...totals, cacheBytes: 1000 }, 3).cacheBytes, 333);
    assert.equal(shareOf(totals, 32).uploadConcurrency, 1);
    for (const n of [1, 3, 7, 16]) {
      const share = shareOf(totals, n);
      assert.ok(share.cacheBytes * n <= totals.cacheBytes && share.maxDirtyBytes * n <= totals.maxDirtyBytes && share.memoryCacheBytes * n <= totals.memoryCacheBytes);
    }
    assert.throws(() => shareOf(totals, 0));
  });

  it('counts the server\'s in-flight payloads once in the memory budget of many volumes', () => {
    const v = { memoryCacheBytes: 64 * MiB, extentSize: MiB, uploadConcurrency: 2, s3Connections: 20 };
    assert.equal(gatewayBufferBytes([v], 64 * MiB), bufferBudgetBytes({ ...v, inFlightBytes: 64 * MiB }));
    const three = gatewayBufferBytes([v, v, v], 64 * MiB);
    const server = gatewayBufferBytes([], 64 * MiB);
    assert.ok(server > 0);
    assert.equal(three, 3 * bufferBudgetBytes({ ...v, inFlightBytes: 64 * MiB }) - 2 * server);
  });
});

describe('a volume set on a directory', () => {
  const config = (root: string, maxVolumes: number): VolumeSetConfig => ({
    url: root, s3: {}, objects: {}, readOnly: false, maxVolumes, cacheDir: tempDir(), log,
    totals: { memoryCacheBytes: 64 * MiB, cacheBytes: 128 * MiB, maxDirtyBytes: 32 * MiB, uploadConcurrency: 8 },
    cache: { flushMode: 's3', uploadDelayMs: 0, leaseTtlMs: 30_000, takeOver: false },
  });

  it('serves each volume with its share, skips a bad one, creates and deletes at runtime', async () => {
    const root = tempDir();
    const ids = { a: await makeVolume(root, 'a'), b: await makeVolume(root, 'b', 32 * MiB) };
    mkdirSync(join(root, 'broken'));
    writeFileSync(join(root, 'broken', VOLUME_KEY), 'not json');
    const cfg = config(root, 4);
    const set = await VolumeSet.open(cfg);
    try {
      assert.deepEqual(set.volumes().map((v) => v.name), ['a', 'b']);
      assert.deepEqual(set.skipped().map((v) => v.name), ['broken']);
      assert.match(set.skipped()[0]!.error, /S3NBD_BAD_VOLUME/);
      // Each volume's storage got a quarter of each total.
      for (const volume of set.volumes()) {
        const cache = volume.storage.cache!;
        assert.equal(cache.status().cacheSlots, 32); // 128 MiB / 4 in 1 MiB extents
        const options = (cache as unknown as { ctx: { options: { memoryCacheBytes: number; maxDirtyBytes: number; uploadConcurrency: number; cacheDir: string } } }).ctx.options;
        assert.deepEqual([options.memoryCacheBytes, options.maxDirtyBytes, options.uploadConcurrency], [16 * MiB, 8 * MiB, 2]);
        assert.equal(options.cacheDir, join(cfg.cacheDir, 'volumes', volume.name));
      }
      // A volume's view for the admin endpoint: live status, readiness.
      const a = set.volumes()[0]!;
      const status = await a.status();
      assert.deepEqual([status.name, status.volumeId, status.size, status.lease, status.connections, status.readOnly], ['a', ids.a, 16 * MiB, 'held', 0, false]);
      assert.equal(status.cache?.cacheSlots, 32);
      assert.deepEqual(await a.readiness(), { ready: true });
      assert.equal(set.bufferBytes(64 * MiB), gatewayBufferBytes(set.volumes().map((v) => v.memoryOptions()), 64 * MiB));
      // Exports: by name, with descriptions; "" names none.
      assert.deepEqual((await set.exports.list()).map(({ name, description }) => ({ name, description })), [
        { name: 'a', description: `s3nbd volume ${ids.a}, 16 MiB` },
        { name: 'b', description: `s3nbd volume ${ids.b}, 32 MiB` },
      ]);
      assert.equal(await set.exports.find(''), undefined);
      assert.equal(await set.exports.find('@x'), undefined);
      assert.equal((await set.exports.find('b'))?.device.size, 32 * MiB);
      assert.equal(await set.exports.find('c'), undefined);

      // Through the gateway's control socket, as the volume commands reach it; a second gateway on the cache directory is refused.
      const created = await callGateway(cfg.cacheDir, { op: 'volume.create', name: 'c', size: 8 * MiB }) as VolumeStatus;
      await assert.rejects(VolumeSet.open(cfg), code('S3NBD_CACHE_DIR_LOCKED'));
      assert.equal(created.name, 'c');
      assert.equal(created.size, 8 * MiB);
      assert.equal((await set.exports.find('c'))?.device.size, 8 * MiB);
      assert.ok(existsSync(join(root, 'c', VOLUME_KEY)));
      await assert.rejects(set.admin.create('c', 8 * MiB), code('S3NBD_VOLUME_EXISTS'));
      await assert.rejects(set.admin.create('no/slash', 8 * MiB), code('S3NBD_BAD_VOLUME_NAME'));
      await set.admin.create('d', 8 * MiB);
      await assert.rejects(set.admin.create('e', 8 * MiB), code('S3NBD_TOO_MANY_VOLUMES'));
      // Grown while served: new connections see the new size.
      assert.equal((await callGateway(cfg.cacheDir, { op: 'volume.resize', name: 'a', size: 64 * MiB }) as VolumeStatus).size, 64 * MiB);
      assert.equal((await set.exports.find('a'))?.device.size, 64 * MiB);
      assert.equal((await set.exports.list()).find((e) => e.name === 'a')?.description, `s3nbd volume ${ids.a}, 64 MiB`, 'NBD_OPT_LIST gives the new size');
      await assert.rejects(set.admin.resize('a', 32 * MiB), code('S3NBD_VOLUME_SHRINK'));
      await assert.rejects(set.admin.resize('zz', 64 * MiB), code('S3NBD_NO_VOLUME'));

      // A snapshot of a through a's own control socket; a clone of it keeps a from deletion.
      await callGateway(join(cfg.cacheDir, 'volumes', 'a'), { op: 'snapshot.create', name: 's1' });
      assert.ok(await set.exports.find('a@s1'));
      await new FileObjectStore(join(root, 'a')).put('clones/s1/0f0e6a1c-8f3e-4a57-9d5e-2b1c0d9e8f7a', Buffer.from('{"format":"s3nbd-clone","store":"/elsewhere","volumeId":"0f0e6a1c-8f3e-4a57-9d5e-2b1c0d9e8f7a"}'));
      await assert.rejects(set.admin.delete('a', { withSnapshots: true }), code('S3NBD_VOLUME_HAS_CLONES'));
      assert.ok(await set.exports.find('a'), 'a is still served');

      // A client on b: deleting it is refused unless forced, and then the client is dropped.
      const b = set.volumes().find((v) => v.name === 'b')!;
      let dropped = 0;
      const detach = b.main.attach!(() => { dropped++; });
      assert.equal(b.connections, 1);
      await assert.rejects(callGateway(cfg.cacheDir, { op: 'volume.delete', name: 'b' }), code('S3NBD_VOLUME_BUSY'));
      await set.admin.delete('b', { force: true });
      detach();
      assert.equal(dropped, 1);
      assert.equal(await set.exports.find('b'), undefined);
      assert.equal(existsSync(join(root, 'b', VOLUME_KEY)), false);
      assert.equal(existsSync(join(cfg.cacheDir, 'volumes', 'b')), false);
      await assert.rejects(set.admin.delete('b'), code('S3NBD_NO_VOLUME'));
      assert.deepEqual(set.volumes().map((v) => v.name), ['a', 'c', 'd']);
      assert.deepEqual((await discoverVolumes(new FileObjectStore(root))).volumes, ['a', 'broken', 'c', 'd']);
    } finally {
      assert.equal(await set.close(1000), true);
    }
    assert.equal(await callGateway(cfg.cacheDir, { op: 'hello' }), undefined, 'the control socket is closed with the set');
  });

  it('stops serving a volume another gateway takes over, and goes on serving the others', async () => {
    const root = tempDir();
    for (const name of ['p', 'q']) await makeVolume(root, name);
    const cfg = { ...config(root, 2), cache: { flushMode: 's3' as const, uploadDelayMs: 0, leaseTtlMs: 3000, takeOver: false } };
    const set = await VolumeSet.open(cfg);
    try {
      assert.deepEqual(set.volumes().map((v) => v.name), ['p', 'q']);
      const p = set.volumes()[0]!;
      let dropped = 0;
      const detach = p.main.attach!(() => { dropped++; });
      // Another gateway takes p over (--take-over), with its own cache directory.
      const other = await openStorage({
        store: join(root, 'p'), volume: { mode: 'open' }, objects: {}, readOnly: false, memoryCacheBytes: 16 * MiB, log,
        cache: { dir: tempDir(), cacheBytes: 32 * MiB, maxDirtyBytes: 8 * MiB, uploadConcurrency: 2, flushMode: 's3', uploadDelayMs: 0, leaseTtlMs: 3000, takeOver: true },
      });
      try {
        // p's next renewal (every second) finds the lease taken.
        for (const deadline = Date.now() + 20_000; set.volumes().length > 1;) {
          if (Date.now() > deadline) throw new Error('p was not retired');
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
        detach();
        assert.deepEqual(set.volumes().map((v) => v.name), ['q']);
        assert.equal(dropped, 1, 'its clients were dropped');
        assert.deepEqual(set.skipped().map((v) => v.name), ['p']);
        assert.match(set.skipped()[0]!.error, /S3NBD_VOLUME_IN_USE/);
        assert.equal(await set.exports.find('p'), undefined);
        assert.ok(await set.exports.find('q'));
        assert.deepEqual(await set.volumes()[0]!.readiness(), { ready: true });
      } finally {
        await other.close(0);
      }
    } finally {
      await set.close(0);
    }
  });

  it('skips the volumes past --max-volumes, in name order', async () => {
    const root = tempDir();
    for (const name of ['v1', 'v2', 'v3']) await makeVolume(root, name);
    const set = await VolumeSet.open(config(root, 2));
    try {
      assert.deepEqual(set.volumes().map((v) => v.name), ['v1', 'v2']);
      assert.deepEqual(set.skipped().map((v) => v.name), ['v3']);
      assert.match(set.skipped()[0]!.error, /S3NBD_TOO_MANY_VOLUMES/);
    } finally {
      await set.close(0);
    }
  });

  it('refuses budgets whose shares cannot hold the dirty data', async () => {
    const cfg = config(tempDir(), 64);
    await assert.rejects(VolumeSet.open(cfg), code('S3NBD_BAD_CACHE_SIZE'));
  });
});
