// The volumes under a store prefix (service/volume-ops.ts) on the memory and directory stores:
// list, create, resize and delete, their refusals, a deletion killed halfway (the volume
// never opens again as a whole one, and running the deletion again finishes it), and
// volumeControl, the control socket's answers, over a VolumeAdmin made of these functions.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import { pino } from 'pino';
import { UserError } from '../../src/errors.ts';
import { volumeControl } from '../../src/service/volume-control.ts';
import {
  type VolumePrefix, checkDeletable, createVolume, deleteVolume, listVolumes, openVolumePrefix, resizeVolume,
} from '../../src/service/volume-ops.ts';
import type { ObjectStore } from '../../src/storage/objects/object-store.ts';
import { openStorage } from '../../src/storage/stack.ts';
import { Lease } from '../../src/storage/volume/lease.ts';
import { openVolume, readVolume } from '../../src/storage/volume/volume.ts';
import { FaultyStore } from '../helpers/faulty-store.ts';
import { tempDir } from '../helpers/gateway.ts';
import { storeVolumeAdmin } from '../helpers/store-volume-admin.ts';

const log = pino({ level: 'silent' });
const code = (c: string, ...say: RegExp[]) => (err: unknown) => {
  assert.ok(err instanceof UserError, String(err));
  assert.equal(err.code, c, err.message);
  for (const s of say) assert.match(err.message, s);
  return true;
};
const M = 1 << 20;

async function keys(objects: ObjectStore): Promise<string[]> {
  const all: string[] = [];
  for await (const key of objects.list('')) all.push(key);
  return all.sort();
}

/** A lease held by "another gateway" on the volume, released by the returned function. */
async function holdLease(objects: ObjectStore): Promise<() => Promise<void>> {
  const lease = await Lease.acquire(objects, { owner: 'gateway elsewhere', ttlMs: 30_000, takeOver: false, log, onLost: () => undefined });
  return () => lease.release();
}

describe('volumes under a store prefix', () => {
  const dir = tempDir('volume-ops');
  after(() => dir.remove());
  let n = 0;

  for (const kind of ['memory', 'directory'] as const) {
    const prefixOf = (): VolumePrefix => openVolumePrefix(kind === 'memory' ? 'memory:' : `${dir.path}/p${++n}`, {}, log);

    it(`${kind}: creates, lists (leaving out names without a volume), and refuses a taken or bad name`, async () => {
      const prefix = prefixOf();
      try {
        assert.deepEqual(await listVolumes(prefix), []);
        const db = await createVolume(prefix, 'db', { size: 10 * M });
        await createVolume(prefix, 'web.1', { size: 4 * M, extentSize: 64 * 1024 });
        await prefix.open('stray').put('something', Buffer.from('not a volume'));
        const listed = await listVolumes(prefix);
        assert.deepEqual(listed.map((v) => [v.name, v.state, v.size, v.extentSize, v.snapshots, v.lease]),
          [['db', 'ok', 10 * M, M, 0, undefined], ['web.1', 'ok', 4 * M, 64 * 1024, 0, undefined]]);
        assert.equal(listed[0]!.id, db.id);
        await assert.rejects(createVolume(prefix, 'db', { size: M }), code('S3NBD_VOLUME_EXISTS', /"db"/));
        await assert.rejects(createVolume(prefix, 'stray', { size: M }), code('S3NBD_VOLUME_EXISTS', /holds objects but no volume/));
        for (const bad of ['', '.hidden', 'a/b', 'x@snap', 'a'.repeat(64), '../up']) {
          await assert.rejects(createVolume(prefix, bad, { size: M }), code('S3NBD_BAD_VOLUME_NAME'), bad);
        }
        await assert.rejects(createVolume(prefix, 'odd', { size: 1000 }), code('S3NBD_BAD_DEVICE_SIZE'));
        // A held lease shows in the listing.
        const release = await holdLease(prefix.open('db'));
        assert.equal((await listVolumes(prefix))[0]!.lease?.owner, 'gateway elsewhere');
        await release();
        assert.equal((await listVolumes(prefix))[0]!.lease, undefined, 'a released lease is no holder');
      } finally {
        await prefix.close();
      }
    });

    it(`${kind}: resizes an idle volume, refuses to shrink, and refuses while another gateway holds the lease`, async () => {
      const prefix = prefixOf();
      try {
        await createVolume(prefix, 'db', { size: 4 * M });
        assert.equal((await resizeVolume(prefix, 'db', 8 * M, { log })).size, 8 * M);
        assert.equal((await readVolume(prefix.open('db')))?.volume.size, 8 * M);
        await assert.rejects(resizeVolume(prefix, 'db', 4 * M, { log }), code('S3NBD_VOLUME_SHRINK', /8388608/, /4194304/));
        assert.equal((await resizeVolume(prefix, 'db', 8 * M, { log })).size, 8 * M, 'the same size again is a no-op');
        await assert.rejects(resizeVolume(prefix, 'nope', 8 * M, { log }), code('S3NBD_NO_VOLUME', /"nope"/));
        const release = await holdLease(prefix.open('db'));
        await assert.rejects(resizeVolume(prefix, 'db', 16 * M, { log }), code('S3NBD_VOLUME_IN_USE', /gateway elsewhere/));
        await release();
        assert.equal((await readVolume(prefix.open('db')))?.volume.size, 8 * M);
      } finally {
        await prefix.close();
      }
    });

    it(`${kind}: deletes every object; refuses with snapshots (unless asked), clones, or a lease held elsewhere`, async () => {
      const prefix = prefixOf();
      try {
        await createVolume(prefix, 'keep', { size: M });
        const volume = await createVolume(prefix, 'db', { size: 4 * M });
        const objects = prefix.open('db');
        for (const key of ['extents/00/0.100000001', 'extents/01/1.100000002', 'snapshots/s1']) await objects.put(key, Buffer.from('x'));
        await assert.rejects(deleteVolume(prefix, 'db', { log }), code('S3NBD_VOLUME_HAS_SNAPSHOTS', /1 snapshot\b/));
        await assert.rejects(checkDeletable(prefix, 'db', {}), code('S3NBD_VOLUME_HAS_SNAPSHOTS'));
        await objects.put('clones/s1/clone-id-1', Buffer.from(JSON.stringify({ format: 's3nbd-clone', store: 's3://b/c', volumeId: 'clone-id-1' })));
        await assert.rejects(deleteVolume(prefix, 'db', { log, withSnapshots: true }), code('S3NBD_VOLUME_HAS_CLONES', /clone-id-1 in s3:\/\/b\/c/));
        await objects.deleteMany(['clones/s1/clone-id-1']);
        const release = await holdLease(objects);
        await assert.rejects(deleteVolume(prefix, 'db', { log, withSnapshots: true }), code('S3NBD_VOLUME_IN_USE', /gateway elsewhere/));
        await release();
        assert.equal((await readVolume(objects))?.volume.id, volume.id, 'every refusal left the volume as it was');
        await checkDeletable(prefix, 'db', { withSnapshots: true });
        assert.equal(await deleteVolume(prefix, 'db', { log, withSnapshots: true }), 5, 'metadata, lease, two extents and a manifest');
        assert.deepEqual(await keys(objects), []);
        assert.deepEqual((await listVolumes(prefix)).map((v) => v.name), ['keep']);
        if (kind === 'directory') assert.equal(existsSync(prefix.url('db')), false, 'the directory is gone');
        await assert.rejects(deleteVolume(prefix, 'db', { log }), code('S3NBD_NO_VOLUME'));
        // The name is free again.
        await createVolume(prefix, 'db', { size: M });
      } finally {
        await prefix.close();
      }
    });

    it(`${kind}: a deletion killed halfway leaves a volume nothing opens, and running it again finishes it`, async () => {
      const real = prefixOf();
      const faulty = new FaultyStore(real.open('db'));
      const prefix: VolumePrefix = { ...real, open: (name) => (name === 'db' ? faulty : real.open(name)) };
      try {
        await createVolume(real, 'db', { size: 4 * M });
        for (let i = 0; i < 5; i++) await faulty.put(`extents/0${i}/${i}.100000001`, Buffer.from('x'));
        faulty.failAll('deleteMany');
        await assert.rejects(deleteVolume(prefix, 'db', { log }));
        faulty.failAll('deleteMany', false);
        await assert.rejects(readVolume(faulty), code('S3NBD_VOLUME_DELETING'));
        const listed = await listVolumes(real);
        assert.deepEqual(listed.map((v) => [v.name, v.state]), [['db', 'deleting']]);
        assert.match(listed[0]!.error!, /S3NBD_VOLUME_DELETING/);
        await assert.rejects(createVolume(real, 'db', { size: M }), code('S3NBD_VOLUME_DELETING'));
        if (kind === 'directory') {
          await assert.rejects(openStorage({ log, store: real.url('db'), volume: { mode: 'open-or-create', size: 4 * M }, readOnly: false, memoryCacheBytes: 0 }),
            code('S3NBD_VOLUME_DELETING'));
        }
        assert.equal((await keys(faulty)).length, 7, 'the objects are still there');
        await checkDeletable(prefix, 'db', {});
        assert.equal(await deleteVolume(prefix, 'db', { log }), 7);
        assert.deepEqual(await keys(faulty), []);
        assert.deepEqual(await listVolumes(real), []);
      } finally {
        await real.close();
      }
    });
  }

  it('deleting a clone removes its marker in the origin, so the origin\'s snapshot may be deleted', async () => {
    const origins = openVolumePrefix(`${dir.path}/origins`, {}, log);
    const clones = openVolumePrefix(`${dir.path}/clones`, {}, log);
    try {
      const origin = await createVolume(origins, 'base', { size: M });
      const cloneId = '11111111-2222-4333-8444-555555555555';
      const originStore = origins.open('base');
      await originStore.put('snapshots/s1', Buffer.from('manifest'));
      await originStore.put(`clones/s1/${cloneId}`, Buffer.from(JSON.stringify({ format: 's3nbd-clone', store: clones.url('copy'), volumeId: cloneId })));
      await openVolume(clones.open('copy'), {
        mode: 'create', size: M, clone: { id: cloneId, origin: { store: origins.url('base'), volumeId: origin.id, snapshot: 's1' } },
      });
      await assert.rejects(deleteVolume(origins, 'base', { log, withSnapshots: true }), code('S3NBD_VOLUME_HAS_CLONES', new RegExp(cloneId)));
      await deleteVolume(clones, 'copy', { log });
      assert.deepEqual(await keys(originStore), ['s3nbd-volume.json', 'snapshots/s1']);
      await deleteVolume(origins, 'base', { log, withSnapshots: true });
      assert.deepEqual(await listVolumes(origins), []);
    } finally {
      await origins.close();
      await clones.close();
    }
  });

  it('volumeControl answers the volume.* requests through a VolumeAdmin, and checks every field', async () => {
    const prefix = openVolumePrefix(`${dir.path}/control`, {}, log);
    try {
      const control = volumeControl(storeVolumeAdmin(prefix, log), () => listVolumes(prefix), (r) => Promise.resolve({ passed: r.op }));
      const created = await control({ op: 'volume.create', name: 'db', size: 2 * M }) as { name: string; size: number };
      assert.deepEqual([created.name, created.size], ['db', 2 * M]);
      assert.equal((await control({ op: 'volume.resize', name: 'db', size: 4 * M }) as { size: number }).size, 4 * M);
      assert.deepEqual((await control({ op: 'volume.list' }) as Array<{ name: string; size: number }>).map((v) => [v.name, v.size]), [['db', 4 * M]]);
      await assert.rejects(control({ op: 'volume.resize', name: 'db', size: 2 * M }), code('S3NBD_VOLUME_SHRINK'));
      await assert.rejects(control({ op: 'volume.resize', name: 'db', size: '4M' }), code('S3NBD_BAD_SIZE'));
      await assert.rejects(control({ op: 'volume.create', name: 'x', size: 1000 }), code('S3NBD_BAD_DEVICE_SIZE'));
      await assert.rejects(control({ op: 'volume.create', name: 'x', size: M, extentSize: 3000 }), code('S3NBD_BAD_EXTENT_SIZE'));
      await assert.rejects(control({ op: 'volume.create', name: 'a/b', size: M }), code('S3NBD_BAD_VOLUME_NAME'));
      await assert.rejects(control({ op: 'volume.delete', name: 'nope' }), code('S3NBD_NO_VOLUME'));
      assert.deepEqual(await control({ op: 'hello' }), { passed: 'hello' }, 'other ops go to the gateway\'s own handler');
      assert.equal(await control({ op: 'volume.delete', name: 'db' }), null);
      assert.deepEqual(await listVolumes(prefix), []);
    } finally {
      await prefix.close();
    }
  });
});
