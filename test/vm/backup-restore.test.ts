// The user guide's journey (docs/kernel-client.md) with the Linux kernel's NBD client in a VM
// and MinIO behind the gateway: modprobe, nbd-client, mkfs.ext4, mount, rsync a tree of
// mixed sizes, delete some and rsync again, fstrim, sync, umount, disconnect. Then the
// machine is lost (kill -9), and a new gateway with an empty cache directory restores from
// the bucket alone: e2fsck -fn is clean and every file's checksum matches. The gateway is
// configured through S3NBD_* variables only, as the container is.
//
// Once with one connection, restored in the VM with nbd-client -C 4; once with -C 4,
// restored on the host through nbdfuse and a loop device; once over TLS (the guide's TLS
// section: --tls require --tls-verify-peer, nbd-client -certfile/-keyfile/-cacertfile, -C 4),
// restored in the VM over TLS too.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type Gateway, startGateway, tempDir } from '../helpers/gateway.ts';
import { attachKernelDisk, mount, unmount } from '../helpers/kernel-disk.ts';
import { type S3TestServer, startMinio } from '../helpers/minio.ts';
import { type S3FaultProxy, startFaultProxy } from '../helpers/s3-fault-proxy.ts';
import { makeCredentials, type TestCredentials } from '../helpers/tls-certs.ts';
import { freePort, requireTool, run, runOk } from '../helpers/tools.ts';
import { bootVm, checksumsOf, GUEST_IO_ERRORS, stepsOf, type VmImage, vmImage } from '../helpers/vm.ts';
import { BACKUP_STEPS, backupScript, DELETED, NETLINK_ERROR, RESTORE_STEPS, restoreScript, TLS_CLIENT_FILES } from './guest-scripts.ts';

const BUCKET = 's3nbd-vm-tests';

describe('a backup from the kernel NBD client, restored through a new gateway with an empty cache', () => {
  const dir = tempDir('vm-backup');
  let image: VmImage;
  let s3: S3TestServer;
  let proxy: S3FaultProxy;
  let creds: TestCredentials;

  before(async () => {
    for (const tool of ['nbdfuse', 'e2fsck', 'losetup'] as const) requireTool(tool);
    creds = await makeCredentials(dir.path);
    image = await vmImage();
    s3 = await startMinio();
    await s3.createBucket(BUCKET);
    // Counts the S3 requests the backup costs.
    proxy = await startFaultProxy(s3.endpoint);
  });
  after(async () => {
    await proxy?.close();
    await s3?.stop();
    dir.remove();
  });

  /** The gateway as the container runs it: every setting from the environment. */
  async function gateway(store: string, name: string, tls = false): Promise<{ gateway: Gateway; port: number }> {
    const port = await freePort();
    const gw = await startGateway(['--take-over'], {
      socket: join(dir.path, `${name}.sock`),
      env: {
        S3NBD_STORE: store, S3NBD_SIZE: '1G', S3NBD_S3_ENDPOINT: proxy.endpoint, S3NBD_S3_REGION: s3.region,
        S3NBD_S3_FORCE_PATH_STYLE: '1', S3NBD_LISTEN: `127.0.0.1:${port}`, S3NBD_CACHE_DIR: join(dir.path, `${name}.cache`),
        AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
        ...(tls ? { S3NBD_TLS: 'require', S3NBD_TLS_CERTIFICATES: creds.serverDir, S3NBD_TLS_VERIFY_PEER: '1' } : {}),
      },
    });
    return { gateway: gw, port };
  }

  /** The client's certificate, key and CA certificate, for the guest's root. */
  function tlsFiles(): Map<string, string> {
    return new Map(TLS_CLIENT_FILES.map((f) => [f, readFileSync(join(creds.clientDir, f), 'utf8')]));
  }

  /** Every connection of the gateway went over TLS, or none did. */
  function assertTls(gw: Gateway, tls: boolean): void {
    const started = [...gw.logs().matchAll(/"msg":"transmission started"/g)].length;
    const secure = [...gw.logs().matchAll(/"tls":"TLSv1\.[23] [^"]+","msg":"transmission started"/g)].length;
    assert.ok(started > 0, gw.logs());
    assert.equal(secure, tls ? started : 0, gw.logs());
  }

  /** Runs a guest script to the end; returns its console after checking its steps and result. */
  async function runGuest(script: string, steps: readonly string[], port: number, gw: Gateway, files?: Map<string, string>): Promise<string> {
    const started = Date.now();
    const vm = await bootVm(image, { guestScript: script, files, port, workDir: dir.path, timeoutSeconds: 400 }).exited;
    const context = `VM exited ${vm.code} after ${((Date.now() - started) / 1000).toFixed(1)} s; console:\n${vm.console}\n--- gateway log (tail):\n${gw.logs().slice(-4000)}`;
    assert.deepEqual(stepsOf(vm.console).filter((s) => s !== 'without-module'), [...steps], context);
    assert.match(vm.console, /^S3NBD-RESULT ok$/m, context);
    assert.equal(vm.code, 0, context);
    assert.doesNotMatch(vm.console, GUEST_IO_ERRORS, context);
    assert.match(vm.console, /^S3NBD-INFO size-sectors 2097152 block-size 4096 max_sectors_kb 1024$/m, context);
    console.log(`# VM run (${steps.join(', ')}): ${((Date.now() - started) / 1000).toFixed(1)} s`);
    return vm.console;
  }

  /** The backup through one gateway, which is then killed: returns the checksums the guest printed. */
  async function backup(store: string, connections: 1 | 4, tls = false): Promise<Map<string, string>> {
    const { gateway: gw, port } = await gateway(store, `backup-${connections}${tls ? '-tls' : ''}`, tls);
    proxy.clearRequests();
    const probeMissingModule = connections === 1;
    const output = await runGuest(backupScript(connections, { probeMissingModule, tls }), BACKUP_STEPS, port, gw, tls ? tlsFiles() : undefined);
    assertTls(gw, tls);

    const sums = checksumsOf(output);
    // 240 + 16 + 3 files, less 100 notes, 6 photos and one archive.
    assert.equal(sums.size, 152, output);
    for (const path of DELETED) assert.ok(!sums.has(path), `${path} was deleted`);
    // Without the module, nbd-client negotiates (one connection) and then fails.
    if (probeMissingModule) assert.ok(output.includes(`S3NBD-NOMODULE ${NETLINK_ERROR}`), output);
    const opened = [...gw.logs().matchAll(/"msg":"connection opened"/g)].length;
    assert.equal(opened, connections + (probeMissingModule ? 1 : 0), gw.logs());

    // fstrim gave the deleted files' extents back: batched deletes reached S3.
    const requests = { put: proxy.count('PUT object'), get: proxy.count('GET object'), deletes: proxy.count('DELETE objects') };
    assert.ok(requests.deletes >= 1, JSON.stringify(requests));
    console.log(`# backup with ${connections} connection(s): S3 requests ${JSON.stringify(requests)}`);

    // The machine is lost: no drain, no lease release. The guest's sync and umount flushed.
    assert.equal(await gw.stop('SIGKILL'), -1);
    return sums;
  }

  /** A new gateway with an empty cache, and the guide's restore in the VM with nbd-client -C 4. */
  async function restoreInVm(store: string, sums: Map<string, string>, name: string, tls = false): Promise<void> {
    const { gateway: gw, port } = await gateway(store, name, tls);
    assert.match(gw.logs(), /"storedExtents":[1-9]/);
    const lines = [...sums].map(([path, hash]) => `${hash}  ${path}\n`).join('');
    await runGuest(restoreScript(4, { tls }), RESTORE_STEPS, port, gw, new Map([['sums', lines], ...(tls ? tlsFiles() : [])]));
    assert.equal([...gw.logs().matchAll(/"msg":"connection opened"/g)].length, 4);
    assertTls(gw, tls);
    assert.equal(await gw.stop('SIGTERM'), 0, gw.logs());
  }

  it('one connection, restored in the VM with nbd-client -C 4', { timeout: 900_000 }, async () => {
    const store = `s3://${BUCKET}/one-connection`;
    await restoreInVm(store, await backup(store, 1), 'restore-in-vm');
  });

  it('over TLS (--tls require --tls-verify-peer; nbd-client -certfile -keyfile -cacertfile, -C 4), restored in the VM over TLS', { timeout: 900_000 }, async () => {
    const store = `s3://${BUCKET}/tls`;
    await restoreInVm(store, await backup(store, 4, true), 'restore-tls', true);
  });

  it('four connections (nbd-client -C 4), restored on the host through nbdfuse and a loop device', { timeout: 900_000 }, async () => {
    const store = `s3://${BUCKET}/four-connections`;
    const sums = await backup(store, 4);

    const { gateway: gw, port } = await gateway(store, 'restore-on-host');
    const disk = await attachKernelDisk(`nbd://127.0.0.1:${port}`, dir.path);
    const mountPoint = join(dir.path, 'restored');
    try {
      const fsck = await run('e2fsck', ['-fn', disk.loop]);
      assert.equal(fsck.code, 0, `${fsck.stdout}${fsck.stderr}`);
      await mount(disk.loop, mountPoint, ['-o', 'ro']);
      try {
        const files = (await runOk('find', ['.', '-type', 'f'], { cwd: mountPoint })).trim().split('\n').sort();
        assert.deepEqual(files, [...sums.keys()].sort());
        // Asynchronous reads: a blocked event loop would stop draining the gateway's log pipe,
        // and the gateway, blocked on it, would stop serving the reads.
        for (const [path, hash] of sums) {
          assert.equal(createHash('sha256').update(await readFile(join(mountPoint, path))).digest('hex'), hash, path);
        }
      } finally {
        await unmount(mountPoint);
      }
    } finally {
      await disk.detach();
    }
    assert.equal(await gw.stop('SIGTERM'), 0, gw.logs());
  });
});
