// A QEMU VM (TCG, no KVM needed) booted from Debian's kernel and the initramfs that
// scripts/vm/build-initramfs.sh builds, running the Linux kernel's own NBD client as users
// do. The VM's only way out is QEMU's restricted user networking with one forward
// (10.0.2.100:10809 in the guest) to the gateway on 127.0.0.1 (a benchmark may choose
// unrestricted networking instead: BootOptions.network). The guest script and any
// files it needs are appended to the initramfs as a second archive; everything the guest
// prints on its serial console comes back here.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { REPO, requireTool, runOk, TOOL_ENV } from './tools.ts';

export interface VmImage {
  readonly kernel: string;
  readonly initrd: string;
}

/** Builds (or reuses the cached) kernel and initramfs. */
export async function vmImage(): Promise<VmImage> {
  for (const tool of ['qemu-system-x86_64', 'socat', 'timeout'] as const) requireTool(tool);
  const built = await runOk('bash', [join(REPO, 'scripts/vm/build-initramfs.sh')], { timeoutMs: 600_000 });
  const paths = Object.fromEntries(built.trim().split('\n').map((line) => line.split('=', 2) as [string, string]));
  assert.ok(paths.kernel && paths.initrd, built);
  return { kernel: paths.kernel, initrd: paths.initrd };
}

export interface VmRun {
  /** Everything printed on the serial console so far (without carriage returns). */
  console(): string;
  /** Resolves once the console matches; rejects if the VM exits first or after timeoutMs. */
  waitFor(pattern: RegExp, timeoutMs: number): Promise<RegExpMatchArray>;
  /** Pulls the plug. */
  kill(): void;
  /** The exit code (0 after /init's poweroff) and the whole console. */
  readonly exited: Promise<{ code: number | null; console: string }>;
}

export interface BootOptions {
  /** Run by /init with `sh -e`; it prints S3NBD-RESULT ok if the script exits 0. */
  readonly guestScript: string;
  /** More files for the guest's root directory. */
  readonly files?: ReadonlyMap<string, string>;
  /** The gateway's port on 127.0.0.1. */
  readonly port: number;
  /** Where to write this boot's initramfs. */
  readonly workDir: string;
  readonly timeoutSeconds: number;
  /** Guest memory (default 512 MiB); more for a guest script that keeps data in its tmpfs. */
  readonly memoryMiB?: number;
  /**
   * 'guestfwd' (default): restricted networking, the guest reaches the port as
   * 10.0.2.100:10809 through a socat that QEMU runs. 'host': unrestricted, the guest reaches
   * the host's 127.0.0.1:PORT as 10.0.2.2:PORT through slirp's own socket; no socat and its
   * pipe, which add about 40 ms to every small NBD write (a benchmark's choice).
   */
  readonly network?: 'guestfwd' | 'host';
}

export function bootVm(image: VmImage, options: BootOptions): VmRun {
  const files = new Map<string, Buffer>([['guest.sh', Buffer.from(options.guestScript)]]);
  for (const [name, text] of options.files ?? []) files.set(name, Buffer.from(text));
  const initrd = join(options.workDir, `initrd-${Date.now()}.img`);
  writeFileSync(initrd, Buffer.concat([readFileSync(image.initrd), gzipSync(newcArchive(files))]));

  const args = [
    '--kill-after=10', String(options.timeoutSeconds), 'qemu-system-x86_64',
    '-M', 'q35', '-cpu', 'max', '-smp', '2', '-m', String(options.memoryMiB ?? 512),
    '-nographic', '-no-reboot', '-serial', 'stdio', '-monitor', 'none',
    '-kernel', image.kernel, '-initrd', initrd, '-append', 'console=ttyS0 quiet panic=-1',
    '-netdev', options.network === 'host' ? 'user,id=n0' : `user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:10809-cmd:socat STDIO TCP:127.0.0.1:${options.port}`,
    '-device', 'virtio-net-pci,netdev=n0,romfile=',
  ];
  const child = spawn('timeout', args, { env: TOOL_ENV, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  let exitedCode: number | null | undefined;
  const listeners = new Set<() => void>();
  const onData = (d: Buffer): void => {
    output += d.toString().replaceAll('\r', '');
    if (process.env.S3NBD_VM_VERBOSE) process.stderr.write(d);
    for (const listener of listeners) listener();
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  // `timeout` passes SIGTERM on to QEMU, which stops at once (and SIGKILLs it 10 s later if not).
  const killOnExit = (): void => { child.kill('SIGTERM'); };
  process.on('exit', killOnExit);
  const exited = new Promise<{ code: number | null; console: string }>((resolve) => child.on('close', (code) => {
    process.off('exit', killOnExit);
    exitedCode = code;
    for (const listener of listeners) listener();
    resolve({ code, console: output });
  }));

  return {
    console: () => output,
    exited,
    kill: killOnExit,
    waitFor(pattern, timeoutMs) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          const match = output.match(pattern);
          if (match) done(() => resolve(match));
          else if (exitedCode !== undefined) done(() => reject(new Error(`the VM exited (${exitedCode}) before printing ${pattern}:\n${output}`)));
        };
        const timer = setTimeout(() => done(() => reject(new Error(`no ${pattern} on the VM console after ${timeoutMs} ms:\n${output}`))), timeoutMs);
        const done = (settle: () => void): void => {
          clearTimeout(timer);
          listeners.delete(check);
          settle();
        };
        listeners.add(check);
        check();
      });
    },
  };
}

/** The S3NBD-STEP markers the guest printed, in order. */
export function stepsOf(console: string): string[] {
  return [...console.matchAll(/^S3NBD-STEP (\S+)/gm)].map((m) => m[1]!);
}

/** `sha256  ./path` lines the guest printed with a prefix, as a map from path to hash. */
export function checksumsOf(console: string, prefix = 'S3NBD-SUM'): Map<string, string> {
  const sums = new Map<string, string>();
  for (const m of console.matchAll(new RegExp(`^${prefix} ([0-9a-f]{64})  (\\S+)$`, 'gm'))) sums.set(m[2]!, m[1]!);
  return sums;
}

/** Kernel messages that mean the file system or the block layer saw a failure. */
export const GUEST_IO_ERRORS = /I\/O error|EXT4-fs error|blk_update_request|Buffer I\/O|EXT4-fs warning/;

/** A newc cpio archive (what the kernel unpacks as an initramfs) of regular files at the root. */
function newcArchive(files: ReadonlyMap<string, Buffer>): Buffer {
  const parts: Buffer[] = [];
  const pad4 = (n: number): Buffer => Buffer.alloc((4 - (n % 4)) % 4);
  let ino = 1;
  const entry = (name: string, mode: number, data: Buffer): void => {
    const fields = [ino++, mode, 0, 0, 1, 0, data.length, 0, 0, 0, 0, name.length + 1, 0];
    const header = '070701' + fields.map((f) => f.toString(16).padStart(8, '0')).join('');
    const head = Buffer.from(`${header}${name}\0`, 'latin1');
    parts.push(head, pad4(head.length), data, pad4(data.length));
  };
  for (const [name, data] of files) entry(name, 0o100755, data);
  entry('TRAILER!!!', 0, Buffer.alloc(0));
  return Buffer.concat(parts);
}
