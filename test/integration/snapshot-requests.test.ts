// What snapshots cost in requests, counted at the fault proxy in front of MinIO: creating a
// snapshot of a volume of which 1% changed since the last one, deleting the last one (which
// collects what only it held), and a gc with nothing to collect. Scaled down from the case of
// docs/s3.md (a 100 GiB volume of 1 MiB extents, 1 GiB = 1024 extents changed): 2048 extents
// of 4 KiB, 21 changed. What grows with the volume is the listing, one LIST per 1000 objects;
// what grows with the change is the DeleteObjects, one per 1000 objects freed; the rest is a
// handful of requests whatever the size.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { ObjectExtents } from '../../src/storage/extents/extent-objects.ts';
import { S3ObjectStore } from '../../src/storage/objects/s3/s3-object-store.ts';
import { Lease } from '../../src/storage/volume/lease.ts';
import { openVolume } from '../../src/storage/volume/volume.ts';
import { cli } from '../helpers/gateway.ts';
import { credentialsEnv, type S3TestServer, startMinio } from '../helpers/minio.ts';
import { type RequestKind, type S3FaultProxy, startFaultProxy } from '../helpers/s3-fault-proxy.ts';

const E = 4096;
const WRITTEN = 2048;
const CHANGED = 21;
const KINDS: readonly RequestKind[] = ['GET object', 'PUT object', 'LIST', 'DELETE objects', 'DELETE object', 'HEAD object', 'other'];

describe('snapshot request counts (MinIO, at the proxy)', () => {
  let s3: S3TestServer;
  let proxy: S3FaultProxy;
  let objects: S3ObjectStore;
  const bucket = `snapreq-${randomBytes(4).toString('hex')}`;
  const store = `s3://${bucket}/vol`;

  before(async () => {
    s3 = await startMinio();
    await s3.createBucket(bucket);
    proxy = await startFaultProxy(s3.endpoint);
    objects = new S3ObjectStore({
      bucket, prefix: 'vol', endpoint: s3.endpoint, region: s3.region,
      credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
    });
  });
  after(async () => {
    await objects?.close();
    await proxy?.close();
    await s3?.stop();
  });

  const env = (): NodeJS.ProcessEnv => (credentialsEnv(s3));

  /** Runs the CLI through the proxy; returns what it sent, by kind. */
  async function counted(...args: string[]): Promise<Record<string, number>> {
    proxy.clearRequests();
    const r = await cli([...args, '--store', store, '--s3-endpoint', proxy.endpoint], env());
    assert.equal(r.code, 0, r.stderr);
    const counts: Record<string, number> = {};
    for (const kind of KINDS) if (proxy.count(kind) > 0) counts[kind] = proxy.count(kind);
    return counts;
  }

  /** Writes extents [first, end) straight to MinIO, as a gateway would, under the lease. */
  async function write(first: number, end: number, seed: number): Promise<void> {
    const { volume } = await openVolume(objects, { mode: 'open' });
    const layer = await ObjectExtents.open(objects, { extentSize: E, extentCount: WRITTEN, volumeId: volume.id, collect: false });
    const lease = await Lease.acquire(objects, { owner: 'test-writer', ttlMs: 30_000, takeOver: false, log: pino({ level: 'silent' }), onLost: () => undefined, minEpoch: layer.maxEpoch + 1 });
    layer.useEpoch(lease.epoch);
    for (let i = first; i < end; i += 64) {
      await Promise.all(Array.from({ length: Math.min(64, end - i) }, (_, k) => layer.put(i + k, Buffer.alloc(E, seed + i + k))));
    }
    await layer.close();
    await lease.release();
  }

  it('costs a handful of requests plus the listing to create, and one DeleteObjects per 1000 freed objects to delete', { timeout: 300_000 }, async () => {
    const made = await cli(['create', '--store', store, '--s3-endpoint', s3.endpoint, '--size', String(E * WRITTEN), '--extent-size', String(E)], env());
    assert.equal(made.code, 0, made.stderr);
    await write(0, WRITTEN, 1);
    const first = await counted('snapshot', 'create', 's1');
    await write(0, CHANGED, 2);
    const create = await counted('snapshot', 'create', 's2');
    const deletion = await counted('snapshot', 'delete', 's1');
    const gc = await counted('gc');
    console.log(`# requests, ${WRITTEN} extents written, ${CHANGED} changed since s1: create s1 ${JSON.stringify(first)}; create s2 ${JSON.stringify(create)}; delete s1 ${JSON.stringify(deletion)}; gc ${JSON.stringify(gc)}`);

    // Listing: the extents (2048 + 21 objects: 3 LISTs of 1000) and the snapshots (1).
    assert.equal(create.LIST, 3 + 1);
    // GETs: the volume, the lease, and s1's manifest (to count what it holds).
    assert.equal(create['GET object'], 3);
    // PUTs: two refused ones (the conditional-write check), the lease taken and released, the manifest.
    assert.equal(create['PUT object'], 5);
    assert.equal(create['DELETE objects'], undefined);
    // Deleting s1: the same opening (two manifests to read), the manifest's DeleteObjects, and
    // one for the 21 objects only s1 held.
    assert.equal(deletion['DELETE objects'], 2);
    assert.equal(deletion['GET object'], 4);
    assert.equal(deletion['PUT object'], 4);
    assert.equal(gc['DELETE objects'], undefined, 'nothing left to collect');
  });
});
