// What the admin endpoint sees of a served volume (servedVolumeView), and of the gateway while
// its volumes open: the admin endpoint listens before the storage opens (like the NBD listener,
// so a refused address touches no storage), and until then shows the volume as opening: not
// ready, no status yet (OpeningGateway).

import { S3ObjectStore } from '../storage/objects/s3/s3-object-store.ts';
import type { ObjectStore } from '../storage/objects/object-store.ts';
import { VOLUME_KEY } from '../storage/volume/volume.ts';
import type { GatewayView, SkippedVolume, VolumeAdmin, VolumeView } from './gateway-view.ts';
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

/**
 * The admin endpoint's view of a gateway from before its volumes are open: until opened(), the
 * volume (or, with --volumes, the prefix) shows as opening, not ready and without a status;
 * then everything is the opened gateway's.
 */
export class OpeningGateway implements GatewayView {
  private view: GatewayView;

  constructor(name: string) {
    const opening = openingView(name);
    this.view = { volumes: () => [opening], skipped: () => [] };
  }

  opened(view: GatewayView): void {
    this.view = view;
  }

  get admin(): VolumeAdmin | undefined {
    return this.view.admin;
  }

  volumes(): readonly VolumeView[] {
    return this.view.volumes();
  }

  skipped(): readonly SkippedVolume[] {
    return this.view.skipped();
  }
}
