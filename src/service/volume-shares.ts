// How `serve --volumes` divides the gateway's budgets among its volumes. --memory-cache,
// --cache-size, --max-dirty and --upload-concurrency are the gateway's totals; the gateway has
// --max-volumes slots, and every volume gets one slot's share of each total, whichever number
// of volumes is open:
//
//   share = floor(total / max-volumes)        (upload concurrency: at least 1)
//
// A fixed share is what a user can predict (the share of a volume does not depend on what was
// created or deleted since it opened), and it keeps the totals true at any time without
// changing a running cache's limits, which the layers do not allow (the disk cache's slots are
// laid out at open): at most --max-volumes volumes are served, so their shares add up to at
// most the totals. The price is that budget of empty slots is unused: give --max-volumes the
// number of volumes you mean to serve. Only --upload-concurrency can pass its total, when
// --max-volumes is larger (each volume uploads at least one extent at a time).

export const DEFAULT_MAX_VOLUMES = 8;
export const MAX_MAX_VOLUMES = 1024;

export interface VolumeBudgets {
  readonly memoryCacheBytes: number;
  readonly cacheBytes: number;
  readonly maxDirtyBytes: number;
  readonly uploadConcurrency: number;
}

/** One volume's share of the gateway's totals. */
export function shareOf(totals: VolumeBudgets, maxVolumes: number): VolumeBudgets {
  if (!Number.isSafeInteger(maxVolumes) || maxVolumes < 1) throw new Error(`maxVolumes must be a positive integer, not ${maxVolumes}`);
  const part = (total: number): number => Math.floor(total / maxVolumes);
  return {
    memoryCacheBytes: part(totals.memoryCacheBytes),
    cacheBytes: part(totals.cacheBytes),
    maxDirtyBytes: part(totals.maxDirtyBytes),
    uploadConcurrency: Math.max(1, part(totals.uploadConcurrency)),
  };
}
