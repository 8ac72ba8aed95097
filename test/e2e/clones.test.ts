// Clones with the real CLI and real NBD clients on directory stores: `s3nbd clone` of snapshot
// s1 copies nothing (the clone's store holds its metadata only); the clone, served by its own
// gateway, reads as s1, is written to, snapshotted (@c1) and read back after a restart; the
// origin volume, s1 and s2 read back unchanged throughout, and after the origin is collected;
// deleting s1 is refused (through the origin's running gateway, and on the idle volume) with
// one line naming the clone. A clone killed halfway is finished by running it again. A clone
// of an encrypted volume shares its key: it needs it to be made, and opens with it.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cli, startGateway, tempDir } from '../helpers/gateway.ts';
import { nbdOps } from '../helpers/nbd-ops.ts';
import { requireTool, runOk } from '../helpers/tools.ts';
import { assertUserError } from '../helpers/user-error.ts';

const MiB = 1024 * 1024;
const SIZE = 16 * MiB;
const EXTENT = 64 * 1024;

describe('clones', () => {
  const dir = tempDir('clones');
  const origin = join(dir.path, 'origin');
  const clone = join(dir.path, 'clone');
  const originSocket = join(dir.path, 'origin.sock');
  const cloneSocket = join(dir.path, 'clone.sock');
  const file = (name: string): string => join(dir.path, name);
  /** Images of the origin's volume, s1 and s2 before the clone was made. */
  const before_: Record<string, Buffer> = {};

  /** The device at `uri`, read whole with nbdcopy. */
  async function image(uri: string, name: string): Promise<Buffer> {
    await runOk('nbdcopy', [uri, file(name)]);
    return readFileSync(file(name));
  }

  async function originImages(uri: string, tag: string): Promise<Record<string, Buffer>> {
    const snapshotUri = (s: string): string => `nbd+unix:///@${s}?socket=${originSocket}`;
    return { volume: await image(uri, `volume-${tag}`), s1: await image(snapshotUri('s1'), `s1-${tag}`), s2: await image(snapshotUri('s2'), `s2-${tag}`) };
  }

  before(async () => {
    requireTool('nbdcopy');
    const made = await cli(['create', '--store', origin, '--size', String(SIZE), '--extent-size', String(EXTENT)]);
    assert.equal(made.code, 0, made.stderr);
    writeFileSync(file('first'), randomBytes(4 * MiB));
    writeFileSync(file('second'), randomBytes(SIZE));
    // s1: 4 MiB written; s2: all 16 MiB rewritten; then the volume moves on (2-6 MiB).
    for (const [data, snapshot] of [['first', 's1'], ['second', 's2']] as const) {
      const gw = await startGateway(['--store', origin], { socket: originSocket });
      await runOk('nbdcopy', ['--flush', file(data), gw.uri]);
      assert.equal(await gw.stop(), 0, gw.logs());
      const snap = await cli(['snapshot', 'create', snapshot, '--store', origin]);
      assert.equal(snap.code, 0, snap.stderr);
    }
  });
  after(() => dir.remove());

  it('clones s1 without copying, serves the clone and takes its writes; the origin, s1 and s2 are unchanged', async () => {
    const originGw = await startGateway(['--store', origin], { socket: originSocket });
    try {
      await nbdOps(originGw.uri, [['write', 2 * MiB, 4 * MiB, 3], ['flush']]);
      Object.assign(before_, await originImages(originGw.uri, 'before'));
      assert.ok(before_.s1!.subarray(0, 4 * MiB).equals(readFileSync(file('first'))));
      assert.ok(before_.s2!.equals(readFileSync(file('second'))));

      // Made while the origin's gateway serves it: the clone needs no lease of the origin.
      const made = await cli(['clone', '--store', origin, '--snapshot', 's1', '--to', clone]);
      assert.equal(made.code, 0, made.stderr);
      assert.match(made.stdout, new RegExp(`^cloned: volume [0-9a-f-]{36} \\(16 MiB, 64 extents read from snapshot s1 of ${origin}\\) in ${clone}; `));
      assert.deepEqual(readdirSync(clone).filter((f) => !f.startsWith('.')), ['s3nbd-volume.json'], 'nothing copied (the directory store\'s lock file aside)');
      const again = await cli(['clone', '--store', origin, '--snapshot', 's1', '--to', clone]);
      assert.match(again.stdout, /^already cloned: /);
      const info = await cli(['info', '--store', clone]);
      assert.match(info.stdout, new RegExp(`\\nclone of: +snapshot s1 of volume [0-9a-f-]{36} in ${origin}\\n`));

      const cloneGw = await startGateway(['--store', clone], { socket: cloneSocket });
      try {
        assert.ok((await image(cloneGw.uri, 'clone-0')).equals(before_.s1!), 'the clone reads as s1');
        const ops = await nbdOps(cloneGw.uri, [['write', 1 * MiB, 1 * MiB, 9], ['write', 8 * MiB + 100, 5000, 10], ['flush'],
          ['read', 1 * MiB, 1 * MiB, 9], ['read', 8 * MiB + 100, 5000, 10]]);
        assert.deepEqual(ops.map((o) => o.ok && o.match !== false), [true, true, true, true, true]);
        const written = await image(cloneGw.uri, 'clone-1');
        const untouched = (b: Buffer): Buffer => Buffer.concat([b.subarray(0, MiB), b.subarray(2 * MiB, 8 * MiB + 100), b.subarray(8 * MiB + 5100)]);
        assert.ok(untouched(written).equals(untouched(before_.s1!)), 'what the clone did not write still reads as s1');
        const snap = await cli(['snapshot', 'create', 'c1', '--store', clone, '--cache-dir', `${cloneSocket}.cache`]);
        assert.equal(snap.code, 0, snap.stderr);
        assert.ok((await image(`nbd+unix:///@c1?socket=${cloneSocket}`, 'c1')).equals(written), '@c1 reads as the clone was');
        assert.equal(await cloneGw.stop(), 0, cloneGw.logs());
        const restarted = await startGateway(['--store', clone], { socket: cloneSocket });
        assert.ok((await image(restarted.uri, 'clone-2')).equals(written), 'the clone after a restart');
        assert.equal(await restarted.stop(), 0, restarted.logs());
      } finally {
        await cloneGw.stop();
      }

      const now = await originImages(originGw.uri, 'after');
      for (const k of ['volume', 's1', 's2']) assert.ok(now[k]!.equals(before_[k]!), `the origin's ${k} is unchanged`);
      // The running origin gateway carries the deletion out, and refuses it.
      assertUserError(await cli(['snapshot', 'delete', 's1', '--store', origin, '--cache-dir', `${originSocket}.cache`]),
        'S3NBD_SNAPSHOT_HAS_CLONES', /"s1"/, new RegExp(`in ${clone}`));
    } finally {
      assert.equal(await originGw.stop(), 0, originGw.logs());
    }
  });

  it('clone killed (-9) after its marker, and after its metadata: run again it finishes, one marker left', async () => {
    const clone2 = join(dir.path, 'clone2');
    const killed = await cli(['clone', '--store', origin, '--snapshot', 's2', '--to', clone2], { S3NBD_TEST_KILL_AT: 'after:put:clones/:1' });
    assert.equal(killed.code, null, killed.stderr);
    assert.equal(readdirSync(join(origin, 'clones', 's2')).length, 1, 'the marker of a clone never made');
    // It blocks the deletion, naming the store that holds no clone.
    assertUserError(await cli(['snapshot', 'delete', 's2', '--store', origin]), 'S3NBD_SNAPSHOT_HAS_CLONES', new RegExp(`in ${clone2}`));
    const killedLate = await cli(['clone', '--store', origin, '--snapshot', 's2', '--to', clone2], { S3NBD_TEST_KILL_AT: 'after:putIf:s3nbd-volume.json:1' });
    assert.equal(killedLate.code, null, killedLate.stderr);
    const again = await cli(['clone', '--store', origin, '--snapshot', 's2', '--to', clone2]);
    assert.match(again.stdout, /^already cloned: /, again.stderr);
    assert.equal(readdirSync(join(origin, 'clones', 's2')).length, 1, 'the stale marker was replaced');
    const cloneGw = await startGateway(['--store', clone2], { socket: join(dir.path, 'clone2.sock') });
    try {
      assert.ok((await image(cloneGw.uri, 'clone2-image')).equals(before_.s2!), 'the clone of s2 reads as s2');
    } finally {
      assert.equal(await cloneGw.stop(), 0, cloneGw.logs());
    }
  });

  it('clones an encrypted volume with its key, and the clone opens with the same key', async () => {
    const secret = join(dir.path, 'secret');
    const secretClone = join(dir.path, 'secret-clone');
    const pass = { S3NBD_PASSPHRASE: 'a passphrase for the clone test' };
    const made = await cli(['create', '--store', secret, '--size', String(4 * MiB), '--extent-size', String(EXTENT), '--encryption', 'aes-256-gcm'], pass);
    assert.equal(made.code, 0, made.stderr);
    const sock = join(dir.path, 'secret.sock');
    const gw = await startGateway(['--store', secret], { socket: sock, env: pass });
    await runOk('nbdcopy', ['--flush', file('first'), gw.uri]);
    assert.equal(await gw.stop(), 0, gw.logs());
    assert.equal((await cli(['snapshot', 'create', 'x', '--store', secret])).code, 0);
    assertUserError(await cli(['clone', '--store', secret, '--snapshot', 'x', '--to', secretClone]), 'S3NBD_KEY_REQUIRED');
    const cloned = await cli(['clone', '--store', secret, '--snapshot', 'x', '--to', secretClone], pass);
    assert.equal(cloned.code, 0, cloned.stderr);
    const cloneGw = await startGateway(['--store', secretClone], { socket: join(dir.path, 'secret-clone.sock'), env: pass });
    try {
      assert.ok((await image(cloneGw.uri, 'secret-clone-image')).equals(readFileSync(file('first'))), 'the encrypted clone reads as the snapshot');
    } finally {
      assert.equal(await cloneGw.stop(), 0, cloneGw.logs());
    }
  });

  it('refuses to delete s1 on the idle origin too, and collections of the origin and of the clone leave both whole', async () => {
    assertUserError(await cli(['snapshot', 'delete', 's1', '--store', origin]), 'S3NBD_SNAPSHOT_HAS_CLONES', /--forget-missing-clones/);
    // The clone is there: --forget-missing-clones forgets nothing.
    assertUserError(await cli(['snapshot', 'delete', 's1', '--store', origin, '--forget-missing-clones']), 'S3NBD_SNAPSHOT_HAS_CLONES');
    const gc = await cli(['gc', '--store', origin]);
    assert.equal(gc.code, 0, gc.stderr);
    // The clone's own collection never touches the origin's objects, nor its tombstones above them.
    const cloneGc = await cli(['gc', '--store', clone]);
    assert.equal(cloneGc.code, 0, cloneGc.stderr);
    const cloneGw = await startGateway(['--store', clone], { socket: cloneSocket });
    try {
      assert.ok((await image(cloneGw.uri, 'clone-3')).equals(readFileSync(file('clone-1'))), 'the clone after the origin was collected');
    } finally {
      assert.equal(await cloneGw.stop(), 0, cloneGw.logs());
    }
    const originGw = await startGateway(['--store', origin], { socket: originSocket });
    try {
      const now = await originImages(originGw.uri, 'collected');
      for (const k of ['volume', 's1', 's2']) assert.ok(now[k]!.equals(before_[k]!), `the origin's ${k} after gc`);
    } finally {
      assert.equal(await originGw.stop(), 0, originGw.logs());
    }
  });
});
