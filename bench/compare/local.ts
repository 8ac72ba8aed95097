// The local NBD path of bench/compare: s3nbd with `--store memory:` (no S3, no disk) against
// `nbdkit memory`, the workloads of bench/protocol.sh: 4 GiB devices, a region written once
// (untimed, so that reads never hit holes), then each workload time-based with fio's nbd
// engine, numjobs 1, queue depth 16, the two servers alternating. s3nbd's CPU and peak RSS
// are measured around each of its runs, the machine's CPU around every run.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { type Device, startNbdkitMemory, startS3nbd } from './contenders.ts';
import { type MachineUsage, watchUsage } from './usage.ts';
import { LOCAL_WORKLOADS, type LocalWorkload } from './workload-table.ts';
import { MiB, sequentialWrite, timedRun } from './workloads.ts';

export const LOCAL_DEVICE = 4 * 1024 * MiB;

export interface LocalSettings {
  /** The pre-filled region the workloads run over, bytes. */
  readonly region: number;
  readonly seconds: number;
  readonly ramp: number;
  /** s3nbd's arguments beyond the store, size and socket (its memory cache, as on S3). */
  readonly s3nbdArgs: readonly string[];
}

export interface LocalSample extends Partial<MachineUsage> { value: number; bytes: number; cpuSeconds?: number; peakRssMiB?: number }

/** Runs every local workload once per server, s3nbd first when `s3nbdFirst`. */
export async function runLocal(s: LocalSettings, dir: string, s3nbdFirst: boolean, record: (workload: LocalWorkload, name: string, sample: LocalSample) => void): Promise<void> {
  mkdirSync(dir, { recursive: true });
  const ours = await startS3nbd(['--store', 'memory:', '--size', String(LOCAL_DEVICE), ...s.s3nbdArgs], dir);
  const nbdkit = await startNbdkitMemory(join(dir, 'nbdkit.sock'), LOCAL_DEVICE).catch(async (err: unknown) => {
    await ours.stop();
    throw err;
  });
  try {
    const servers: { name: string; device: Device; pid?: number }[] = [
      { name: 's3nbd', device: ours.device, ...(ours.pid === undefined ? {} : { pid: ours.pid }) },
      { name: 'nbdkit memory', device: nbdkit.device },
    ];
    if (!s3nbdFirst) servers.reverse();
    // The fill: one sequential pass, not timed (as protocol.sh), with a flush at its end.
    for (const server of servers) await sequentialWrite(server.device, s.region);
    for (const [workload, w] of Object.entries(LOCAL_WORKLOADS) as [LocalWorkload, (typeof LOCAL_WORKLOADS)[LocalWorkload]][]) {
      for (const server of servers) {
        const usage = watchUsage(server.pid);
        const rate = await timedRun(server.device, w.rw, w.bs, s.region, s.seconds, s.ramp);
        record(workload, server.name, { ...rate, ...usage() });
      }
    }
  } finally {
    await nbdkit.stop();
    await ours.stop();
  }
}
