// The backup journey with history (docs/kernel-client.md, "History: snapshots"), on MinIO:
// ext4 on the volume through the kernel (nbdfuse + a loop device), a tree T1 rsynced, `sync`,
// `s3nbd snapshot create s1` through the running gateway between `fsfreeze --freeze` and
// `--unfreeze`; T2 rsynced over it with --delete, `sync`, snapshot s2 the same way. Then, while
// a writer keeps changing the mounted file system (new fsynced files, T2's blocks rewritten in
// place, deletes and fstrim), the same gateway serves @s1 and @s2: each, attached read-only,
// passes `e2fsck -fn` with nothing to fix, mounts `-o ro`, and holds exactly T1's and T2's
// files with their checksums. A snapshot s3 taken in the middle of the writes without
// fsfreeze is crash-consistent: once its journal is replayed (on a copy), e2fsck is clean and
// every file fsynced before it is there. The live file system is clean after the writer.
// Deleting s1 leaves s2 reading back byte for byte, and after `s3nbd gc` the bucket holds
// exactly the data objects the volume and s2 name.
//
// Why fsfreeze (found here): a snapshot taken after `sync` alone is of a mounted ext4. Its
// superblock says needs_recovery and its journal holds committed transactions whose blocks
// `sync` need not have written to their home locations yet. Six runs of this test's first step
// without the freeze, each on a new volume: in one, `e2fsck -fn` of s1 found 16 problems
// (inodes in use marked unused, bitmap differences, wrong counts; exit 4), and replaying the
// journal on a copy rewrote the group descriptor block besides the two superblocks, after
// which e2fsck was clean; in the other five the replay changed only the superblocks. s3
// below, unfrozen and taken mid-write, may or may not check clean before its replay; that is
// only logged. The kernel will not mount such an image `-o ro` from a
// read-only device ("recovery required on readonly filesystem ... write access unavailable,
// cannot proceed"), and `-o ro,noload` would show the file system without the transactions
// still in the journal: not the data that was synced. fsfreeze writes the journal out and
// clears needs_recovery, so the frozen snapshot is a clean file system that any reader can
// check and mount read-only as it is; an unfrozen one is as after a power cut, readable once
// its journal is replayed on a writable copy.

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { EXTENT_PREFIX, parseExtentKey } from '../../src/storage/extents/extent-keys.ts';
import { ObjectExtents } from '../../src/storage/extents/extent-objects.ts';
import { keyOf } from '../../src/storage/extents/object-census.ts';
import { S3ObjectStore } from '../../src/storage/objects/s3/s3-object-store.ts';
import { SnapshotRegistry } from '../../src/storage/snapshots/registry.ts';
import { openVolume } from '../../src/storage/volume/volume.ts';
import { cli, type Gateway, startGateway, tempDir } from '../helpers/gateway.ts';
import { attachKernelDisk, type KernelDisk, mount, unmount } from '../helpers/kernel-disk.ts';
import { credentialsEnv, type S3TestServer, startMinio } from '../helpers/minio.ts';
import { requireTool, run, runOk } from '../helpers/tools.ts';
import { checksums, makeFirstTree, makeSecondTree, SECOND_TREE } from '../helpers/trees.ts';

const MiB = 1024 * 1024;
const SIZE = 512 * MiB;
const EXTENT = MiB;
const BUCKET = 's3nbd-history';
const PREFIX = 'backup1';
const STORE = `s3://${BUCKET}/${PREFIX}`;

/**
 * Keeps writing the mounted live file system until stopped: each round a new 2 MiB file
 * (fsynced), 512 KiB of T2's archive-3 rewritten in place (the blocks s2 holds), and every
 * fourth round the oldest new file deleted and `fstrim`, so the gateway zeroes extents.
 * Remembers what every file it leaves should hold.
 */
class Writer {
  rounds = 0;
  readonly expected = new Map<string, Buffer>();
  private stopping = false;
  private failure: Error | undefined;
  private readonly wakers = new Set<() => void>();
  private readonly mnt: string;
  readonly done: Promise<void>;

  constructor(mnt: string, archive: Buffer) {
    this.mnt = mnt;
    this.expected.set(SECOND_TREE.added[2], Buffer.from(archive));
    this.done = this.run().catch((err: unknown) => { this.failure = err instanceof Error ? err : new Error(String(err)); }).finally(() => this.wake());
  }

  private wake(): void {
    for (const waker of this.wakers) waker();
  }

  private async run(): Promise<void> {
    await mkdir(join(this.mnt, 'more'));
    for (let i = 0; !this.stopping; i++) {
      const body = randomBytes(2 * MiB);
      await this.write(`more/f${i}`, body, 0, 'w');
      this.expected.set(`more/f${i}`, body);
      const archive = this.expected.get(SECOND_TREE.added[2])!;
      const patch = randomBytes(512 * 1024);
      const at = (i * patch.length) % archive.length;
      await this.write(SECOND_TREE.added[2], patch, at, 'r+');
      patch.copy(archive, at);
      if (i % 4 === 3) {
        await rm(join(this.mnt, `more/f${i - 3}`));
        this.expected.delete(`more/f${i - 3}`);
        await runOk('fstrim', [this.mnt]);
      }
      this.rounds++;
      this.wake();
    }
  }

  private async write(path: string, data: Buffer, at: number, flags: 'w' | 'r+'): Promise<void> {
    const file = await open(join(this.mnt, path), flags);
    try {
      await file.write(data, 0, data.length, at);
      await file.sync();
    } finally {
      await file.close();
    }
  }

  /** Resolves once `n` more rounds are done than now: writes go on while the caller works. */
  async more(n: number): Promise<void> {
    const target = this.rounds + n;
    const deadline = Date.now() + 300_000;
    while (this.rounds < target) {
      if (this.failure !== undefined) throw this.failure;
      assert.ok(!this.stopping, 'the writer was stopped');
      assert.ok(Date.now() < deadline, `the writer did ${this.rounds} rounds, not ${target}, in 300 s`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 1000);
        this.wakers.add(() => { clearTimeout(timer); resolve(); });
      });
      this.wakers.clear();
    }
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await this.done;
    if (this.failure !== undefined) throw this.failure;
  }
}

describe('the backup journey with history, on MinIO', () => {
  const dir = tempDir('history');
  const socket = join(dir.path, 'nbd.sock');
  const cacheDir = join(dir.path, 'cache');
  const live = join(dir.path, 'live');
  const t1 = join(dir.path, 'T1');
  const t2 = join(dir.path, 'T2');
  let s3: S3TestServer;
  let env: NodeJS.ProcessEnv;
  let gw: Gateway | undefined;
  let disk: KernelDisk | undefined;
  let writer: Writer | undefined;
  // Mounts and disks of the snapshots, undone in after() whatever happened.
  const mounts = new Set<string>();
  const disks = new Set<KernelDisk>();
  const want = new Map<string, Map<string, string>>();
  const imageSums = new Map<string, string>();
  const s3nbd = (...args: string[]) => cli([...args, '--store', STORE, '--s3-endpoint', s3.endpoint, '--cache-dir', cacheDir], env);

  before(async () => {
    for (const tool of ['nbdfuse', 'nbdcopy', 'nbdinfo', 'losetup', 'mkfs.ext4', 'e2fsck', 'rsync', 'fstrim', 'fsfreeze', 'fusermount3', 'sync'] as const) requireTool(tool);
    s3 = await startMinio();
    await s3.createBucket(BUCKET);
    env = credentialsEnv(s3);
    makeFirstTree(t1);
    makeSecondTree(t1, t2);
    want.set('s1', await checksums(t1));
    want.set('s2', await checksums(t2));
  });

  after(async () => {
    // Bounded: a writer stuck on a gateway that died must not hang the run.
    await Promise.race([writer?.stop().catch(() => undefined), new Promise((r) => setTimeout(r, 60_000).unref())]);
    await run('fsfreeze', ['--unfreeze', live]);
    for (const m of [...mounts, live]) await run('umount', [m]);
    for (const d of [...disks, ...(disk ? [disk] : [])]) await d.detach().catch(() => undefined);
    await gw?.stop();
    await s3?.stop();
    dir.remove();
  });

  async function timed<T>(what: string, work: () => Promise<T>): Promise<T> {
    const started = Date.now();
    const result = await work();
    console.log(`# ${what}: ${((Date.now() - started) / 1000).toFixed(1)} s`);
    return result;
  }

  /**
   * `s3nbd snapshot create NAME` through the gateway. frozen: between `fsfreeze --freeze` and
   * `--unfreeze` of the live file system, as the guide says: ext4 writes its journal out and
   * marks itself clean, so the snapshot needs no journal replay.
   */
  async function snapshot(name: string, frozen: boolean): Promise<void> {
    if (frozen) await runOk('fsfreeze', ['--freeze', live]);
    try {
      const made = await s3nbd('snapshot', 'create', name);
      assert.equal(made.code, 0, made.stderr);
      assert.match(made.stdout, new RegExp(`^created snapshot ${name}: \\d+ extents`));
    } finally {
      if (frozen) await runOk('fsfreeze', ['--unfreeze', live]);
    }
  }

  /** Mounts a read-only loop device, returns the checksums of its files, unmounts it. */
  async function filesOn(device: string, name: string): Promise<Map<string, string>> {
    const mnt = join(dir.path, `mnt-${name}`);
    mounts.add(mnt);
    await mount(device, mnt, ['-o', 'ro']);
    const sums = await checksums(mnt);
    await unmount(mnt);
    mounts.delete(mnt);
    return sums;
  }

  /** Attaches @NAME read-only: e2fsck -fn clean, mount -o ro, every checksum as wanted. */
  async function checkSnapshot(name: string): Promise<void> {
    const snap = await attachKernelDisk(`nbd+unix:///@${name}?socket=${socket}`, dir.path, { readOnly: true });
    disks.add(snap);
    const fsck = await run('e2fsck', ['-fn', snap.loop]);
    assert.equal(fsck.code, 0, `e2fsck -fn of @${name}:\n${fsck.stdout}${fsck.stderr}`);
    assert.doesNotMatch(fsck.stderr + fsck.stdout, /journal recovery|Fix\?/, 'frozen: nothing left in the journal');
    assert.deepEqual(await filesOn(snap.loop, name), want.get(name), `@${name} holds exactly ${name === 's1' ? 'T1' : 'T2'}`);
    await snap.detach();
    disks.delete(snap);
  }

  /** SHA-256 of the whole of @NAME, read with nbdcopy. */
  async function imageSum(name: string): Promise<string> {
    const image = join(dir.path, `${name}.img`);
    await runOk('nbdcopy', [`nbd+unix:///@${name}?socket=${socket}`, image]);
    const sum = createHash('sha256').update(await readFile(image)).digest('hex');
    await rm(image);
    return sum;
  }

  it('T1 rsynced, sync, snapshot s1; T2 rsynced with --delete, sync, snapshot s2, through the running gateway', { timeout: 600_000 }, async () => {
    gw = await startGateway(['--store', STORE, '--s3-endpoint', s3.endpoint, '--size', String(SIZE), '--cache-dir', cacheDir], { socket, env });
    disk = await attachKernelDisk(gw.uri, dir.path);
    await runOk('mkfs.ext4', ['-F', '-q', disk.loop]);
    await mount(disk.loop, live);
    await timed('T1 rsynced, synced, s1', async () => {
      await runOk('rsync', ['-a', '--delete', `${t1}/`, `${live}/`]);
      await runOk('sync', []);
      await snapshot('s1', true);
    });
    await timed('T2 rsynced, synced, s2', async () => {
      await runOk('rsync', ['-a', '--delete', `${t2}/`, `${live}/`]);
      await runOk('sync', []);
      await snapshot('s2', true);
    });
    assert.equal([...gw.logs().matchAll(/"msg":"snapshot created"/g)].length, 2, 'the gateway took both');
    assert.deepEqual(await checksums(live), want.get('s2'));
    const listed = JSON.parse(await runOk('nbdinfo', ['--list', '--json', gw.uri])) as { exports: Array<{ 'export-name': string }> };
    assert.deepEqual(listed.exports.map((e) => e['export-name']), ['', '@s1', '@s2']);
  });

  it('while the volume is written, @s1 and @s2 are clean (e2fsck -fn), mount read-only, and hold every file of T1 and T2', { timeout: 900_000 }, async () => {
    assert.ok(disk, 'the first step ran');
    writer = new Writer(live, await readFile(join(t2, SECOND_TREE.added[2])));
    await writer.more(1);
    for (const name of ['s1', 's2']) {
      await timed(`@${name}: e2fsck -fn, mount -o ro, checksums`, () => checkSnapshot(name));
      await writer.more(1);
    }
    imageSums.set('s2', await imageSum('s2'));
    console.log(`# the writer did ${writer.rounds} rounds meanwhile`);
  });

  it('a snapshot taken in the middle of the writes, without fsfreeze, is crash-consistent: clean once its journal is replayed on a copy', { timeout: 600_000 }, async () => {
    assert.ok(writer, 'the writer runs');
    await writer.more(1);
    // Everything fsynced before the snapshot is in it: the new files of finished rounds that no
    // later round deletes, and T2 but for the archive the writer keeps rewriting.
    const synced = [...writer.expected].filter(([path]) => path !== SECOND_TREE.added[2] && Number(/^more\/f(\d+)$/.exec(path)?.[1]) % 4 !== 0);
    await snapshot('s3', false);
    const image = join(dir.path, 's3.img');
    await runOk('nbdcopy', [`nbd+unix:///@s3?socket=${socket}`, image]);
    const raw = await run('e2fsck', ['-fn', image]);
    console.log(`# @s3 unreplayed: e2fsck -fn exits ${raw.code}${raw.code === 0 ? '' : ` (${raw.stdout.split('\n').filter((l) => /Fix\?|Clear\?/.test(l)).length} problems before the replay)`}`);
    assert.match(raw.stdout + raw.stderr, /skipping journal recovery/, 'taken while mounted: its journal needs replaying');
    const recovery = await run('e2fsck', ['-E', 'journal_only', '-y', image]);
    assert.equal(recovery.code, 0, recovery.stdout + recovery.stderr);
    const fsck = await run('e2fsck', ['-fn', image]);
    assert.equal(fsck.code, 0, `@s3 after its journal replayed:\n${fsck.stdout}${fsck.stderr}`);
    const loop = (await runOk('losetup', ['-r', '--show', '-f', image])).trim();
    let sums: Map<string, string>;
    try {
      sums = await filesOn(loop, 's3');
    } finally {
      await run('losetup', ['-d', loop]);
    }
    await rm(image);
    for (const [path, hash] of want.get('s2')!) if (path !== SECOND_TREE.added[2]) assert.equal(sums.get(path), hash, path);
    for (const [path, body] of synced) assert.equal(sums.get(path), createHash('sha256').update(body).digest('hex'), path);
    const deleted = await s3nbd('snapshot', 'delete', 's3');
    assert.equal(deleted.code, 0, deleted.stderr);
  });

  it('the live volume, after the writer, holds what it wrote and is clean once unmounted', { timeout: 600_000 }, async () => {
    assert.ok(writer && disk, 'the writer ran');
    await writer.stop();
    const sums = await checksums(live);
    for (const [path, body] of writer.expected) assert.equal(sums.get(path), createHash('sha256').update(body).digest('hex'), path);
    await unmount(live);
    const fsck = await run('e2fsck', ['-fn', disk.loop]);
    assert.equal(fsck.code, 0, fsck.stdout + fsck.stderr);
    assert.doesNotMatch(fsck.stdout + fsck.stderr, /journal recovery/);
  });

  it('deleting s1 leaves s2 identical, and after gc the bucket holds exactly the objects of the volume and s2', { timeout: 600_000 }, async () => {
    assert.ok(gw && imageSums.has('s2'), 'the earlier steps ran');
    const deleted = await s3nbd('snapshot', 'delete', 's1');
    assert.equal(deleted.code, 0, deleted.stderr);
    const freed = Number(/^deleted snapshot s1; (\d+) objects/.exec(deleted.stdout)?.[1]);
    assert.ok(freed > 0, `s1 alone held objects: ${deleted.stdout}`);
    const listed = JSON.parse(await runOk('nbdinfo', ['--list', '--json', gw.uri])) as { exports: Array<{ 'export-name': string }> };
    assert.deepEqual(listed.exports.map((e) => e['export-name']), ['', '@s2']);

    const image = join(dir.path, 's2-again.img');
    await runOk('nbdcopy', [`nbd+unix:///@s2?socket=${socket}`, image]);
    assert.equal(createHash('sha256').update(await readFile(image)).digest('hex'), imageSums.get('s2'), '@s2 reads back byte for byte');
    await rm(image);
    await checkSnapshot('s2');

    const gc = await s3nbd('gc');
    assert.equal(gc.code, 0, gc.stderr);
    // Tombstones of extents no snapshot needs stay while the gateway may not know every object yet.
    const { data, tombstones, volume, s2 } = await census(/tombstones stay/.test(gc.stdout));
    const referenced = new Set([...volume, ...s2]);
    assert.deepEqual(data, [...referenced].sort(), 'every data object in the bucket is the volume\'s or s2\'s, and each of theirs is there');
    console.log(`# bucket after gc: ${data.length} data objects (volume ${volume.length}, s2 ${s2.length}, shared ${volume.length + s2.length - referenced.size}), ${tombstones.length} tombstones; s1's delete freed ${freed}`);
    assert.equal(await gw.stop(), 0, gw.logs().slice(-4000));
    gw = undefined;
  });

  /** The bucket's extent objects, listed, and the objects the volume reads and s2 names. */
  async function census(tombstonesKept: boolean): Promise<{ data: string[]; tombstones: string[]; volume: string[]; s2: string[] }> {
    const client = new S3Client({ endpoint: s3.endpoint, region: s3.region, forcePathStyle: true,
      credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } });
    const data: string[] = [];
    const tombstones = new Map<number, string>();
    try {
      let token: string | undefined;
      do {
        const page = await client.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: `${PREFIX}/${EXTENT_PREFIX}`, ContinuationToken: token }));
        for (const o of page.Contents ?? []) {
          const key = o.Key!.slice(PREFIX.length + 1);
          const name = parseExtentKey(key);
          assert.ok(name, `not an extent object: ${key}`);
          if (name.zero) {
            assert.ok(!tombstones.has(name.index), `two tombstones of extent ${name.index}`);
            tombstones.set(name.index, key);
          }
          else data.push(key);
        }
        token = page.NextContinuationToken;
      } while (token);
    } finally {
      client.destroy();
    }
    const objects = new S3ObjectStore({ bucket: BUCKET, prefix: PREFIX, endpoint: s3.endpoint, region: s3.region, forcePathStyle: true,
      credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } });
    try {
      const { volume } = await openVolume(objects, { mode: 'open' });
      const layer = await ObjectExtents.open(objects, { extentSize: EXTENT, extentCount: SIZE / EXTENT, collect: false });
      const manifests = await new SnapshotRegistry(objects, volume).loadAll();
      assert.deepEqual(manifests.map((m) => m.name), ['s2']);
      const s2 = manifests[0]!.references.map((r) => keyOf({ index: r.index, generation: r.generation, zero: false }));
      // A tombstone stays only where the volume reads zeros and a snapshot keeps an older object.
      for (const [index, key] of tombstones) {
        assert.ok(!layer.currentObjects().some((o) => o.index === index), `tombstone ${key} of an extent the volume reads`);
        if (!tombstonesKept) assert.ok(manifests[0]!.references.some((r) => r.index === index), `tombstone ${key} that no snapshot needs`);
      }
      return { data: data.sort(), tombstones: [...tombstones.values()], volume: layer.currentObjects().map(keyOf), s2 };
    } finally {
      await objects.close();
    }
  }
});
