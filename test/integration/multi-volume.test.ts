// Many volumes, one gateway, on MinIO (issue 18's must-show): `serve --volumes s3://backups/fleet`
// serves three volumes, each written by its own fio client at the same time with crc32c
// verification; a fourth is created and a fifth deleted meanwhile (`s3nbd volume create` and
// `volume delete`, which reach the running gateway) while the fio clients go on, the admin
// endpoint's /api/status showing the three clients connected before and after; `nbdinfo --list` shows the exports with their
// descriptions, a snapshot taken through one volume's cache directory among them; after a
// drained SIGTERM, each volume read through a fresh gateway on an empty cache directory is
// byte-identical to what the first gateway returned. And a bad volume (a
// corrupt metadata object, a lease another gateway holds) is reported and skipped while the
// others are served.

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ListObjectsV2Command, PutObjectCommand } from '@aws-sdk/client-s3';
import { type Gateway, cli, startGateway, tempDir } from '../helpers/gateway.ts';
import { credentialsEnv, type S3TestServer, sdkClient, startMinio } from '../helpers/minio.ts';
import { adminGet } from '../helpers/admin.ts';
import { freePort, requireTool, run, runOk } from '../helpers/tools.ts';
import { assertUserError } from '../helpers/user-error.ts';

const MiB = 1024 * 1024;
const READY = /"msg":"volumes opened"/;

interface FioJob {
  jobname: string;
  error: number;
  write: { io_bytes: number };
  read: { io_bytes: number };
}

interface Listed {
  name: string;
  description: string;
}

/** nbdinfo --list, as names and descriptions. */
async function listExports(socket: string): Promise<Listed[]> {
  const out = await runOk('nbdinfo', ['--list', '--json', `nbd+unix:///?socket=${socket}`]);
  const exports = (JSON.parse(out) as { exports: Array<{ 'export-name': string; description?: string }> }).exports;
  return exports.map((e) => ({ name: e['export-name'], description: e.description ?? '' })).sort((a, b) => a.name.localeCompare(b.name));
}

describe('many volumes served by one gateway on MinIO', () => {
  const dir = tempDir('multi-volume');
  let s3: S3TestServer;
  let env: NodeJS.ProcessEnv;
  const file = (name: string): string => join(dir.path, name);
  const prefix = 's3://backups/fleet';

  before(async () => {
    for (const tool of ['fio', 'nbdinfo', 'nbdcopy'] as const) requireTool(tool);
    s3 = await startMinio();
    await s3.createBucket('backups');
    env = credentialsEnv(s3);
  });
  after(async () => {
    await s3?.stop();
    dir.remove();
  });

  const create = async (name: string, size: string, under = prefix): Promise<string> => {
    const made = await cli(['create', '--store', `${under}/${name}`, '--s3-endpoint', s3.endpoint, '--size', size], env);
    assert.equal(made.code, 0, made.stderr);
    return /created volume ([0-9a-f-]{36})/.exec(made.stdout + made.stderr)![1]!;
  };
  // S3NBD_STORE (the container image sets one) is ignored beside --volumes.
  const serve = (socket: string, cacheDir: string, under = prefix, admin: string[] = []): Promise<Gateway> =>
    startGateway(['--volumes', under, '--s3-endpoint', s3.endpoint, '--cache-dir', cacheDir, '--max-volumes', '6', ...admin],
      { socket, env: { ...env, S3NBD_STORE: file('not-used') }, readyLine: READY, timeoutMs: 60_000 });
  /** `s3nbd volume ...` through the gateway on `cacheDir`. */
  const volumeCli = async (args: string[], cacheDir: string): Promise<string> => {
    const r = await cli(['volume', ...args, '--volumes', prefix, '--s3-endpoint', s3.endpoint, '--cache-dir', cacheDir], env);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout;
  };
  interface Status { volumes: Array<{ name: string; connections: number }>; skipped: Array<{ name: string; error: string }> }
  const keys = async (under: string): Promise<string[]> => {
    const out = await sdkClient(s3).send(new ListObjectsV2Command({ Bucket: 'backups', Prefix: under }));
    return (out.Contents ?? []).map((o) => o.Key!);
  };
  /** SHA-256 of the whole export, read with nbdcopy. */
  const hashOf = async (socket: string, name: string): Promise<string> => {
    const out = file(`${name.replace('@', '-at-')}.img`);
    await runOk('nbdcopy', [`nbd+unix:///${name}?socket=${socket}`, out], { timeoutMs: 300_000 });
    const hash = createHash('sha256');
    for await (const chunk of createReadStream(out)) hash.update(chunk as Buffer);
    rmSync(out);
    return hash.digest('hex');
  };

  it('writes three volumes at once with fio, creates and deletes one meanwhile, and restores each identically', { timeout: 900_000 }, async () => {
    const ids: Record<string, string> = {};
    for (const name of ['vm1', 'vm2', 'vm3']) ids[name] = await create(name, '96M');
    ids.old = await create('old', '16M');
    const socket = file('gw.sock');
    const cacheDir = file('cache');
    const adminPort = await freePort();
    const gw = await serve(socket, cacheDir, prefix, ['--admin-listen', String(adminPort)]);
    const hashes: Record<string, string> = {};
    try {
      assert.deepEqual((await listExports(socket)).map((e) => e.name), ['old', 'vm1', 'vm2', 'vm3']);
      // Each volume its own fio client, all at once.
      const fio = ['vm1', 'vm2', 'vm3'].map(async (name) => {
        const report = file(`fio-${name}.json`);
        await runOk('fio', [
          '--output-format=json', `--output=${report}`, '--ioengine=nbd', `--uri=nbd+unix:///${name}?socket=${socket}`,
          // Writes at 3 MiB/s at most: the clients are still writing while a volume is created and another deleted.
          `--name=${name}`, '--rw=randwrite', '--bsrange=4k-256k', '--size=48M', '--offset=0', '--iodepth=8', '--rate=,3m',
          '--verify=crc32c', '--verify_state_save=0', '--verify_fatal=1', '--do_verify=1',
        ], { timeoutMs: 600_000 });
        return (JSON.parse(readFileSync(report, 'utf8')) as { jobs: FioJob[] }).jobs;
      });

      // Meanwhile (once the three clients are connected): a volume created and written, another
      // deleted, by the volume CLI through the gateway's control socket.
      const connections = async (): Promise<Record<string, number>> => {
        const { volumes } = (await adminGet(`http://127.0.0.1:${adminPort}`, '/api/status')).json<Status>();
        return Object.fromEntries(volumes.map((v) => [v.name, v.connections]));
      };
      const writing = (c: Record<string, number>): boolean => ['vm1', 'vm2', 'vm3'].every((name) => (c[name] ?? 0) > 0);
      for (let deadline = Date.now() + 60_000; !writing(await connections());) {
        if (Date.now() > deadline) throw new Error('the fio clients did not connect');
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      const created = JSON.parse(await volumeCli(['create', 'new', '--size', '24M', '--json'], cacheDir)) as { name: string; volumeId: string; size: number };
      assert.equal(created.name, 'new');
      assert.equal(created.size, 24 * MiB);
      ids.new = created.volumeId;
      const image = randomBytes(8 * MiB);
      writeFileSync(file('new-data'), image);
      await runOk('nbdcopy', ['--flush', file('new-data'), `nbd+unix:///new?socket=${socket}`]);
      assert.match(await volumeCli(['delete', 'old'], cacheDir), /the gateway on .* stopped serving it/);
      assert.deepEqual(await keys('fleet/old/'), [], 'the deleted volume\'s objects are gone');
      // A deleted volume is no export any more.
      const refused = await run('nbdinfo', [`nbd+unix:///old?socket=${socket}`]);
      assert.notEqual(refused.code, 0);
      assert.ok(writing(await connections()), 'the three fio clients were writing all along');

      for (const jobs of await Promise.all(fio)) {
        assert.equal(jobs.length, 1);
        const job = jobs[0]!;
        assert.equal(job.error, 0, job.jobname);
        assert.ok(job.write.io_bytes >= 48 * MiB, `${job.jobname} wrote`);
        assert.equal(job.read.io_bytes, job.write.io_bytes, `${job.jobname} verified everything it wrote`);
      }

      // A snapshot of vm1, taken by the gateway through vm1's own cache directory, is the export vm1@s1.
      const snapped = await cli(['snapshot', 'create', '--store', `${prefix}/vm1`, '--s3-endpoint', s3.endpoint, '--cache-dir', join(cacheDir, 'volumes', 'vm1'), 's1'], env);
      assert.equal(snapped.code, 0, snapped.stderr);
      const info = await cli(['info', '--store', `${prefix}/vm2`, '--s3-endpoint', s3.endpoint, '--cache-dir', join(cacheDir, 'volumes', 'vm2'), '--json'], env);
      assert.equal(info.code, 0, info.stderr);
      assert.match(info.stdout, new RegExp(ids.vm2!));
      // vm2's status.json, in its own cache directory (written every 2 s; the clients have written for longer).
      assert.deepEqual((JSON.parse(info.stdout) as { gateway?: { pid: number; running: boolean } }).gateway?.running, true);
      assert.equal((JSON.parse(info.stdout) as { gateway: { pid: number } }).gateway.pid, gw.process.pid);

      const listed = await listExports(socket);
      const s1 = listed.find((e) => e.name === 'vm1@s1');
      assert.match(s1?.description ?? '', new RegExp(`^snapshot s1 of s3nbd volume ${ids.vm1}, taken .*, 96 MiB, read-only$`));
      assert.deepEqual(listed.filter((e) => e !== s1), [
        { name: 'new', description: `s3nbd volume ${ids.new}, 24 MiB` },
        { name: 'vm1', description: `s3nbd volume ${ids.vm1}, 96 MiB` },
        { name: 'vm2', description: `s3nbd volume ${ids.vm2}, 96 MiB` },
        { name: 'vm3', description: `s3nbd volume ${ids.vm3}, 96 MiB` },
      ]);
      for (const name of ['new', 'vm1', 'vm2', 'vm3', 'vm1@s1']) hashes[name] = await hashOf(socket, name);
      assert.equal(hashes['vm1@s1'], hashes.vm1, 'the snapshot reads as the volume it was taken of');
      delete hashes['vm1@s1'];
      const copy = Buffer.alloc(24 * MiB);
      image.copy(copy);
      assert.equal(hashes.new, createHash('sha256').update(copy).digest('hex'), 'the created volume reads as written');
      assert.equal(new Set(Object.values(hashes)).size, 4, 'four different volumes');
    } finally {
      assert.equal(await gw.stop(), 0, gw.logs());
    }
    assert.match(gw.logs(), /"drained":true,"msg":"stopped"/);

    // A fresh gateway, empty cache directory: everything comes from the bucket.
    const fresh = await serve(file('fresh.sock'), file('fresh-cache'));
    try {
      assert.deepEqual((await listExports(file('fresh.sock'))).map((e) => e.name), ['new', 'vm1', 'vm1@s1', 'vm2', 'vm3']);
      for (const name of Object.keys(hashes)) assert.equal(await hashOf(file('fresh.sock'), name), hashes[name], `${name} restored identically`);
      assert.equal(await hashOf(file('fresh.sock'), 'vm1@s1'), hashes.vm1, 'and vm1@s1');
    } finally {
      assert.equal(await fresh.stop(), 0, fresh.logs());
    }
  });

  it('reports and skips a volume with corrupt metadata and one whose lease another gateway holds, and serves the rest', { timeout: 300_000 }, async () => {
    const other = 's3://backups/office';
    const good = await create('good', '8M', other);
    await sdkClient(s3).send(new PutObjectCommand({ Bucket: 'backups', Key: 'office/broken/s3nbd-volume.json', Body: '{"format":"s3nbd-volume", truncated' }));
    // Another gateway holds "held" (it serves it alone).
    const holder = await startGateway(['--store', `${other}/held`, '--s3-endpoint', s3.endpoint, '--size', '8M'], { socket: file('holder.sock'), env });
    try {
      const cacheDir = file('skip-cache');
      const skipAdmin = await freePort();
      const gw = await serve(file('skip.sock'), cacheDir, other, ['--admin-listen', String(skipAdmin)]);
      try {
        const skipped = (line: string): { code?: string; error: string } | undefined => {
          const entry = JSON.parse(line) as { msg: string; volumeName: string; code?: string; error: string };
          return entry.msg === 'volume skipped: not served' ? entry : undefined;
        };
        const lines = new Map<string, { code?: string; error: string }>();
        for (const line of gw.logs().split('\n').filter((l) => l.startsWith('{'))) {
          const entry = skipped(line);
          if (entry) lines.set((JSON.parse(line) as { volumeName: string }).volumeName, entry);
        }
        assert.equal(lines.get('broken')?.code, 'S3NBD_BAD_VOLUME');
        assert.equal(lines.get('held')?.code, 'S3NBD_VOLUME_IN_USE');
        assert.match(lines.get('held')!.error, /in use by gateway .*Fix: /);
        const listed = (await adminGet(`http://127.0.0.1:${skipAdmin}`, '/api/status')).json<Status>();
        assert.deepEqual(listed.skipped.map((v) => v.name), ['broken', 'held']);
        assert.deepEqual(listed.volumes.map((v) => v.name), ['good']);
        const exports = await listExports(file('skip.sock'));
        assert.deepEqual(exports, [{ name: 'good', description: `s3nbd volume ${good}, 8 MiB` }]);
        // The rest are served: a write and a read on "good".
        writeFileSync(file('good-data'), randomBytes(MiB));
        await runOk('nbdcopy', ['--flush', file('good-data'), `nbd+unix:///good?socket=${file('skip.sock')}`]);
        await runOk('nbdcopy', [`nbd+unix:///good?socket=${file('skip.sock')}`, file('good-read')]);
        assert.deepEqual(readFileSync(file('good-read')).subarray(0, MiB), readFileSync(file('good-data')));
        // The holder was not disturbed.
        await runOk('nbdinfo', [holder.uri]);
      } finally {
        assert.equal(await gw.stop(), 0, gw.logs());
      }
    } finally {
      assert.equal(await holder.stop(), 0, holder.logs());
    }
  });

  it('refuses --volumes with --store, --size, --snapshot or --export-name, a bad URL, memory: and a volume, in one line each', async () => {
    for (const extra of [['--store', '/tmp/x'], ['--size', '1G'], ['--snapshot', 's1'], ['--export-name', 'x']]) {
      const result = await cli(['serve', '--volumes', prefix, ...extra], env);
      assertUserError(result, 'S3NBD_CONFLICTING_OPTIONS', new RegExp(`--volumes cannot be combined with ${extra[0]!}`));
    }
    const socket = ['--socket', file('refused.sock'), '--cache-dir', file('refused-cache')];
    assertUserError(await cli(['serve', '--volumes', 's3://', ...socket], env), 'S3NBD_BAD_S3_URL', /^s3nbd: --volumes "s3:\/\/"/);
    assertUserError(await cli(['serve', '--volumes', 'memory:', ...socket], env), 'S3NBD_BAD_VOLUMES');
    assertUserError(await cli(['serve', '--volumes', `${prefix}/vm1`, '--s3-endpoint', s3.endpoint, ...socket], env), 'S3NBD_BAD_VOLUMES', /it is a volume itself/);
  });
});
