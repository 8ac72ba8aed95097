// The guide's backup with history (docs/kernel-client.md, "History: snapshots") from the Linux
// kernel's NBD client in a VM, MinIO behind the gateway: the guest formats the volume, rsyncs a
// tree, syncs and freezes the file system; the host, seeing that on the console, takes
// snapshot s1 with `s3nbd snapshot create` through the running gateway; the guest sees @s1 in
// `nbd-client -l` and thaws. The same again after deleting some files and adding an archive
// (s2). Then, while the guest keeps writing files to the mounted volume, it connects a second
// device to each snapshot with `nbd-client -N @NAME -readonly`: e2fsck -fn is clean, it mounts
// read-only and every checksum is as at the snapshot. Afterwards the host reads @s2 through
// nbdfuse and a loop device as well, and the live volume is clean.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { cli, startGateway } from '../helpers/gateway.ts';
import { attachKernelDisk, mount, unmount } from '../helpers/kernel-disk.ts';
import { freePort, requireTool, run } from '../helpers/tools.ts';
import { checksums } from '../helpers/trees.ts';
import { bootVm, checksumsOf, GUEST_IO_ERRORS, stepsOf } from '../helpers/vm.ts';
import { vmFixture } from '../helpers/vm-fixture.ts';
import { HISTORY_STEPS, historyScript } from './guest-scripts.ts';

const BUCKET = 's3nbd-vm-history';

describe('backup history from the kernel NBD client: snapshots read in the VM while it writes', () => {
  before(() => {
    for (const tool of ['nbdfuse', 'e2fsck', 'losetup'] as const) requireTool(tool);
  });
  const vmTest = vmFixture('vm-history', BUCKET);

  it('s1 and s2, taken with the file system frozen, are clean and hold every file as taken', { timeout: 1_200_000 }, async () => {
    const { dir } = vmTest;
    const s3 = vmTest.s3();
    const env = vmTest.env();
    const store = `s3://${BUCKET}/backup1`;
    const cacheDir = join(dir, 'cache');
    const port = await freePort();
    const socket = join(dir, 'nbd.sock');
    const gw = await startGateway(['--store', store, '--s3-endpoint', s3.endpoint, '--size', '1G', '--listen', `127.0.0.1:${port}`, '--cache-dir', cacheDir], { socket, env });
    const started = Date.now();
    const vm = bootVm(vmTest.image(), { guestScript: historyScript(), port, workDir: dir, timeoutSeconds: 1000 });
    try {
      for (const name of ['s1', 's2']) {
        await vm.waitFor(new RegExp(`^S3NBD-SNAPSHOT ${name}$`, 'm'), 900_000);
        const made = await cli(['snapshot', 'create', '--store', store, '--s3-endpoint', s3.endpoint, '--cache-dir', cacheDir, name], env);
        assert.equal(made.code, 0, made.stderr);
        console.log(`# ${made.stdout.trim()}, ${((Date.now() - started) / 1000).toFixed(1)} s after boot`);
      }
      const { code, console: output } = await vm.exited;
      const context = `VM exited ${code} after ${((Date.now() - started) / 1000).toFixed(1)} s; console:\n${output}\n--- gateway log (tail):\n${gw.logs().slice(-4000)}`;
      assert.deepEqual(stepsOf(output), HISTORY_STEPS, context);
      assert.match(output, /^S3NBD-RESULT ok$/m, context);
      assert.equal(code, 0, context);
      assert.doesNotMatch(output, GUEST_IO_ERRORS, context);
      const s1 = checksumsOf(output, 'S3NBD-S1');
      const s2 = checksumsOf(output, 'S3NBD-S2');
      // 240 + 16 + 3 files; then less 100 notes, 6 photos and an archive, plus an archive.
      assert.equal(s1.size, 259, context);
      assert.equal(s2.size, 153, context);
      assert.match(output, /^S3NBD-INFO s1-files 259$/m, context);
      assert.match(output, /^S3NBD-INFO s2-files 153$/m, context);
      // nbd-client -l: the volume and both snapshots, with the gateway's descriptions.
      assert.match(output, /^@s1: snapshot s1 of s3nbd volume [0-9a-f-]{36}, taken \S+, 1 GiB, read-only$/m, context);
      assert.match(output, /^@s2: snapshot s2 of s3nbd volume /m, context);
      const written = Number(/^S3NBD-INFO writer-files (\d+)$/m.exec(output)?.[1]);
      assert.ok(written >= 1, `the guest wrote while it read the snapshots: ${written} files`);
      console.log(`# VM run: ${((Date.now() - started) / 1000).toFixed(1)} s; the guest wrote ${written} files of 2 MiB while reading s1 and s2`);

      // The host reads @s2 of the same gateway too: the same files.
      const disk = await attachKernelDisk(`nbd://127.0.0.1:${port}/@s2`, dir, { readOnly: true });
      const mnt = join(dir, 's2');
      try {
        const fsck = await run('e2fsck', ['-fn', disk.loop]);
        assert.equal(fsck.code, 0, fsck.stdout + fsck.stderr);
        await mount(disk.loop, mnt, ['-o', 'ro']);
        try {
          assert.deepEqual(await checksums(mnt), new Map([...s2].map(([path, hash]) => [path.slice(2), hash])));
        } finally {
          await unmount(mnt);
        }
      } finally {
        await disk.detach();
      }
    } finally {
      vm.kill();
      assert.equal(await gw.stop('SIGTERM'), 0, gw.logs().slice(-4000));
    }
  });
});
