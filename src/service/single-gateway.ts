// The GatewayView of `s3nbd serve --store` (one volume): the admin endpoint listens before the
// storage opens (like the NBD listener, so a refused address touches no storage), and until
// then shows the volume as opening: not ready, no status yet.

import { S3ObjectStore } from '../storage/objects/s3/s3-object-store.ts';
import type { ObjectStore } from '../storage/objects/object-store.ts';
import { VOLUME_KEY } from '../storage/volume/volume.ts';
import type { GatewayView, SkippedVolume, VolumeView } from './gateway-view.ts';
import { HttpError } from './admin-http.ts';
import { VolumeReadiness } from './readiness.ts';
import { SnapshotList, leaseState, volumeStatus, type VolumeStatusSource } from './volume-status.ts';

/** The volume's name in the admin endpoint and the metrics: its export name, "default" for the empty one. */
export function volumeLabel(exportName: string): string {
  return exportName === '' ? 'default' : exportName;
}

/** One GET of the small volume metadata object, one attempt, ended by `signal`. */
export async function probeStore(objects: ObjectStore, signal: AbortSignal): Promise<void> {
  const once = objects instanceof S3ObjectStore ? objects.withRetry({ maxAttempts: 1, signal, quiet: true }) : objects;
  await once.get(VOLUME_KEY);
}

/** A served volume as the admin endpoint sees it: live status and readiness. */
export function servedVolumeView(source: VolumeStatusSource & { stopping(): boolean }): VolumeView {
  const snapshots = new SnapshotList(source.storage);
  const readiness = new VolumeReadiness({
    lease: () => leaseState(source.storage),
    probe: (signal) => probeStore(source.storage.objects, signal),
    counters: source.counters,
    stopping: () => source.stopping(),
  });
  return {
    name: source.name,
    status: async () => volumeStatus(source, await snapshots.current()),
    readiness: () => readiness.check(),
  };
}

function openingView(name: string): VolumeView {
  return {
    name,
    status: () => Promise.reject(new HttpError(503, 'S3NBD_ADMIN_OPENING', `volume "${name}" is still being opened`, 'ask again in a moment')),
    readiness: () => Promise.resolve({ ready: false, reason: 'opening the volume' }),
  };
}

export class SingleVolumeGateway implements GatewayView {
  private view: VolumeView;

  constructor(name: string) {
    this.view = openingView(name);
  }

  /** The volume is open: serve its view. */
  opened(view: VolumeView): void {
    this.view = view;
  }

  volumes(): readonly VolumeView[] {
    return [this.view];
  }

  skipped(): readonly SkippedVolume[] {
    return [];
  }
}
