// The workloads of bench/compare, each against one running contender. Throughput comes from
// wall time measured here (fio's own numbers would leave out its final flush); random I/O
// from fio's IOPS. NBD exports are driven by fio's nbd engine and nbdcopy; kernel block
// devices by fio's libaio engine with O_DIRECT and dd. File-system workloads need a block
// device: an NBD export gets one through nbdfuse and a loop device (test/helpers/kernel-disk.ts).

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { attachKernelDisk, mount, unmount } from '../../test/helpers/kernel-disk.ts';
import { runOk } from '../../test/helpers/tools.ts';
import type { Device } from './contenders.ts';

export const MiB = 2 ** 20;

/** fio's target options for a device. */
function fioTarget(device: Device): string[] {
  return 'nbd' in device
    ? ['--ioengine=nbd', `--uri=${device.nbd}`]
    : ['--ioengine=libaio', '--direct=1', `--filename=${device.block}`];
}

/** One side (read or write) of a fio job: IOPS, bytes per second and bytes moved (after any ramp). */
export interface FioSide { iops: number; bwBytes: number; ioBytes: number }

async function fio(device: Device, args: readonly string[]): Promise<{ seconds: number; read: FioSide; write: FioSide }> {
  const started = performance.now();
  const out = await runOk('fio', ['--name=bench', '--output-format=json', '--iodepth=16', '--numjobs=1', ...fioTarget(device), ...args], { timeoutMs: 3_600_000 });
  const seconds = (performance.now() - started) / 1000;
  type Side = { iops: number; bw_bytes: number; io_bytes: number };
  const job = (JSON.parse(out.slice(out.indexOf('{'))) as { jobs: { error?: number; read: Side; write: Side }[] }).jobs[0]!;
  // fio can exit 0 with a job error (as bench/protocol.sh checks too).
  if (job.error) throw new Error(`fio ${args.join(' ')}: job error ${job.error}`);
  const side = (s: Side): FioSide => ({ iops: s.iops, bwBytes: s.bw_bytes, ioBytes: s.io_bytes });
  return { seconds, read: side(job.read), write: side(job.write) };
}

/** Sequential 1 MiB writes of `bytes`, then a flush (fsync): seconds until the flush returns. */
export async function sequentialWrite(device: Device, bytes: number): Promise<number> {
  return (await fio(device, ['--rw=write', '--bs=1M', `--size=${bytes}`, '--end_fsync=1', '--refill_buffers'])).seconds;
}

/** Sequential 1 MiB reads of `bytes`: seconds. */
export async function sequentialRead(device: Device, bytes: number): Promise<number> {
  return (await fio(device, ['--rw=read', '--bs=1M', `--size=${bytes}`])).seconds;
}

/** What a timed run did: IOPS (random) or MiB/s (sequential), and the bytes it moved. */
export interface Rate { value: number; bytes: number }

/** 4 KiB random writes or reads at queue depth 16 over the first `bytes`, for `seconds`: IOPS. */
export async function random4k(device: Device, kind: 'randwrite' | 'randread', bytes: number, seconds: number): Promise<Rate> {
  const r = await fio(device, [`--rw=${kind}`, '--bs=4k', `--size=${bytes}`, '--time_based', `--runtime=${seconds}`, '--randrepeat=0', '--refill_buffers']);
  const side = kind === 'randwrite' ? r.write : r.read;
  return { value: side.iops, bytes: side.ioBytes };
}

/**
 * One workload of bench/protocol.sh: `rw` in blocks of `bs` over the first `bytes`, queue
 * depth 16, `seconds` after `ramp` seconds not counted. MiB/s for sequential runs, IOPS for
 * random ones (as protocol.sh reports them). `bytes` of the result counts the ramp too, at
 * the measured rate, since whoever samples the server's CPU around the run sees it too.
 */
export async function timedRun(device: Device, rw: 'write' | 'read' | 'randwrite' | 'randread', bs: string, bytes: number, seconds: number, ramp: number): Promise<Rate> {
  const r = await fio(device, [`--rw=${rw}`, `--bs=${bs}`, `--size=${bytes}`, '--time_based', `--runtime=${seconds}`, `--ramp_time=${ramp}`]);
  const side = rw.endsWith('write') ? r.write : r.read;
  return { value: rw.startsWith('rand') ? side.iops : side.bwBytes / MiB, bytes: side.bwBytes * (seconds + ramp) };
}

/** Makes the device write back what it holds dirty (one 4 KiB write and a FLUSH), untimed. */
export async function flushDevice(device: Device): Promise<void> {
  await fio(device, ['--rw=write', '--bs=4k', '--size=4k', '--end_fsync=1']);
}

/** Every byte of the device read once (nbdcopy skips what the server reports as holes): seconds. */
export async function readWholeDevice(device: Device): Promise<number> {
  const started = performance.now();
  if ('nbd' in device) await runOk('nbdcopy', [device.nbd, 'null:'], { timeoutMs: 3_600_000 });
  else await runOk('dd', [`if=${device.block}`, 'of=/dev/null', 'bs=1M', 'iflag=direct', 'status=none'], { timeoutMs: 3_600_000 });
  return (performance.now() - started) / 1000;
}

/** Runs `work` with the device as a kernel block device. */
async function asBlockDevice<T>(device: Device, workDir: string, work: (block: string) => Promise<T>): Promise<T> {
  if ('block' in device) return work(device.block);
  const disk = await attachKernelDisk(device.nbd, workDir);
  try {
    return await work(disk.loop);
  } finally {
    await disk.detach();
  }
}

/** mkfs.ext4 (with its whole-device discard, as by default): seconds. */
export async function makeFileSystem(device: Device, workDir: string): Promise<number> {
  return asBlockDevice(device, workDir, async (block) => {
    const started = performance.now();
    await runOk('mkfs.ext4', ['-q', '-F', block], { timeoutMs: 3_600_000 });
    return (performance.now() - started) / 1000;
  });
}

/** mkfs.ext4, mount, copy `tree` in, sync, umount. Returns when the copy started (performance.now()). */
export async function copyTreeOntoExt4(device: Device, workDir: string, tree: string): Promise<number> {
  return asBlockDevice(device, workDir, async (block) => {
    await runOk('mkfs.ext4', ['-q', '-F', block], { timeoutMs: 3_600_000 });
    const mountPoint = join(workDir, 'mnt');
    mkdirSync(mountPoint, { recursive: true });
    await mount(block, mountPoint);
    try {
      const started = performance.now();
      await runOk('cp', ['-a', tree, mountPoint], { timeoutMs: 3_600_000 });
      await runOk('sync', ['-f', mountPoint], { timeoutMs: 3_600_000 });
      return started;
    } finally {
      await unmount(mountPoint);
    }
  });
}

/** A tree of `small` files of 1 to 16 KiB in 40 directories plus `large` files of 32 MiB. */
export async function makeTree(dir: string, small: number, large: number): Promise<number> {
  const script = `
set -e
cd "$1"
for d in $(seq 0 39); do mkdir -p small/$d; done
i=0
while [ $i -lt $2 ]; do
  head -c $(( 1024 + (i * 7919) % 15360 )) /dev/urandom > small/$((i % 40))/file-$i
  i=$((i + 1))
done
mkdir -p large
for j in $(seq 1 $3); do head -c $((32 * 1048576)) /dev/urandom > large/file-$j; done
du -sb . | cut -f1
`;
  mkdirSync(dir, { recursive: true });
  return Number((await runOk('bash', ['-c', script, 'tree', dir, String(small), String(large)], { timeoutMs: 600_000 })).trim());
}
