// Snapshots with the real CLI and real NBD clients on a directory store: `snapshot create` on an
// idle volume, the snapshot listed by NBD_OPT_LIST as `@s1` with a description and read back as
// it was taken while the volume is rewritten through the same gateway (whose garbage collector
// deletes what it superseded, and keeps what the snapshot holds), `serve --snapshot`, `snapshot
// list --json`, `snapshot delete` collecting exactly the objects only it held, and the one-line
// errors.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { EXTENT_PREFIX, parseExtentKey } from '../../src/storage/extents/extent-keys.ts';
import { ObjectExtents } from '../../src/storage/extents/extent-objects.ts';
import { keyOf } from '../../src/storage/extents/object-census.ts';
import { FileObjectStore } from '../../src/storage/objects/file-object-store.ts';
import { SnapshotRegistry } from '../../src/storage/snapshots/registry.ts';
import { openVolume } from '../../src/storage/volume/volume.ts';
import { cli, startGateway, tempDir } from '../helpers/gateway.ts';
import { requireTool, runOk } from '../helpers/tools.ts';
import { assertUserError } from '../helpers/user-error.ts';

const MiB = 1024 * 1024;
const SIZE = 16 * MiB;
const EXTENT = 64 * 1024;

describe('snapshots', () => {
  const dir = tempDir('snapshots');
  const store = join(dir.path, 'store');
  const socket = join(dir.path, 'sock');
  const objects = new FileObjectStore(store);
  const first = randomBytes(4 * MiB);
  const second = randomBytes(SIZE);
  const s3nbd = (...args: string[]) => cli([...args, '--store', store]);

  before(async () => {
    requireTool('nbdcopy');
    requireTool('nbdinfo');
    const made = await s3nbd('create', '--size', String(SIZE), '--extent-size', String(EXTENT));
    assert.equal(made.code, 0, made.stderr);
    writeFileSync(join(dir.path, 'first'), first);
    writeFileSync(join(dir.path, 'second'), second);
  });
  after(() => dir.remove());

  /** The extent objects in the store, and those the volume and its snapshots name. */
  async function census(): Promise<{ stored: string[]; referenced: string[] }> {
    const stored: string[] = [];
    for await (const key of objects.list(EXTENT_PREFIX)) if (parseExtentKey(key)) stored.push(key);
    const { volume } = await openVolume(objects, { mode: 'open' });
    const layer = await ObjectExtents.open(objects, { extentSize: EXTENT, extentCount: SIZE / EXTENT, collect: false });
    const referenced = new Set(layer.currentObjects().map(keyOf));
    for (const m of await new SnapshotRegistry(objects, volume).loadAll()) {
      for (const r of m.references) referenced.add(keyOf({ index: r.index, generation: r.generation, zero: false }));
    }
    return { stored: stored.sort(), referenced: [...referenced].sort() };
  }

  const asTaken = (): Buffer => Buffer.concat([first, Buffer.alloc(SIZE - first.length)]);

  it('takes a snapshot of an idle volume, and refuses a taken name, a bad name and a missing snapshot in one line', async () => {
    const gw = await startGateway(['--store', store], { socket });
    await runOk('nbdcopy', ['--flush', join(dir.path, 'first'), gw.uri]);
    assert.equal(await gw.stop(), 0, gw.logs());

    const made = await s3nbd('snapshot', 'create', 's1');
    assert.equal(made.code, 0, made.stderr);
    assert.match(made.stdout, /^created snapshot s1: 64 extents \(4 MiB\) of 16 MiB, /);
    assertUserError(await s3nbd('snapshot', 'create', 's1'), 'S3NBD_SNAPSHOT_EXISTS', /"s1"/);
    assertUserError(await s3nbd('snapshot', 'create', 'a/b'), 'S3NBD_BAD_SNAPSHOT_NAME');
    assertUserError(await s3nbd('snapshot', 'delete', 'nope'), 'S3NBD_NO_SNAPSHOT', /"nope"/);
  });

  it('lists @s1 with a description, and serves it as taken while the volume is rewritten and collected', async () => {
    const gw = await startGateway(['--store', store], { socket });
    try {
      const busy = await s3nbd('snapshot', 'create', 's2');
      assertUserError(busy, 'S3NBD_VOLUME_IN_USE', /in use by gateway gw-|in use by gateway/, /--cache-dir/);

      const listed = JSON.parse(await runOk('nbdinfo', ['--list', '--json', gw.uri])) as { exports: Array<{ 'export-name': string; description: string; is_read_only: boolean }> };
      assert.deepEqual(listed.exports.map((e) => e['export-name']), ['', '@s1']);
      const snap = listed.exports[1]!;
      assert.match(snap.description, /^snapshot s1 of s3nbd volume [0-9a-f-]{36}, taken \d{4}-\d\d-\d\dT[\d:.]+Z, 16 MiB, read-only$/);
      assert.equal(snap.is_read_only, true);

      const snapshotUri = `nbd+unix:///@s1?socket=${socket}`;
      // The volume rewritten whole while the snapshot is read.
      await Promise.all([
        runOk('nbdcopy', ['--flush', join(dir.path, 'second'), gw.uri]),
        runOk('nbdcopy', [snapshotUri, join(dir.path, 'during')]),
      ]);
      assert.ok(readFileSync(join(dir.path, 'during')).equals(asTaken()), 'the snapshot read during the rewrite is as taken');
      await runOk('nbdcopy', [gw.uri, join(dir.path, 'volume')]);
      assert.ok(readFileSync(join(dir.path, 'volume')).equals(second), 'the volume reads what was written');

      // The gateway deletes what the rewrite superseded in batches, every 2 s: all but s1's objects.
      let left = await census();
      for (let i = 0; i < 150 && left.stored.length !== left.referenced.length; i++) {
        await new Promise((resolve) => setTimeout(resolve, 200));
        left = await census();
      }
      assert.deepEqual(left.stored, left.referenced, 'the volume\'s objects and s1\'s, nothing else');
      assert.equal(left.stored.length, SIZE / EXTENT + 64);
      await runOk('nbdcopy', [snapshotUri, join(dir.path, 'collected')]);
      assert.ok(readFileSync(join(dir.path, 'collected')).equals(asTaken()), 'the snapshot read after the collection is as taken');
    } finally {
      assert.equal(await gw.stop(), 0, gw.logs());
    }
  });

  it('serves a snapshot alone with serve --snapshot, read-only', async () => {
    const gw = await startGateway(['--store', store, '--snapshot', 's1'], { socket });
    try {
      const info = JSON.parse(await runOk('nbdinfo', ['--json', gw.uri])) as { exports: Array<Record<string, unknown>> };
      assert.equal(info.exports[0]!.is_read_only, true);
      assert.equal(info.exports[0]!['export-size'], SIZE);
      await runOk('nbdcopy', [gw.uri, join(dir.path, 'alone')]);
      assert.ok(readFileSync(join(dir.path, 'alone')).equals(asTaken()));
      const listed = JSON.parse(await runOk('nbdinfo', ['--list', '--json', gw.uri])) as { exports: Array<{ 'export-name': string }> };
      assert.deepEqual(listed.exports.map((e) => e['export-name']), ['@s1']);
    } finally {
      assert.equal(await gw.stop(), 0, gw.logs());
    }
    assertUserError(await cli(['serve', '--store', store, '--snapshot', 'nope', '--socket', socket]), 'S3NBD_NO_SNAPSHOT');
  });

  it('lists the snapshot with the bytes only it holds, and deleting it collects exactly those', async () => {
    const list = await s3nbd('snapshot', 'list', '--json');
    assert.equal(list.code, 0, list.stderr);
    const [s1, ...others] = JSON.parse(list.stdout) as Array<Record<string, unknown>>;
    assert.equal(others.length, 0);
    assert.deepEqual({ ...s1, createdAt: undefined }, { name: 's1', createdAt: undefined, size: SIZE, extents: 64, uniqueExtents: 64, uniqueBytes: 4 * MiB });
    const table = await s3nbd('snapshot', 'list');
    assert.match(table.stdout, /^NAME +CREATED +SIZE +STORED +UNIQUE\ns1 +\S+ +16 MiB +4 MiB +4 MiB\n$/);

    const deleted = await s3nbd('snapshot', 'delete', 's1');
    assert.equal(deleted.code, 0, deleted.stderr);
    assert.match(deleted.stdout, /^deleted snapshot s1; 64 objects/);
    const { stored, referenced } = await census();
    assert.deepEqual(stored, referenced);
    assert.equal(stored.length, SIZE / EXTENT, 'the volume\'s objects only');
    const gc = await s3nbd('gc');
    assert.equal(gc.code, 0, gc.stderr);
    assert.match(gc.stdout, /^deleted 0 objects/);
    assert.deepEqual((await s3nbd('snapshot', 'list', '--json')).stdout.trim(), '[]');
  });
});
