// kill -9 during `s3nbd snapshot create`, `snapshot delete` and `gc`, at several points each
// (S3NBD_TEST_KILL_AT, src/cli/test-hooks.ts: the CLI kills itself at an exact request): after
// every kill, every snapshot still reads back identical to the volume as it was when the
// snapshot was taken, and the volume reads what was last written; after a collection run to
// its end, the store holds exactly the objects the volume and its snapshots name (counted).
// Run on a directory store (test/e2e/snapshot-crash.test.ts) and on MinIO
// (test/integration/snapshot-crash-s3.test.ts).
//
// The volume's data is written by a writer in this process (the real extent layer on the real
// store, under the lease, collecting nothing): 4096 extents of 4 KiB, so that a deletion or a
// collection takes several DeleteObjects batches of 1000 and can be killed between two.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { pino } from 'pino';
import { EXTENT_PREFIX, parseExtentKey } from '../../src/storage/extents/extent-keys.ts';
import { ObjectExtents } from '../../src/storage/extents/extent-objects.ts';
import { keyOf } from '../../src/storage/extents/object-census.ts';
import type { ObjectStore } from '../../src/storage/objects/object-store.ts';
import { SnapshotRegistry } from '../../src/storage/snapshots/registry.ts';
import { openSnapshotDevice } from '../../src/storage/snapshots/snapshot-device.ts';
import { openCodec } from '../../src/storage/format/object-settings.ts';
import { Lease } from '../../src/storage/volume/lease.ts';
import { type Volume, openVolume } from '../../src/storage/volume/volume.ts';
import { cli } from './gateway.ts';

const E = 4096;
const COUNT = 4096;
const WRITE_CONCURRENCY = 64;
const log = pino({ level: 'silent' });
type Content = Map<number, string>;

function extentBytes(seed: number, index: number): Buffer {
  const b = Buffer.alloc(E, (seed * 31 + index) & 0xff);
  b.writeUInt32BE(index, 0);
  b.writeUInt32BE(seed, 4);
  return b;
}

const digest = (b: Buffer): string => createHash('sha256').update(b).digest('hex').slice(0, 16);
const pause = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export interface CrashTarget {
  /** The same store as the CLI sees it, for this process's writes and checks. */
  readonly objects: ObjectStore;
  /** --store and any other arguments every command needs (--s3-endpoint). */
  readonly args: readonly string[];
  readonly env: NodeJS.ProcessEnv;
  /** Then `snapshot prune`: its --dry-run, and kills at four points (pruneScenario below). */
  readonly prune?: boolean;
}

/** The extent objects in the store, and those the volume and its snapshots name. */
export async function namedObjects(objects: ObjectStore, volume: Volume): Promise<{ stored: string[]; referenced: string[] }> {
  const stored: string[] = [];
  for await (const key of objects.list(EXTENT_PREFIX)) if (parseExtentKey(key)) stored.push(key);
  const layer = await ObjectExtents.open(objects, { extentSize: volume.extentSize, extentCount: Math.ceil(volume.size / volume.extentSize), collect: false });
  const referenced = new Set(layer.currentObjects().map(keyOf));
  for (const m of await new SnapshotRegistry(objects, volume).loadAll()) {
    for (const r of m.references) referenced.add(keyOf({ index: r.index, generation: r.generation, zero: false }));
  }
  return { stored: stored.sort(), referenced: [...referenced].sort() };
}

export async function crashScenario(target: CrashTarget): Promise<void> {
  const { objects } = target;
  /** What each snapshot must read back: the volume's content when it was taken. */
  const expected = new Map<string, Content>();
  let current: Content = new Map();

  /** Runs the CLI; a command refused because a killed one's lease has not expired yet is run again. */
  const s3nbd = async (args: string[], killAt?: string): Promise<{ code: number | null; stdout: string; stderr: string }> => {
    for (let attempt = 0; ; attempt++) {
      const r = await cli([...args, ...target.args, '--lease-ttl', '3'], { ...target.env, ...killAt ? { S3NBD_TEST_KILL_AT: killAt } : {} });
      if (r.code !== 2 || !/S3NBD_VOLUME_IN_USE/.test(r.stderr) || attempt > 40) return r;
      await pause(250);
    }
  };
  const killed = async (args: string[], at: string): Promise<void> => {
    const r = await s3nbd(args, at);
    assert.equal(r.code, null, `expected the command to be killed at ${at}: exit ${r.code}\n${r.stderr}`);
  };

  const made = await cli(['create', '--size', String(E * COUNT), '--extent-size', String(E), ...target.args], target.env);
  assert.equal(made.code, 0, made.stderr);
  const { volume } = await openVolume(objects, { mode: 'open' });
  // The volume's own codec (format 2: headed, compressed objects), as a gateway uses it.
  const codec = await openCodec(volume, undefined, objects.description);

  /** Writes extents [first, end) with `seed`, as a gateway would: under the lease, collecting nothing. */
  const write = async (first: number, end: number, seed: number): Promise<void> => {
    const layer = await ObjectExtents.open(objects, { extentSize: E, extentCount: COUNT, volumeId: volume.id, collect: false, codec });
    let lease: Lease | undefined;
    for (let attempt = 0; !lease; attempt++) {
      lease = await Lease.acquire(objects, { owner: 'test-writer', ttlMs: 3000, takeOver: false, log, onLost: () => undefined, minEpoch: layer.maxEpoch + 1 })
        .catch(async (err: unknown) => {
          if (attempt > 40) throw err;
          await pause(250);
          return undefined;
        });
    }
    layer.useEpoch(lease.epoch);
    for (let i = first; i < end; i += WRITE_CONCURRENCY) {
      await Promise.all(Array.from({ length: Math.min(WRITE_CONCURRENCY, end - i) }, (_, k) => layer.put(i + k, extentBytes(seed, i + k))));
    }
    await layer.flush();
    await layer.close();
    await lease.release();
    current = new Map(current);
    for (let i = first; i < end; i++) current.set(i, digest(extentBytes(seed, i)));
  };

  const create = async (name: string): Promise<void> => {
    const r = await s3nbd(['snapshot', 'create', name]);
    assert.equal(r.code, 0, r.stderr);
    expected.set(name, current);
  };

  /** Every snapshot in the store reads back as expected, none is missing that should be there, and the volume reads `current`. */
  const checkAll = async (alive: readonly string[]): Promise<void> => {
    const registry = new SnapshotRegistry(objects, volume);
    assert.deepEqual(await registry.names(), [...alive].sort(), 'the snapshots in the store');
    const readAll = async (layer: ObjectExtents): Promise<Content> => {
      const read: Content = new Map();
      const stored = [...layer.storedIn(0, COUNT)];
      for (let i = 0; i < stored.length; i += WRITE_CONCURRENCY) {
        const batch = stored.slice(i, i + WRITE_CONCURRENCY);
        const bodies = await Promise.all(batch.map((index) => layer.fetch(index)));
        batch.forEach((index, k) => read.set(index, digest(bodies[k]!)));
      }
      return read;
    };
    for (const name of alive) {
      const { extents } = openSnapshotDevice(objects, volume, (await registry.load(name))!, 0, codec);
      assert.deepEqual(await readAll(extents), expected.get(name), `snapshot ${name} reads back identical`);
    }
    const layer = await ObjectExtents.open(objects, { extentSize: E, extentCount: COUNT, volumeId: volume.id, collect: false, codec });
    assert.deepEqual(await readAll(layer), current, 'the volume reads what was last written');
  };

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
  const left = await namedObjects(objects, volume);
  assert.ok(left.stored.length > left.referenced.length, 'the killed commands left garbage');

  // A collection run to its end: exactly the objects the volume and s3 name.
  const gc = await s3nbd(['gc']);
  assert.equal(gc.code, 0, gc.stderr);
  const { stored, referenced } = await namedObjects(objects, volume);
  assert.deepEqual(stored, referenced);
  // The volume reads 3500 objects (0-2999 of round 5, 3000-3499 of round 3); s3 holds 0-999 of
  // round 2 and 1000-3499 of round 3, of which round 5 superseded 3000 objects.
  assert.equal(stored.length, 3500 + 3000, `${stored.length} objects`);
  await checkAll(['s3']);
  console.log(`# after the full collection: ${stored.length} extent objects, ${referenced.length} named (gc: ${gc.stdout.trim()})`);
  if (!target.prune) return;

  /** The snapshots in the store: all of `keep`, some of `mayGo`, each reading back identical. */
  const checkLeft = async (keep: readonly string[], mayGo: readonly string[]): Promise<string[]> => {
    const names = await new SnapshotRegistry(objects, volume).names();
    for (const k of keep) assert.ok(names.includes(k), `${k} is kept (${names.join(' ')})`);
    for (const n of names) assert.ok(keep.includes(n) || mayGo.includes(n), `${n} was expected gone (${names.join(' ')})`);
    await checkAll(names);
    return names;
  };
  // snapshot prune: p1 … p5, each after a round of writes over 1500 extents, 500 further along each time.
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
  const gcAfter = await s3nbd(['gc']);
  assert.equal(gcAfter.code, 0, gcAfter.stderr);
  const named = await namedObjects(objects, volume);
  assert.deepEqual(named.stored, named.referenced, 'a full collection leaves what the volume, p4 and p5 name');
}
