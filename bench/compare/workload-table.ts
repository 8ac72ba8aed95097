// The workloads of bench/compare, their units, and the limit each is compared with. main.ts
// writes this table into the results file, where report.ts and chart.py read it.

export const WORKLOADS = {
  'write+flush': 'MiB/s',
  'cold read': 'MiB/s',
  'warm read': 'MiB/s',
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
  '4K rand write': 'nbdkit memory',
  '4K rand read': 'nbdkit memory',
};
