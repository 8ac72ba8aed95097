// A real kernel block device on an NBD export without the nbd module: nbdfuse exposes the
// export as a file (4 connections, multi-conn), and a loop device with direct I/O turns it
// into a block device, so the kernel's ext4 talks to the server with no page cache between.

import { spawn } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { TOOL_ENV, run, runOk } from './tools.ts';

export interface KernelDisk {
  readonly loop: string;
  /** Unmounts anything still mounted, detaches the loop device and the FUSE mount. */
  detach(): Promise<void>;
}

let attached = 0;

/**
 * readOnly: nbdfuse -r and losetup -r (a snapshot's export is read-only, and the kernel
 * must not try to write to it: ext4 then refuses to replay its journal).
 */
export async function attachKernelDisk(uri: string, workDir: string, options: { readOnly?: boolean } = {}): Promise<KernelDisk> {
  const fuseDir = join(workDir, `fuse-${Date.now()}-${++attached}`);
  mkdirSync(fuseDir, { recursive: true });
  const image = join(fuseDir, 'disk.img');
  // Detached with no pipes to us: nbdfuse runs until its mount is unmounted.
  const ro = options.readOnly ? ['-r'] : [];
  spawn('nbdfuse', [...ro, image, uri], { detached: true, stdio: 'ignore', env: TOOL_ENV }).unref();
  const deadline = Date.now() + 15_000;
  while (!existsSync(image)) {
    if (Date.now() > deadline) throw new Error('nbdfuse did not expose the disk image');
    await new Promise((r) => setTimeout(r, 50));
  }
  const loop = (await runOk('losetup', [...ro, '--direct-io=on', '--show', '-f', image])).trim();
  return {
    loop,
    async detach() {
      await run('losetup', ['-d', loop]);
      for (let i = 0; i < 50; i++) {
        if ((await run('fusermount3', ['-u', fuseDir])).code === 0) return;
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error(`could not unmount ${fuseDir}`);
    },
  };
}

export async function mount(device: string, dir: string, options: string[] = []): Promise<void> {
  mkdirSync(dir, { recursive: true });
  await runOk('mount', [...options, device, dir]);
}

export async function unmount(dir: string): Promise<void> {
  await runOk('umount', [dir]);
}
