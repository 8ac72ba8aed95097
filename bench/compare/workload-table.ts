// The workloads of bench/compare, their units, the limit each is compared with, and the
// targets of issue 19. main.ts writes these tables into the results file, where report.ts
// and chart.py read them.

/** Workloads every contender runs against S3. */
export const WORKLOADS = {
  'write+flush': 'MiB/s',
  'cold read': 'MiB/s',
  'warm read': 'MiB/s',
  // 4 KiB random writes over a region that stays below half of s3nbd's --max-dirty (main.ts HOT).
  '4K rand write hot': 'IOPS',
  // The same over the whole data (as large as --max-dirty).
  '4K rand write': 'IOPS',
  '4K rand read': 'IOPS',
  'ext4 copy+sync': 's',
  'mkfs.ext4 100G': 's',
  'restore': 's',
} as const;
export type Workload = keyof typeof WORKLOADS;

export const LIMITS: Partial<Record<Workload, string>> = {
  'write+flush': 'raw S3',
  'cold read': 'raw S3',
  'warm read': 'nbdkit memory',
  '4K rand write hot': 'nbdkit memory',
  '4K rand write': 'nbdkit memory',
  '4K rand read': 'nbdkit memory',
};

/**
 * The local NBD path: s3nbd with `--store memory:` against `nbdkit memory`, the workloads of
 * bench/protocol.sh (fio's nbd engine, queue depth 16, time-based, over a pre-filled region).
 */
export const LOCAL_WORKLOADS = {
  'local seq write 1M': { rw: 'write', bs: '1M', unit: 'MiB/s' },
  'local seq read 1M': { rw: 'read', bs: '1M', unit: 'MiB/s' },
  'local rand write 4k': { rw: 'randwrite', bs: '4k', unit: 'IOPS' },
  'local rand read 4k': { rw: 'randread', bs: '4k', unit: 'IOPS' },
} as const;
export type LocalWorkload = keyof typeof LOCAL_WORKLOADS;

/** A target of issue 19: s3nbd's median over the limit's, at least `ratio` (none: measured and explained). */
export interface Target { readonly workload: string; readonly limit: string; readonly ratio?: number }
export const TARGETS: readonly Target[] = [
  ...Object.keys(LOCAL_WORKLOADS).map((workload) => ({ workload, limit: 'nbdkit memory', ratio: 0.9 })),
  { workload: 'write+flush', limit: 'raw S3', ratio: 0.9 },
  { workload: 'cold read', limit: 'raw S3', ratio: 0.9 },
  { workload: 'warm read', limit: 'nbdkit memory', ratio: 0.8 },
  { workload: '4K rand write hot', limit: 'nbdkit memory', ratio: 0.3 },
  { workload: '4K rand write', limit: 'nbdkit memory' },
];

/** Where s3nbd must lead the best peer by at least this much (the design's strengths); elsewhere by any margin. */
export const PEER_LEAD: Partial<Record<Workload, number>> = {
  'write+flush': 1.5,
  '4K rand write hot': 1.5,
  '4K rand write': 1.5,
  '4K rand read': 1.5,
  'mkfs.ext4 100G': 1.5,
  'restore': 1.5,
};

/** Peak RSS target: at most --memory-cache plus this. */
export const RSS_HEADROOM_MIB = 150;
