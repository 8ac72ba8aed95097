// What a server process used during one phase of bench/compare, from /proc: its CPU time
// (user + system, every thread) and its peak resident set. The high-water mark is reset
// before the phase (`5` written to /proc/PID/clear_refs resets VmHWM to the current RSS), so
// the peak is this phase's, not that of whatever ran before it in the same process.

import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';

export interface Usage {
  /** user + system CPU seconds of the process during the phase. */
  readonly cpuSeconds: number;
  /** VmHWM after the phase, MiB. */
  readonly peakRssMiB: number;
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

/**
 * Starts watching process `pid` (nothing to watch without one: a peer run by a script);
 * the function returned reads what it used since. Read it before the process stops.
 */
export function watchUsage(pid: number | undefined): (() => Usage) | undefined {
  if (pid === undefined) return undefined;
  writeFileSync(`/proc/${pid}/clear_refs`, '5');
  const start = cpuTicks(pid);
  return () => ({ cpuSeconds: (cpuTicks(pid) - start) / TICKS_PER_SECOND, peakRssMiB: peakRssKiB(pid) / 1024 });
}
