// Bringing a snapshot back after its objects were deleted, in a bucket that keeps old versions
// (versioning or Object Lock, docs/s3.md): someone with the gateway's credentials (ransomware,
// a wrong script) deleted the volume's objects; S3 only hid them behind delete markers. The
// snapshot needs three kinds of keys, each written once and never replaced (docs/format.md),
// so any version of one is the right one, and removing every delete marker above it is enough:
//
//   s3nbd-volume.json, the manifest snapshots/<name>, and every extent object it names.
//
// Nothing is copied or written; the volume's other objects stay deleted. The snapshot can then
// be served (`serve --snapshot`), cloned, or rolled back to. The extents' versions are listed
// once (one request per 1000 versions), so an interrupted restore is simply run again.

import { Errors } from '../../errors.ts';
import { EXTENT_PREFIX } from '../extents/extent-keys.ts';
import { keyOf } from '../extents/object-census.ts';
import type { ObjectStore } from '../objects/object-store.ts';
import { type UndeleteProgress, undelete } from '../objects/undelete.ts';
import { VOLUME_KEY } from '../volume/volume.ts';
import { type Manifest, ManifestError, decodeManifest, manifestKey } from './manifest.ts';
import { ownReferences } from './registry.ts';

export interface RestoreResult {
  readonly manifest: Manifest;
  /** Keys brought back: the metadata and the manifest if they were deleted, and extent objects. */
  readonly restored: number;
}

export async function restoreSnapshot(objects: ObjectStore, name: string, onProgress?: (p: UndeleteProgress) => void): Promise<RestoreResult> {
  const key = manifestKey(name);
  let restored = 0;
  for (const only of [VOLUME_KEY, key]) restored += (await undelete(objects, { prefix: only, select: (k) => k === only })).removed > 0 ? 1 : 0;
  const body = await objects.get(key);
  if (!body) throw Errors.noSnapshot(objects.description, name);
  let manifest: Manifest;
  try {
    manifest = decodeManifest(body);
  } catch (err) {
    if (err instanceof ManifestError) throw Errors.badSnapshot(objects.description, name, err.message);
    throw err;
  }
  const wanted = new Set(ownReferences(manifest).map((r) => keyOf({ index: r.index, generation: r.generation, zero: false })));
  const extents = await undelete(objects, { prefix: EXTENT_PREFIX, select: (k) => wanted.has(k), ...onProgress ? { onProgress } : {} });
  return { manifest, restored: restored + extents.keys };
}
