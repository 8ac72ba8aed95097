// Samples the resident set size of a process (VmRSS in /proc/PID/status), for tests that hold
// a real gateway to its memory bound.

import { readFileSync } from 'node:fs';

export interface RssSampler {
  /** The largest RSS seen so far, in bytes (sampled once more now). */
  peak(): number;
  /** The RSS now, in bytes. */
  now(): number;
  stop(): void;
}

export function rssOf(pid: number): number {
  const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  if (kb === undefined) throw new Error(`no VmRSS for process ${pid}`);
  return Number(kb) * 1024;
}

export function sampleRss(pid: number, intervalMs = 50): RssSampler {
  let peak = rssOf(pid);
  const sample = (): number => {
    try {
      const rss = rssOf(pid);
      peak = Math.max(peak, rss);
      return rss;
    } catch {
      return 0; // the process is gone
    }
  };
  const timer = setInterval(sample, intervalMs);
  return {
    peak: () => { sample(); return peak; },
    now: sample,
    stop: () => clearInterval(timer),
  };
}

export const MiB = 1024 * 1024;
export const mib = (bytes: number): string => `${(bytes / MiB).toFixed(0)} MiB`;
