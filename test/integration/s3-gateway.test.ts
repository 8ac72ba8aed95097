// The gateway on each real S3 server (MinIO and Ceph RGW, test/helpers/s3-servers.ts): data
// written and flushed through one gateway is served identically by a second gateway with an
// empty cache; the bucket holds one object per non-zero extent under the documented key
// layout; a second writer is refused, and one that takes over fences the first; fio and the
// kernel's ext4 work on it; mkfs of a 100 GiB volume (a whole-device TRIM) takes seconds.

import assert from 'node:assert/strict';
import { createHash, randomFillSync } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { parseExtentKey } from '../../src/storage/extents/extent-keys.ts';
import { attachKernelDisk, mount, unmount } from '../helpers/kernel-disk.ts';
import { cli, startGateway, tempDir } from '../helpers/gateway.ts';
import { credentialsEnv } from '../helpers/minio.ts';
import type { S3TestServer } from '../helpers/minio.ts';
import { S3_SERVERS } from '../helpers/s3-servers.ts';
import { requireTool, run, runOk } from '../helpers/tools.ts';

const MiB = 1 << 20;
const BUCKET = 's3nbd-gateway-tests';

for (const kind of S3_SERVERS) describe(`s3nbd on a real S3 server: ${kind.name}`, () => {
  const dir = tempDir('s3gw');
  let s3: S3TestServer;
  let env: NodeJS.ProcessEnv;
  let prefixCount = 0;
  const newStore = (): string => `s3://${BUCKET}/vol${++prefixCount}-${Date.now()}`;
  const s3Args = (): string[] => ['--s3-endpoint', s3.endpoint];

  before(async () => {
    for (const tool of ['nbdcopy', 'fio', 'nbdfuse', 'mkfs.ext4', 'e2fsck'] as const) requireTool(tool);
    s3 = await kind.start();
    await s3.createBucket(BUCKET);
    env = credentialsEnv(s3);
  });
  after(async () => {
    await s3.stop();
    dir.remove();
  });

  async function listKeys(prefix: string): Promise<string[]> {
    const client = new S3Client({ endpoint: s3.endpoint, region: s3.region, forcePathStyle: true,
      credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } });
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const page = await client.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: prefix, ContinuationToken: token }));
      for (const o of page.Contents ?? []) keys.push(o.Key!);
      token = page.NextContinuationToken;
    } while (token);
    client.destroy();
    return keys;
  }

  it('serves flushed data identically from a second gateway with an empty cache, one object per non-zero extent', async () => {
    const store = newStore();
    const image = join(dir.path, 'image');
    const data = Buffer.alloc(48 * MiB);
    randomFillSync(data);
    data.fill(0, 8 * MiB, 16 * MiB); // zero extents are never uploaded
    writeFileSync(image, data);
    const first = await startGateway(['--store', store, ...s3Args(), '--size', '64M'], { socket: join(dir.path, 'a.sock'), env });
    await runOk('nbdcopy', ['--flush', image, first.uri]);
    // The FLUSH returned: the data must be in S3 now, whatever happens to this gateway.
    await first.stop('SIGKILL');
    const prefix = store.slice(`s3://${BUCKET}/`.length);
    const keys = (await listKeys(`${prefix}/extents/`)).map((k) => k.slice(prefix.length + 1));
    const stored = [...new Set(keys.map((k) => parseExtentKey(k)?.index ?? -1))].sort((a, b) => a - b);
    const want = [...Array(48).keys()].filter((i) => i < 8 || i >= 16);
    assert.deepEqual(stored, want, 'an object for every extent that is not zeros, and nothing else');

    const second = await startGateway(['--store', store, ...s3Args(), '--take-over'], { socket: join(dir.path, 'b.sock'), env });
    const out = join(dir.path, 'out');
    await runOk('nbdcopy', [second.uri, out]);
    const back = readFileSync(out);
    assert.equal(back.length, 64 * MiB);
    assert.ok(back.subarray(0, 48 * MiB).equals(data), 'every byte identical');
    assert.ok(back.subarray(48 * MiB).equals(Buffer.alloc(16 * MiB)));
    assert.equal(await second.stop(), 0);
  });

  it('reports dirty data in `s3nbd info`, and uploads it all on SIGTERM before exiting', async () => {
    const store = newStore();
    const socket = join(dir.path, 'i.sock');
    const cacheDir = join(dir.path, 'i-cache');
    const gw = await startGateway(['--store', store, ...s3Args(), '--size', '64M', '--cache-dir', cacheDir, '--upload-delay', '600000'], { socket, env });
    const data = Buffer.alloc(6 * MiB);
    randomFillSync(data);
    const image = join(dir.path, 'six');
    writeFileSync(image, data);
    await runOk('nbdcopy', [image, gw.uri]); // no --flush: the data stays dirty
    await new Promise((r) => setTimeout(r, 2500)); // the status file is written every 2 s
    const info = JSON.parse((await cli(['info', '--store', store, ...s3Args(), '--cache-dir', cacheDir, '--json'], env)).stdout) as {
      storedExtents: number; gateway: { dirtyBytes: number; dirtyExtents: number; journalBytes: number };
    };
    assert.equal(info.storedExtents, 0, 'nothing uploaded yet');
    assert.equal(info.gateway.dirtyExtents, 6);
    assert.equal(info.gateway.dirtyBytes, 6 * MiB);
    assert.ok(info.gateway.journalBytes >= 6 * MiB);
    assert.equal(await gw.stop('SIGTERM'), 0);
    assert.match(gw.logs(), /"complete":true,"dirtyBytes":0,"msg":"all dirty data uploaded"/);
    const fresh = await startGateway(['--store', store, ...s3Args()], { socket: join(dir.path, 'j.sock'), env });
    const out = join(dir.path, 'six-out');
    await runOk('nbdcopy', [fresh.uri, out]);
    assert.ok(readFileSync(out).subarray(0, 6 * MiB).equals(data));
    assert.equal(await fresh.stop(), 0);
  });

  it('refuses a second gateway on the same volume', async () => {
    const store = newStore();
    const first = await startGateway(['--store', store, ...s3Args(), '--size', '64M'], { socket: join(dir.path, 'c.sock'), env });
    const second = await cli(['serve', '--store', store, ...s3Args(), '--socket', join(dir.path, 'd.sock'), '--cache-dir', join(dir.path, 'd-cache')], env);
    assert.equal(second.code, 2);
    assert.match(second.stderr, /^s3nbd: the volume in .* is in use by gateway .*\(S3NBD_VOLUME_IN_USE\)\. Fix: .*--take-over/);
    assert.equal(await first.stop(), 0);
    // A clean stop releases the lease: the next gateway starts at once.
    const third = await startGateway(['--store', store, ...s3Args()], { socket: join(dir.path, 'e.sock'), env });
    assert.equal(await third.stop(), 0);
  });

  it('keeps its lease past the lease time; --take-over fences the first gateway, which stops writing', async () => {
    const store = newStore();
    const first = await startGateway(['--store', store, ...s3Args(), '--size', '64M', '--lease-ttl', '3'], { socket: join(dir.path, 'l1.sock'), env });
    const image = join(dir.path, 'lease-a');
    writeFileSync(image, Buffer.alloc(MiB, 1));
    await runOk('nbdcopy', ['--flush', image, first.uri]);
    // Renewed every second: after 5 s only a renewal that works has kept it.
    await new Promise((r) => setTimeout(r, 5000));
    assert.equal(first.process.exitCode, null, `the first gateway stopped on its own:\n${first.logs()}`);
    assert.doesNotMatch(first.logs(), /lease lost/);
    await runOk('nbdcopy', ['--flush', image, first.uri]);

    const second = await startGateway(['--store', store, ...s3Args(), '--take-over', '--lease-ttl', '3'], { socket: join(dir.path, 'l2.sock'), env });
    assert.equal(await first.exited, 3, 'the first gateway exits 3 once its renewal finds the other owner');
    assert.match(first.logs(), /lease lost: another gateway took over/);
    const other = join(dir.path, 'lease-b');
    writeFileSync(other, Buffer.alloc(MiB, 2));
    await runOk('nbdcopy', ['--flush', other, second.uri]);
    const back = join(dir.path, 'lease-out');
    await runOk('nbdcopy', [second.uri, back]);
    assert.ok(readFileSync(back).subarray(0, MiB).equals(Buffer.alloc(MiB, 2)));
    assert.equal(await second.stop(), 0);
  });

  it('passes fio --verify=crc32c with several jobs', async () => {
    const store = newStore();
    const gw = await startGateway(['--store', store, ...s3Args(), '--size', '512M'], { socket: join(dir.path, 'f.sock'), env });
    const report = join(dir.path, 'fio.json');
    await runOk('fio', [
      '--output-format=json', `--output=${report}`, '--ioengine=nbd', `--uri=${gw.uri}`,
      '--name=small', '--rw=randwrite', '--bsrange=4k-64k', '--size=64M', '--iodepth=16', '--numjobs=2', '--offset_increment=64M',
      '--verify=crc32c', '--verify_state_save=0', '--verify_fatal=1',
      '--name=large', '--rw=write', '--bs=1M', '--size=128M', '--offset=256M', '--iodepth=8', '--verify=crc32c', '--verify_state_save=0', '--verify_fatal=1',
    ], { timeoutMs: 600_000 });
    const jobs = (JSON.parse(readFileSync(report, 'utf8')) as { jobs: Array<{ error: number; read: { io_bytes: number }; write: { io_bytes: number } }> }).jobs;
    assert.equal(jobs.length, 3);
    for (const job of jobs) {
      assert.equal(job.error, 0);
      assert.ok(job.write.io_bytes > 0);
      assert.equal(job.read.io_bytes, job.write.io_bytes);
    }
    assert.equal(await gw.stop(), 0);
  });

  it('holds an ext4 file system that a fresh gateway serves intact; mkfs of 100 GiB takes seconds', async () => {
    const store = newStore();
    const mnt = join(dir.path, 'mnt');
    const first = await startGateway(['--store', store, ...s3Args(), '--size', '100G'], { socket: join(dir.path, 'g.sock'), env });
    const disk = await attachKernelDisk(first.uri, dir.path);
    let mountedDisk = disk;
    try {
      const started = Date.now();
      await runOk('mkfs.ext4', ['-F', '-q', disk.loop], { timeoutMs: 300_000 });
      const mkfsMs = Date.now() - started;
      assert.ok(mkfsMs < 30_000, `mkfs.ext4 of 100 GiB took ${mkfsMs} ms`);
      await mount(disk.loop, mnt);
      const files = new Map<string, string>();
      for (let i = 0; i < 40; i++) {
        const body = Buffer.alloc((i * 7919) % (3 * MiB) + 1);
        randomFillSync(body);
        writeFileSync(join(mnt, `file${i}`), body);
        files.set(`file${i}`, createHash('sha256').update(body).digest('hex'));
      }
      await runOk('sync', []);
      await unmount(mnt);
      const fsck = await run('e2fsck', ['-fn', disk.loop]);
      assert.equal(fsck.code, 0, fsck.stdout);
      await disk.detach();
      assert.equal(await first.stop(), 0);

      const second = await startGateway(['--store', store, ...s3Args()], { socket: join(dir.path, 'h.sock'), env });
      mountedDisk = await attachKernelDisk(second.uri, dir.path);
      const fsck2 = await run('e2fsck', ['-fn', mountedDisk.loop]);
      assert.equal(fsck2.code, 0, fsck2.stdout);
      await mount(mountedDisk.loop, mnt, ['-o', 'ro']);
      for (const [name, sum] of files) assert.equal(createHash('sha256').update(readFileSync(join(mnt, name))).digest('hex'), sum, name);
      await unmount(mnt);
      await mountedDisk.detach();
      assert.equal(await second.stop(), 0);
    } finally {
      await run('umount', [mnt]);
      await mountedDisk.detach().catch(() => undefined);
    }
  });
});
