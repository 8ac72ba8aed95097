// kill -9 during `s3nbd snapshot create`, `snapshot delete`, `gc` and `snapshot prune` (after
// its --dry-run changed nothing), at several points each
// (S3NBD_TEST_KILL_AT, src/cli/test-hooks.ts: the CLI kills itself at an exact request), on a
// directory store: after every kill, every snapshot still reads back identical to the volume
// as it was when the snapshot was taken, and the volume reads what was last written; after a
// collection run to its end, the store holds exactly the objects the volume and its snapshots
// name (counted).
//
// The volume's data is written by a writer in this process (the real extent layer on the real
// directory store, under the lease, collecting nothing): 4096 extents of 4 KiB, so that a
// deletion or a collection takes several DeleteObjects batches of 1000 and can be killed
// between two of them.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { EXTENT_PREFIX, parseExtentKey } from '../../src/storage/extents/extent-keys.ts';
import { ObjectExtents } from '../../src/storage/extents/extent-objects.ts';
import { keyOf } from '../../src/storage/extents/object-census.ts';
import { FileObjectStore } from '../../src/storage/objects/file-object-store.ts';
import { SnapshotRegistry } from '../../src/storage/snapshots/registry.ts';
import { openSnapshotDevice } from '../../src/storage/snapshots/snapshot-device.ts';
import { Lease } from '../../src/storage/volume/lease.ts';
import { type Volume, openVolume } from '../../src/storage/volume/volume.ts';
import { cli, tempDir } from '../helpers/gateway.ts';

const E = 4096;
const COUNT = 4096;
const log = pino({ level: 'silent' });
type Content = Map<number, string>;

function extentBytes(seed: number, index: number): Buffer {
  const b = Buffer.alloc(E, (seed * 31 + index) & 0xff);
  b.writeUInt32BE(index, 0);
  b.writeUInt32BE(seed, 4);
  return b;
}

const digest = (b: Buffer): string => createHash('sha256').update(b).digest('hex').slice(0, 16);

describe('kill -9 during snapshot create, delete and gc', () => {
  const dir = tempDir('snapshot-crash');
  const storePath = join(dir.path, 'store');
  const store = new FileObjectStore(storePath);
  let volume: Volume;
  /** What each snapshot must read back: the volume's content when it was taken. */
  const expected = new Map<string, Content>();
  let current: Content = new Map();

  before(async () => {
    const made = await cli(['create', '--store', storePath, '--size', String(E * COUNT), '--extent-size', String(E)]);
    assert.equal(made.code, 0, made.stderr);
    volume = (await openVolume(store, { mode: 'open' })).volume;
  });
  after(() => dir.remove());

  /** Runs the CLI; a command refused because a killed one's lease has not expired yet is run again. */
  async function s3nbd(args: string[], killAt?: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
    for (let attempt = 0; ; attempt++) {
      const r = await cli([...args, '--store', storePath, '--lease-ttl', '3'], killAt ? { S3NBD_TEST_KILL_AT: killAt } : {});
      if (r.code !== 2 || !/S3NBD_VOLUME_IN_USE/.test(r.stderr) || attempt > 40) return r;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }

  async function killed(args: string[], at: string): Promise<void> {
    const r = await s3nbd(args, at);
    assert.equal(r.code, null, `expected the command to be killed at ${at}: exit ${r.code}\n${r.stderr}`);
  }

  /** Writes extents [first, end) with `seed`, as a gateway would: under the lease, collecting nothing. */
  async function write(first: number, end: number, seed: number): Promise<void> {
    const layer = await ObjectExtents.open(store, { extentSize: E, extentCount: COUNT, volumeId: volume.id, collect: false });
    let lease: Lease | undefined;
    for (let attempt = 0; !lease; attempt++) {
      lease = await Lease.acquire(store, { owner: 'test-writer', ttlMs: 3000, takeOver: false, log, onLost: () => undefined, minEpoch: layer.maxEpoch + 1 })
        .catch(async (err: unknown) => {
          if (attempt > 40) throw err;
          await new Promise((resolve) => setTimeout(resolve, 250));
          return undefined;
        });
    }
    layer.useEpoch(lease.epoch);
    for (let i = first; i < end; i += 64) {
      await Promise.all(Array.from({ length: Math.min(64, end - i) }, (_, k) => layer.put(i + k, extentBytes(seed, i + k))));
    }
    await layer.flush();
    await layer.close();
    await lease.release();
    current = new Map(current);
    for (let i = first; i < end; i++) current.set(i, digest(extentBytes(seed, i)));
  }

  async function create(name: string): Promise<void> {
    const r = await s3nbd(['snapshot', 'create', name]);
    assert.equal(r.code, 0, r.stderr);
    expected.set(name, current);
  }

  /** Every snapshot in the store reads back as expected, none is missing that should be there, and the volume reads `current`. */
  async function checkAll(alive: readonly string[]): Promise<void> {
    const registry = new SnapshotRegistry(store, volume);
    assert.deepEqual(await registry.names(), [...alive].sort(), 'the snapshots in the store');
    for (const name of alive) {
      const { extents } = openSnapshotDevice(store, volume, (await registry.load(name))!, 0);
      const read: Content = new Map();
      for (const index of extents.storedIn(0, COUNT)) read.set(index, digest((await extents.fetch(index))!));
      assert.deepEqual(read, expected.get(name), `snapshot ${name} reads back identical`);
    }
    const layer = await ObjectExtents.open(store, { extentSize: E, extentCount: COUNT, volumeId: volume.id, collect: false });
    const read: Content = new Map();
    for (const index of layer.storedIn(0, COUNT)) read.set(index, digest((await layer.fetch(index))!));
    assert.deepEqual(read, current, 'the volume reads what was last written');
  }

  /** The extent objects in the store, and those the volume and its snapshots name. */
  async function census(): Promise<{ stored: string[]; referenced: string[] }> {
    const stored: string[] = [];
    for await (const key of store.list(EXTENT_PREFIX)) if (parseExtentKey(key)) stored.push(key);
    const layer = await ObjectExtents.open(store, { extentSize: E, extentCount: COUNT, collect: false });
    const referenced = new Set(layer.currentObjects().map(keyOf));
    for (const m of await new SnapshotRegistry(store, volume).loadAll()) {
      for (const r of m.references) referenced.add(keyOf({ index: r.index, generation: r.generation, zero: false }));
    }
    return { stored: stored.sort(), referenced: [...referenced].sort() };
  }

  it('leaves every snapshot whole whatever the point of the kill, and a full collection leaves exactly what is named', async () => {
    await write(0, 2500, 1);
    await create('s1');
    await write(0, 2500, 2);

    // create, killed before its manifest is written: no snapshot.
    await killed(['snapshot', 'create', 's2'], 'before:putIf:snapshots/:1');
    await checkAll(['s1']);
    // create, killed once its manifest is written (the lease neither renewed nor released): a whole snapshot.
    await killed(['snapshot', 'create', 's2'], 'after:putIf:snapshots/:1');
    expected.set('s2', current);
    await checkAll(['s1', 's2']);

    await write(1000, 3500, 3);
    await create('s3');
    // 3000 objects of garbage: written twice without a snapshot in between.
    await write(0, 3000, 4);
    await write(0, 3000, 5);

    // gc, killed before its first DeleteObjects, and after its first batch.
    await killed(['gc'], 'before:deleteMany:extents/:1');
    await checkAll(['s1', 's2', 's3']);
    await killed(['gc'], 'after:deleteMany:extents/:1');
    await checkAll(['s1', 's2', 's3']);

    // delete, killed before the manifest goes, after it went, and between two batches of objects.
    await killed(['snapshot', 'delete', 's1'], 'before:deleteMany:snapshots/:1');
    await checkAll(['s1', 's2', 's3']);
    await killed(['snapshot', 'delete', 's1'], 'after:deleteMany:snapshots/:1');
    await checkAll(['s2', 's3']);
    await killed(['snapshot', 'delete', 's2'], 'after:deleteMany:extents/:1');
    await checkAll(['s3']);
    const left = await census();
    assert.ok(left.stored.length > left.referenced.length, 'the killed commands left garbage');

    // A collection run to its end: exactly the objects the volume and s3 name.
    const gc = await s3nbd(['gc']);
    assert.equal(gc.code, 0, gc.stderr);
    const { stored, referenced } = await census();
    assert.deepEqual(stored, referenced);
    // The volume reads 3500 objects (0-2999 of round 5, 3000-3499 of round 3); s3 holds 0-999 of
    // round 2 and 1000-3499 of round 3, of which round 5 superseded 3000 objects.
    assert.equal(stored.length, 3500 + 3000, `${stored.length} objects`);
    await checkAll(['s3']);
    console.log(`# after the full collection: ${stored.length} extent objects, ${referenced.length} named (${gc.stdout.trim()})`);
  });

  /** The snapshots in the store: all of `keep`, some of `mayGo`, each reading back identical. */
  async function checkLeft(keep: readonly string[], mayGo: readonly string[]): Promise<string[]> {
    const names = await new SnapshotRegistry(store, volume).names();
    for (const k of keep) assert.ok(names.includes(k), `${k} is kept (${names.join(' ')})`);
    for (const n of names) assert.ok(keep.includes(n) || mayGo.includes(n), `${n} was expected gone (${names.join(' ')})`);
    await checkAll(names);
    return names;
  }

  it('snapshot prune: --dry-run deletes nothing; killed at four points it leaves whole snapshots, and run again it finishes', async () => {
    // p1 … p5, each after a round of writes over 1500 extents, 500 further along each time.
    for (let k = 1; k <= 5; k++) {
      await write((k - 1) * 500, (k - 1) * 500 + 1500, 10 + k);
      await create(`p${k}`);
    }
    const all = ['p1', 'p2', 'p3', 'p4', 'p5', 's3'];
    const prune = ['snapshot', 'prune', '--keep-last', '2'];
    const dry = await s3nbd([...prune, '--dry-run']);
    assert.equal(dry.code, 0, dry.stderr);
    assert.deepEqual(dry.stdout.trim().split('\n').map((l) => l.split(/\s+/).slice(0, 2).join(' ')),
      ['keep p5', 'keep p4', 'forget p3', 'forget p2', 'forget p1', 'forget s3', 'dry run:']);
    assert.match(dry.stdout, /keep +p5 +\S+ +last 1\n/);
    assert.match(dry.stdout, /dry run: would delete 4 of 6 snapshots\n$/);
    await checkLeft(all, []);

    // Deleted one at a time, newest first: killed before the first manifest goes, right after it
    // went, after the second, and after a batch of objects.
    await killed(prune, 'before:deleteMany:snapshots/:1');
    await checkLeft(all, []);
    await killed(prune, 'after:deleteMany:snapshots/:1');
    assert.deepEqual(await checkLeft(['p1', 'p2', 'p4', 'p5', 's3'], []), ['p1', 'p2', 'p4', 'p5', 's3']);
    await killed(prune, 'after:deleteMany:snapshots/:2');
    assert.deepEqual(await checkLeft(['p4', 'p5', 's3'], []), ['p4', 'p5', 's3']);
    await killed(prune, 'after:deleteMany:extents/:1');
    // s3's manifest went before that batch, unless the batch was garbage the earlier kills left
    // (the collector may start on it as soon as the lease is taken).
    const s3Left = (await checkLeft(['p4', 'p5'], ['s3'])).includes('s3');

    const done = await s3nbd(prune);
    assert.equal(done.code, 0, done.stderr);
    assert.match(done.stdout, s3Left ? /deleted snapshot s3\npruned: 1 snapshots deleted; \d+ objects nothing needs any more deleted\n$/ : /nothing to delete/);
    assert.deepEqual(await checkLeft(['p4', 'p5'], []), ['p4', 'p5']);
    const again = await s3nbd(prune);
    assert.match(again.stdout, /nothing to delete: the policy keeps all 2 snapshots/);
    const gc = await s3nbd(['gc']);
    assert.equal(gc.code, 0, gc.stderr);
    const { stored, referenced } = await census();
    assert.deepEqual(stored, referenced, 'a full collection leaves what the volume, p4 and p5 name');
  });
});
