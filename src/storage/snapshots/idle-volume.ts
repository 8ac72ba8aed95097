// A volume that no gateway is serving, opened by the snapshot commands (`s3nbd snapshot
// create|delete`, `s3nbd gc`) to work on it directly. They take the writer lease, so that no
// gateway writes or collects meanwhile (a gateway that holds it refuses them, naming itself:
// S3NBD_VOLUME_IN_USE), then count every snapshot's objects and list the volume's, in that
// order: a snapshot made before the lease was ours is in the bucket by then, and none can be
// made after, as making one needs the lease.
//
// Killed at any point, such a command leaves its lease to expire (a lifetime, 30 s by default)
// and at most garbage behind (registry.ts).

import type { Logger } from 'pino';
import { Errors, UserError } from '../../errors.ts';
import { ObjectExtents } from '../extents/extent-objects.ts';
import { RetainedObjects } from '../extents/retained-objects.ts';
import { FileObjectStore } from '../objects/file-object-store.ts';
import { MemoryObjectStore } from '../objects/memory-object-store.ts';
import type { ObjectStore } from '../objects/object-store.ts';
import { type S3Options, openObjectStore } from '../objects/store-url.ts';
import { explain } from '../stack.ts';
import { Lease } from '../volume/lease.ts';
import { type Volume, extentCountOf, openVolume } from '../volume/volume.ts';
import { openCloneBase } from './clone.ts';
import { SnapshotRegistry } from './registry.ts';

export interface IdleVolumeConfig {
  readonly store: string;
  readonly s3?: S3Options;
  readonly log: Logger;
  /** Names the command in the lease, for the error a gateway refused meanwhile prints. */
  readonly command: string;
  readonly leaseTtlMs: number;
  /** Collect garbage (delete, gc): only once every snapshot is counted. */
  readonly collect: boolean;
  /** Called if a gateway takes the volume over (--take-over) while the command runs. */
  readonly onLost: (by: string) => void;
  /** Wraps the store (test hooks). */
  readonly wrapStore?: (objects: ObjectStore) => ObjectStore;
  /** Told before waiting `ms` for a dead holder's last requests (collect only, on S3). */
  readonly onWait?: (ms: number) => void;
}

export interface IdleVolume {
  readonly objects: ObjectStore;
  readonly volume: Volume;
  readonly extents: ObjectExtents;
  readonly snapshots: SnapshotRegistry;
  readonly lease: Lease;
  /** True when the previous writer stopped without releasing the lease (killed, crashed). */
  readonly previousCrashed: boolean;
  /** True when that writer's uploads may still land (S3): tombstones are kept until a later start. */
  readonly lateUploads: boolean;
  /** Stops collecting, releases the lease, closes the store. */
  close(): Promise<void>;
}

/** Reads the volume, takes its lease, counts the snapshots' objects and lists the extents. */
export async function openIdleVolume(config: IdleVolumeConfig): Promise<IdleVolume> {
  const opened = openObjectStore(config.store, config.s3 ?? {}, config.log);
  // Stores whose writes cannot land after their writer died: a killed process's calls are over.
  const noLateWrites = opened instanceof FileObjectStore || opened instanceof MemoryObjectStore;
  const objects = config.wrapStore?.(opened) ?? opened;
  const closing: Array<() => Promise<unknown>> = [() => objects.close()];
  const closeAll = async (): Promise<void> => {
    for (const close of closing.reverse()) await close().catch(() => undefined);
  };
  try {
    const { volume } = await openVolume(objects, { mode: 'open', writer: true });
    let lease: Lease;
    try {
      lease = await Lease.acquire(objects, {
        owner: `s3nbd ${config.command}`, ttlMs: config.leaseTtlMs, takeOver: false, log: config.log, onLost: config.onLost, onlyDeletes: config.collect,
      });
    } catch (err) {
      if (err instanceof UserError && err.code === 'S3NBD_VOLUME_IN_USE') throw Errors.volumeBusyForSnapshots(err.message);
      throw err;
    }
    closing.push(() => lease.release());
    // A dead holder's manifest PUT may still land on S3 until lease.lateUntil (lease.ts): what
    // it names must not be collected, so the manifests are read once it cannot any more.
    const wait = lease.lateUntil - Date.now();
    if (config.collect && !noLateWrites && wait > 0) {
      config.onWait?.(wait);
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
    // A clone's origin objects join its census (kept for good), and its snapshots name them.
    const clone = await openCloneBase(volume, config.s3 ?? {}, config.log);
    closing.push(() => clone.close());
    const snapshots = new SnapshotRegistry(objects, volume, clone.descriptors);
    const retained = new RetainedObjects();
    await snapshots.retainAll(retained);
    // Every object is known after the listing unless an earlier writer crashed with uploads
    // in flight to a server that may still land them (S3): then zeroed extents keep their
    // tombstones, which the next gateway deletes.
    const previousCrashed = lease.previousHolder !== undefined && !lease.previousHolder.released;
    // The same mark covers a dead gateway's extent uploads: after it, the listing sees them all.
    const lateUploads = !noLateWrites && lease.lateUntil > Date.now();
    const extents = await ObjectExtents.open(objects, {
      extentSize: volume.extentSize, extentCount: extentCountOf(volume), volumeId: volume.id, retained, collect: false, complete: !lateUploads,
      sources: clone.sources, base: clone.base,
    });
    closing.push(() => extents.close());
    if (config.collect) extents.startCollecting();
    return {
      objects, volume, extents, snapshots, lease, previousCrashed, lateUploads,
      close: closeAll,
    };
  } catch (err) {
    await closeAll();
    throw await explain(err, config, opened, false);
  }
}
