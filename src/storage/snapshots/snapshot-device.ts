// A snapshot as a read-only block device: the extent layer over the manifest's references
// (ObjectExtents.ofSnapshot: no listing, nothing ever written), a small memory cache, and the
// same byte-addressed device the volume is served through.

import { Errors } from '../../errors.ts';
import { ExtentDevice } from '../extent-device.ts';
import { DirectExtentStore } from '../extents/direct-extent-store.ts';
import { type ExtentSource, ObjectExtents } from '../extents/extent-objects.ts';
import type { ExtentCodec } from '../format/extent-codec.ts';
import type { ObjectStore } from '../objects/object-store.ts';
import { type Volume, extentCountOf } from '../volume/volume.ts';
import type { Manifest } from './manifest.ts';

export interface SnapshotDevice {
  readonly manifest: Manifest;
  readonly extents: ObjectExtents;
  readonly device: ExtentDevice;
}

/** `sources`: a clone's origins (Storage.clone.sources), which its snapshots' references of source ≥ 1 name. */
export function openSnapshotDevice(objects: ObjectStore, volume: Volume, manifest: Manifest, memoryCacheBytes: number,
  codec?: ExtentCodec, sources: readonly ExtentSource[] = []): SnapshotDevice {
  if (manifest.sources.length > sources.length) {
    throw Errors.badSnapshot(objects.description, manifest.name, `it names objects of ${manifest.sources.length} other volumes, of which ${sources.length} are open (is the volume still a clone of the same origin?)`);
  }
  const extents = ObjectExtents.ofSnapshot(objects, {
    extentSize: volume.extentSize, extentCount: extentCountOf(volume), volumeId: volume.id, sources, ...codec ? { codec } : {},
  }, manifest.references);
  const device = new ExtentDevice(new DirectExtentStore(extents, memoryCacheBytes), manifest.size, true);
  return { manifest, extents, device };
}
