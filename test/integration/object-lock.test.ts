// s3nbd on a bucket with S3 Object Lock (test/helpers/minio.ts createLockedBucket: versioning,
// and a default retention of a day in GOVERNANCE mode), on each real S3 server (MinIO and
// Ceph RGW, test/helpers/s3-servers.ts): the gateway serves a volume there unchanged (MinIO;
// RGW 16 ignores conditional writes in such a bucket, and the gateway refuses it), and objects
// deleted with the gateway's own credentials cannot be destroyed, only hidden behind delete
// markers, which undelete() and `s3nbd undelete` remove again so that every byte comes back.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DeleteObjectCommand } from '@aws-sdk/client-s3';
import type { ObjectVersion } from '../../src/storage/objects/object-store.ts';
import { S3ObjectStore } from '../../src/storage/objects/s3/s3-object-store.ts';
import { undelete } from '../../src/storage/objects/undelete.ts';
import { StorageError } from '../../src/storage/storage-error.ts';
import { CLI, cli, startGateway, tempDir } from '../helpers/gateway.ts';
import { createLockedBucket, credentialsEnv, type S3TestServer, sdkClient } from '../helpers/minio.ts';
import { S3_SERVERS } from '../helpers/s3-servers.ts';
import { requireTool, run, runOk } from '../helpers/tools.ts';

const BUCKET = 's3nbd-locked';
const MiB = 1 << 20;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Runs the command with its stderr on a terminal (a pty), its stdout on a pipe; prints the terminal's output to stderr. */
const ON_A_TERMINAL = String.raw`
import os, subprocess, sys
main, side = os.openpty()
p = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=side)
os.close(side)
seen = b''
while True:
    try:
        data = os.read(main, 4096)
    except OSError:
        break
    if not data:
        break
    seen += data
out = p.stdout.read()
p.wait()
sys.stdout.buffer.write(out)
sys.stderr.buffer.write(seen)
sys.exit(p.returncode)
`;

async function all<T>(items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of items) out.push(item);
  return out;
}

for (const kind of S3_SERVERS) describe(`Object Lock: ${kind.name}`, () => {
  let s3: S3TestServer;
  const stores: S3ObjectStore[] = [];
  const dir = tempDir('objlock');

  before(async () => {
    for (const tool of ['nbdcopy', 'nbdsh'] as const) requireTool(tool);
    s3 = await kind.start();
    await createLockedBucket(s3, BUCKET, { mode: 'GOVERNANCE', days: 1 });
  });
  after(async () => {
    for (const store of stores) await store.close();
    await s3?.stop();
    dir.remove();
  });

  function open(prefix: string): S3ObjectStore {
    const store = new S3ObjectStore({
      bucket: BUCKET, prefix, endpoint: s3.endpoint, region: s3.region, maxAttempts: 2,
      credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
    });
    stores.push(store);
    return store;
  }

  it('serves a volume through NBD: writes, TRIM, lease renewals, a restart; everything deleted, `s3nbd undelete` brings it back', async () => {
    const name = `vol-${randomBytes(4).toString('hex')}`;
    const args = ['--store', `s3://${BUCKET}/${name}`, '--s3-endpoint', s3.endpoint];
    const env = credentialsEnv(s3);
    const socket = (n: string): string => join(dir.path, `${n}.sock`);
    if (kind.name === 'Ceph RGW') {
      // RGW 16 lets an If-None-Match: * PUT replace an object in a versioned bucket: two
      // gateways could both take the lease, so the gateway's check refuses the bucket.
      const refused = await cli(['serve', ...args, '--size', '64M', '--socket', socket('c'), '--cache-dir', join(dir.path, 'c-cache')], env);
      assert.equal(refused.code, 2, refused.stderr);
      assert.match(refused.stderr, /ignores If-None-Match: \* on PutObject.*\(S3NBD_NO_CONDITIONAL_WRITES\)/);
      return;
    }
    // Nothing failed: no warning or error, but for a slow answer on a loaded machine.
    const quiet = (logs: string): void => {
      const warnings = logs.split('\n').filter((line) => /"level":(40|50|60)/.test(line) && !line.includes('waiting for S3: no answer yet'));
      assert.deepEqual(warnings, [], 'the gateway warned');
    };
    const data = randomBytes(16 * MiB);
    const image = join(dir.path, `${name}.img`);
    writeFileSync(image, data);
    const first = await startGateway([...args, '--size', '64M', '--lease-ttl', '3'], { socket: socket('a'), env });
    await runOk('nbdcopy', ['--flush', image, first.uri]);
    await runOk('nbdsh', ['-u', first.uri, '-c', `h.trim(${4 * MiB}, 0)`, '-c', 'h.flush()']);
    await sleep(4000); // a renewal of the lease every second: each a new version
    assert.equal(await first.stop(), 0);
    quiet(first.logs());
    const expected = Buffer.concat([Buffer.alloc(4 * MiB), data.subarray(4 * MiB), Buffer.alloc(48 * MiB)]);
    const readBack = async (n: string): Promise<Buffer> => {
      const gw = await startGateway(args, { socket: socket(n), env });
      const out = join(dir.path, `${name}.${n}`);
      await runOk('nbdcopy', [gw.uri, out]);
      assert.equal(await gw.stop(), 0);
      quiet(gw.logs());
      return readFileSync(out);
    };
    assert.ok((await readBack('b')).equals(expected), 'a restarted gateway serves every byte');

    const store = open(name);
    const versions = await all(store.listVersions(''));
    assert.ok(versions.filter((v) => v.key === 's3nbd-lease.json').length > 4, 'each renewal added a version of the lease');
    const trimmed = versions.filter((v) => v.key.startsWith('extents/') && v.deleteMarker);
    assert.equal(trimmed.length, 4, 'the TRIM deleted 4 extents: a delete marker each, their data kept below');

    // Everything deleted with the gateway's credentials, after the gateway stopped.
    await sleep(1100);
    const since = new Date();
    await sleep(1100);
    const keys = await all(store.list(''));
    await store.deleteMany(keys);
    const gone = await cli(['serve', ...args, '--socket', socket('c'), '--cache-dir', join(dir.path, 'c-cache')], env);
    assert.equal(gone.code, 2);
    assert.match(gone.stderr, /\(S3NBD_NO_VOLUME\)/);
    const dry = await run('python3', ['-c', ON_A_TERMINAL, process.execPath, CLI, 'undelete', ...args, '--since', since.toISOString(), '--dry-run'], { env: { ...process.env, ...env } });
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, new RegExp(`^would restore ${keys.length} keys of s3://${BUCKET}/${name} .* deleted at or after ${since.toISOString()}`));
    assert.match(dry.stderr, new RegExp(`\\d+ versions listed, ${keys.length} keys deleted since then`), 'progress on the terminal');
    const done = await cli(['undelete', ...args, '--since', since.toISOString()], env);
    assert.equal(done.code, 0, done.stderr);
    assert.match(done.stdout, new RegExp(`^restored ${keys.length} keys .*: ${keys.length} delete markers removed`));
    assert.equal(done.stderr, '', 'no progress output without a terminal');
    assert.ok((await readBack('d')).equals(expected), 'every byte back, and the TRIMmed extents, deleted before, still zeros');
    const again = await cli(['undelete', ...args, '--since', since.toISOString()], env);
    assert.match(again.stdout, /^nothing in .* was deleted at or after/);
  });

  it('restores a snapshot taken inside the retention period after every object of the volume was deleted with the gateway\'s credentials', async () => {
    if (kind.name === 'Ceph RGW') return; // RGW 16 refuses such a bucket: the first test asserts the refusal
    const name = `snap-${randomBytes(4).toString('hex')}`;
    const args = ['--store', `s3://${BUCKET}/${name}`, '--s3-endpoint', s3.endpoint];
    const env = credentialsEnv(s3);
    const cacheDir = join(dir.path, `${name}-cache`);
    const taken = randomBytes(8 * MiB);
    const later = randomBytes(8 * MiB);
    writeFileSync(join(dir.path, `${name}.taken`), taken);
    writeFileSync(join(dir.path, `${name}.later`), later);
    const gw = await startGateway([...args, '--size', '32M', '--cache-dir', cacheDir], { socket: join(dir.path, `${name}.sock`), env });
    await runOk('nbdcopy', [join(dir.path, `${name}.taken`), gw.uri]);
    const made = await cli(['snapshot', 'create', ...args, '--cache-dir', cacheDir, 'nightly'], env);
    assert.equal(made.code, 0, made.stderr);
    await runOk('nbdcopy', ['--flush', join(dir.path, `${name}.later`), gw.uri]); // the "ransomware" rewrite
    assert.equal(await gw.stop(), 0, gw.logs());

    // Every current object deleted with the gateway's own credentials.
    const store = open(name);
    await store.deleteMany(await all(store.list('')));
    assert.deepEqual(await all(store.list('')), []);
    const restored = await cli(['snapshot', 'restore', ...args, 'nightly'], env);
    assert.equal(restored.code, 0, restored.stderr);
    assert.match(restored.stdout, /^restored snapshot nightly of .*: \d+ deleted objects brought back/);
    const snap = await startGateway([...args, '--snapshot', 'nightly'], { socket: join(dir.path, `${name}-s.sock`), env });
    const out = join(dir.path, `${name}.out`);
    await runOk('nbdcopy', [snap.uri, out]);
    assert.equal(await snap.stop(), 0, snap.logs());
    assert.ok(readFileSync(out).subarray(0, taken.length).equals(taken), 'the snapshot reads back as taken');
    const again = await cli(['snapshot', 'restore', ...args, 'nightly'], env);
    assert.match(again.stdout, /: 0 deleted objects brought back/, 'run again: nothing left to do');
  });

  it('keeps every object deleted with the same credentials; undelete() brings back the deletions since a time, byte for byte', async () => {
    const prefix = `undelete-${randomBytes(4).toString('hex')}`;
    const store = open(prefix);
    const objects = new Map<string, Buffer>();
    for (let i = 0; i < 30; i++) objects.set(`extents/${String(i).padStart(2, '0')}`, randomBytes(1000 + i));
    for (const [key, data] of objects) await store.put(key, data);
    const first = randomBytes(100);
    objects.set('lease', randomBytes(100));
    const tag = await store.putIf('lease', first, undefined);
    const swapped = await store.putIf('lease', objects.get('lease')!, tag);
    if (kind.name === 'Ceph RGW') {
      // RGW 16 refuses every If-Match in a versioned bucket (and ignores If-None-Match: *):
      // the gateway's conditional-write check refuses such a bucket (see the gateway's case).
      assert.equal(swapped, undefined);
      await store.put('lease', objects.get('lease')!);
    } else {
      assert.ok(swapped, 'a conditional PUT adds a version');
    }
    await store.put('extents/00', objects.get('extents/00')!); // the same bytes again: a second version
    await store.deleteMany(['extents/29']); // deleted before the attack: stays deleted
    objects.delete('extents/29');

    // The server's clock is ours (both on this machine); S3 keeps LastModified to the second.
    await sleep(1100);
    const since = new Date();
    await sleep(1100);
    // The attack, with the gateway's own credentials: every current object deleted...
    const keys = await all(store.list(''));
    assert.equal(keys.length, 30);
    await store.deleteMany(keys);
    assert.deepEqual(await all(store.list('')), []);
    const versions = await all(store.listVersions(''));
    const kept = versions.filter((v) => !v.deleteMarker);
    // 30 extents, extents/00 again, and the lease twice; RGW 16 ignores the CRC of the direct
    // path's first PUT, which is therefore sent again, signed (see DirectS3.put): one more.
    assert.equal(kept.length, kind.name === 'Ceph RGW' ? 34 : 33, 'every version written is still there');
    // ...and then the versions themselves: refused while they are retained.
    const victim = kept.find((v) => v.key === 'extents/01')!;
    await assert.rejects(store.deleteVersions([victim]), (err: unknown) => err instanceof StorageError && /extents\/01/.test(err.message));
    const client = sdkClient(s3);
    try {
      await assert.rejects(client.send(new DeleteObjectCommand({ Bucket: BUCKET, Key: `${prefix}/extents/01`, VersionId: victim.versionId })),
        (err: { $metadata?: { httpStatusCode?: number } }) => [400, 403].includes(err.$metadata?.httpStatusCode ?? 0)); // MinIO 400, RGW 403
    } finally {
      client.destroy();
    }
    assert.equal((await store.getVersion('extents/01', victim.versionId))?.equals(objects.get('extents/01')!), true, 'the old version reads back');

    const dry = await undelete(store, { since, dryRun: true });
    assert.deepEqual([dry.keys, dry.markers, dry.removed], [30, 30, 0]);
    assert.deepEqual(await all(store.list('')), [], 'a dry run removes nothing');

    const progress: number[] = [];
    const done = await undelete(store, { since, onProgress: (p) => progress.push(p.removed) });
    assert.deepEqual([done.keys, done.markers, done.removed], [30, 30, 30]);
    assert.equal(progress.at(-1), 30);
    assert.ok(done.first! >= since && done.last! >= done.first!);
    assert.deepEqual((await all(store.list(''))).sort(), [...objects.keys()].sort());
    for (const [key, data] of objects) assert.ok((await store.get(key))?.equals(data), `${key}: identical bytes`);
    const lease = (await all(store.listVersions('lease'))).filter((v: ObjectVersion) => !v.deleteMarker);
    assert.equal(lease.length, 2);
    const older = lease.find((v) => !v.latest)!;
    assert.ok((await store.getVersion('lease', older.versionId))?.equals(first), 'an overwritten version reads back by its id');

    const again = await undelete(store, { since });
    assert.deepEqual([again.keys, again.removed], [0, 0], 'run again, nothing is left to do');
  });

  it('lists versions in pages of 1000, a key\'s versions split between two pages, each key\'s together', async () => {
    const store = open(`pages-${randomBytes(4).toString('hex')}`);
    const keys = [...Array(400).keys()].map((i) => `k/${String(i).padStart(3, '0')}`);
    // RGW 16 makes the direct path send its first PUT twice (see DirectS3.put): not one of these.
    await store.put('first', Buffer.from('first'));
    // Three versions each: the first page ends inside key 333's.
    for (let i = 0; i < keys.length; i += 16) {
      await Promise.all(keys.slice(i, i + 16).map(async (key) => {
        for (const n of [1, 2, 3]) await store.put(key, Buffer.from(`${key} ${n}`));
      }));
    }
    const pages: number[] = [];
    const versions = await all(store.listVersions('k/', (n) => pages.push(n)));
    assert.deepEqual(pages, [1000, 1200]);
    assert.equal(versions.length, 1200);
    assert.deepEqual([...new Set(versions.map((v) => v.key))], keys, 'in key order, each key once: its versions together');
    assert.equal(new Set(versions.map((v) => `${v.key} ${v.versionId}`)).size, 1200, 'none twice');
    assert.equal(versions.filter((v) => v.latest).length, 400);
    for (const v of versions.filter((v) => v.latest)) assert.equal((await store.getVersion(v.key, v.versionId))?.toString(), `${v.key} 3`);
  });
});
