// What one phase of bench/compare used, from /proc: the whole machine's CPU time (every
// process: the server, the client driving it, MinIO) and, for a server process we started,
// its own CPU time (user + system, every thread) and its peak resident set. The high-water
// mark is reset before the phase (`5` written to /proc/PID/clear_refs resets VmHWM to the
// current RSS), so the peak is this phase's, not that of whatever ran before it in the same
// process. The machine's share says whether a phase was bound by the CPU: on a machine kept
// busy, two paths' rates go as the inverse of the machine CPU each needs per byte.

import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';

export interface Usage {
  /** user + system CPU seconds of the process during the phase. */
  readonly cpuSeconds: number;
  /** VmHWM after the phase, MiB. */
  readonly peakRssMiB: number;
}

export interface MachineUsage {
  /** CPU seconds the whole machine was busy during the phase (all cores, every process). */
  readonly machineCpuSeconds: number;
  /** Their share of all cores' time in the phase, 0 to 1. */
  readonly machineBusy: number;
  /** The S3 server's (MinIO's) CPU seconds in the phase, when its process is known. */
  readonly storeCpuSeconds?: number;
}

/** The S3 server's process, whose CPU every phase measures from then on (setStorePid()). */
let storePid: number | undefined;

/** Tells every watch started from now on to measure this process (MinIO) too. */
export function setStorePid(pid: number | undefined): void {
  storePid = pid;
}

const TICKS_PER_SECOND = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());

/** utime + stime of /proc/PID/stat, in clock ticks (fields 14 and 15; the name in field 2 may hold spaces). */
function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state), so field N is fields[N - 3].
  return Number(fields[11]) + Number(fields[12]);
}

function peakRssKiB(pid: number): number {
  const match = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!match) throw new Error(`no VmHWM in /proc/${pid}/status`);
  return Number(match[1]);
}

/** The first line of /proc/stat: ticks busy (user, nice, system, irq, softirq, steal) and in all. */
function machineTicks(): { busy: number; total: number } {
  const ticks = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.split(/\s+/).slice(1, 9).map(Number);
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = ticks;
  const busy = user + nice + system + irq + softirq + steal;
  return { busy, total: busy + idle + iowait };
}

/** Starts watching the machine; the function returned reads what it used since. */
export function watchMachine(): () => MachineUsage {
  const start = machineTicks();
  const store = storePid;
  const storeStart = store === undefined ? 0 : cpuTicks(store);
  return () => {
    const end = machineTicks();
    const busy = end.busy - start.busy;
    return {
      machineCpuSeconds: busy / TICKS_PER_SECOND, machineBusy: end.total > start.total ? busy / (end.total - start.total) : 0,
      ...(store === undefined ? {} : { storeCpuSeconds: (cpuTicks(store) - storeStart) / TICKS_PER_SECOND }),
    };
  };
}

/**
 * Starts watching the machine and process `pid` (none: a peer run by a script, nbdkit); the
 * function returned reads what they used since. Read it before the process stops.
 */
export function watchUsage(pid: number): () => MachineUsage & Usage;
export function watchUsage(pid: number | undefined): () => MachineUsage & Partial<Usage>;
export function watchUsage(pid: number | undefined): () => MachineUsage & Partial<Usage> {
  const machine = watchMachine();
  if (pid === undefined) return machine;
  writeFileSync(`/proc/${pid}/clear_refs`, '5');
  const start = cpuTicks(pid);
  return () => ({ ...machine(), cpuSeconds: (cpuTicks(pid) - start) / TICKS_PER_SECOND, peakRssMiB: peakRssKiB(pid) / 1024 });
}
