// The kernel's ext4 on an s3nbd export (nbdfuse + loop): mkfs (which trims the whole device),
// mount, copy a tree, umount, e2fsck clean; then a new gateway process on the same store
// serves the same file system with every file intact.

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { after, describe, it } from 'node:test';
import { attachKernelDisk, type KernelDisk, mount, unmount } from '../helpers/kernel-disk.ts';
import { startGateway, tempDir } from '../helpers/gateway.ts';
import { requireTool, run, runOk } from '../helpers/tools.ts';

/** A tree of mixed file sizes: many small files, a few large ones, nested dirs, a symlink. */
function makeTree(root: string): void {
  for (let d = 0; d < 8; d++) {
    const dir = join(root, `dir${d}`, `sub${d % 3}`);
    mkdirSync(dir, { recursive: true });
    for (let f = 0; f < 40; f++) writeFileSync(join(dir, `small${f}.bin`), randomBytes((f * 997 + d * 131) % 70_000));
  }
  for (let f = 0; f < 4; f++) writeFileSync(join(root, `large${f}.bin`), randomBytes((3 + 5 * f) * 1024 * 1024 + 123));
  writeFileSync(join(root, 'empty'), '');
  symlinkSync('large0.bin', join(root, 'link'));
}

/** path -> sha256 of every regular file under root. */
function checksums(root: string): Map<string, string> {
  const sums = new Map<string, string>();
  for (const entry of readdirSync(root, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const path = join(entry.parentPath, entry.name);
    if (relative(root, path).startsWith('lost+found')) continue;
    sums.set(relative(root, path), createHash('sha256').update(readFileSync(path)).digest('hex'));
  }
  return sums;
}

describe('ext4 on s3nbd through nbdfuse and a loop device', () => {
  const dir = tempDir('ext4');
  const mnt = join(dir.path, 'mnt');
  let disk: KernelDisk | undefined;
  after(async () => {
    await run('umount', [mnt]);
    await disk?.detach();
    dir.remove();
  });

  it('survives mkfs, a copy, e2fsck and a restart of the gateway with every file intact', async () => {
    for (const tool of ['nbdfuse', 'losetup', 'mkfs.ext4', 'e2fsck', 'fusermount3'] as const) requireTool(tool);
    const tree = join(dir.path, 'tree');
    makeTree(tree);
    const want = checksums(tree);
    const store = join(dir.path, 'store');
    const socket = join(dir.path, 'sock');

    const first = await startGateway(['--store', store, '--size', '2G'], { socket });
    disk = await attachKernelDisk(first.uri, dir.path);
    const started = Date.now();
    await runOk('mkfs.ext4', ['-F', '-q', disk.loop]);
    const mkfsMs = Date.now() - started;
    await mount(disk.loop, mnt);
    await runOk('cp', ['-a', `${tree}/.`, mnt]);
    await runOk('sync', []);
    await unmount(mnt);
    const fsck = await run('e2fsck', ['-fn', disk.loop]);
    assert.equal(fsck.code, 0, fsck.stdout + fsck.stderr);
    await disk.detach();
    disk = undefined;
    assert.equal(await first.stop('SIGTERM'), 0);
    assert.ok(mkfsMs < 60_000, `mkfs took ${mkfsMs} ms`);

    const second = await startGateway(['--store', store], { socket });
    disk = await attachKernelDisk(second.uri, dir.path);
    const fsck2 = await run('e2fsck', ['-fn', disk.loop]);
    assert.equal(fsck2.code, 0, fsck2.stdout + fsck2.stderr);
    await mount(disk.loop, mnt, ['-o', 'ro']);
    assert.deepEqual(checksums(mnt), want);
    assert.equal(readdirSync(mnt).includes('link'), true);
    await unmount(mnt);
    await disk.detach();
    disk = undefined;
    assert.equal(await second.stop('SIGTERM'), 0);
  });
});
