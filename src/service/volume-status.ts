// One served volume's live status (VolumeStatus, what /api/status and the metrics show): the
// storage stack's own state read now, and the counters its telemetry keeps. The snapshot list
// costs a LIST of the store, so it is read at most every SNAPSHOT_REFRESH_MS, in the background.

import type { Storage } from '../storage/stack.ts';
import type { VolumeStatus } from './gateway-view.ts';
import type { VolumeCounters } from './volume-counters.ts';

export const SNAPSHOT_REFRESH_MS = 30_000;

export interface VolumeStatusSource {
  readonly name: string;
  readonly storage: Storage;
  readonly counters: VolumeCounters;
  connections(): number;
}

export function leaseState(storage: Pick<Storage, 'lease'>): VolumeStatus['lease'] {
  if (!storage.lease) return 'none';
  return storage.lease.fenced ? 'lost' : 'held';
}

/** The volume's snapshots, refreshed in the background; the last list read until then. */
export class SnapshotList {
  private list: VolumeStatus['snapshots'] = [];
  private readAt = -Infinity;
  private reading: Promise<void> | undefined;
  private readonly storage: Pick<Storage, 'snapshots'>;
  private readonly refreshMs: number;

  constructor(storage: Pick<Storage, 'snapshots'>, refreshMs = SNAPSHOT_REFRESH_MS) {
    this.storage = storage;
    this.refreshMs = refreshMs;
  }

  /** The list as last read; starts a refresh when it is older than refreshMs. The first call waits for it. */
  async current(): Promise<VolumeStatus['snapshots']> {
    const first = this.readAt === -Infinity;
    if (performance.now() - this.readAt >= this.refreshMs && !this.reading) {
      this.reading = this.storage.snapshots.loadAll().then((manifests) => {
        this.list = manifests.map((m) => ({ name: m.name, createdAt: m.createdAt })).sort((a, b) => a.createdAt.localeCompare(b.createdAt));
      }, () => undefined).finally(() => {
        this.readAt = performance.now();
        this.reading = undefined;
      });
    }
    if (first) await this.reading;
    return this.list;
  }
}

export function volumeStatus(source: VolumeStatusSource, snapshots: VolumeStatus['snapshots']): VolumeStatus {
  const { storage, counters } = source;
  const { volume } = storage;
  const cache = storage.cache?.status();
  return {
    name: source.name,
    volumeId: volume.id,
    store: storage.objects.description,
    size: volume.size,
    extentSize: volume.extentSize,
    readOnly: storage.device.readOnly,
    lease: leaseState(storage),
    connections: source.connections(),
    storedExtents: storage.extents.allocatedCount,
    ...cache ? {
      cache: {
        dirtyBytes: cache.dirtyBytes, dirtyExtents: cache.dirtyExtents, oldestDirtySeconds: cache.oldestDirtySeconds,
        uploadsInFlight: cache.uploadsInFlight, uploadedExtents: cache.uploadedExtents, uploadedBytes: counters.uploadedBytes,
        uploadFailures: cache.uploadFailures, journalBytes: cache.journalBytes, cachedExtents: cache.cachedExtents, cacheSlots: cache.cacheSlots,
      },
    } : {},
    reads: { ...counters.reads },
    s3: { ...counters.s3 },
    snapshots,
  };
}
