// The snapshots of a volume: their manifests under snapshots/ (manifest.ts), and what they mean
// for the garbage collector: an extent object that any manifest names is never deleted.
//
// Who may delete objects is the writer that holds the lease, and every snapshot is created by
// that writer too (the CLI on an idle volume takes the lease; a running gateway makes its own).
// So the holder knows every manifest: those in the bucket when it took the lease (retainAll,
// before it collects anything) and those it creates (create() counts a snapshot's objects in
// RetainedObjects before its manifest is written). The order of each step is what makes a
// kill -9 at any point harmless:
//
//   create: keep the objects (in memory), then PUT the manifest (If-None-Match: *). Killed
//           before the PUT: no snapshot, nothing changed. After: the snapshot is whole, and
//           the next holder finds it before it collects anything.
//   delete: refuse while the snapshot has clones (clone.ts: markers under clones/<name>/), then
//           DELETE the manifest (and make that durable), look for clones again (one made
//           meanwhile: PUT the manifest back and refuse), then let go of its objects and delete
//           those now garbage: superseded, and named by no other manifest. Killed in between:
//           the objects are garbage that the next collection finds (any start of a writer,
//           or `s3nbd gc`, lists the bucket and deletes what is superseded and unnamed).
//
// Manifests never change once written, so each is fetched once per process and kept.

import { Errors } from '../../errors.ts';
import type { VolumeOrigin } from '../volume/volume.ts';
import { type CloneMarker, describeClones, listClones } from './clone.ts';
import type { ObjectExtents } from '../extents/extent-objects.ts';
import type { RetainedObjects } from '../extents/retained-objects.ts';
import type { ObjectStore } from '../objects/object-store.ts';
import type { Volume } from '../volume/volume.ts';
import {
  type Manifest, ManifestError, type SnapshotReference, SNAPSHOT_PREFIX, checkSnapshotName, decodeManifest, encodeManifest,
  manifestKey, snapshotNameOf,
} from './manifest.ts';

/** Manifests fetched at once. */
const LOAD_CONCURRENCY = 16;

/**
 * Writes the manifest of snapshot `name` holding `references` (this volume's objects, or, for
 * a clone, its origins' of `sources`), once: resolves undefined when the name is taken. The
 * caller keeps the objects from collection meanwhile (SnapshotRegistry.create does). Resolves
 * once the manifest is durable.
 */
export async function writeSnapshot(objects: ObjectStore, volume: Volume, name: string,
  references: readonly SnapshotReference[], sources: readonly VolumeOrigin[] = []): Promise<Manifest | undefined> {
  const manifest: Manifest = {
    name: checkSnapshotName(name), volumeId: volume.id, createdAt: new Date().toISOString(), size: volume.size,
    extentSize: volume.extentSize, sources: references.some((r) => r.source > 0) ? sources : [], references,
  };
  const body = encodeManifest(manifest);
  if (await objects.putIf(manifestKey(name), body, undefined) === undefined) {
    // Taken, or ours: an attempt whose answer was lost lands, and its retry finds the key.
    const there = await objects.get(manifestKey(name));
    if (!there?.equals(body)) return undefined;
  }
  await objects.flush();
  return manifest;
}

export class SnapshotRegistry {
  private readonly objects: ObjectStore;
  private volume: Volume;
  private readonly manifests = new Map<string, Manifest>();
  /** Snapshots whose objects were counted in `retained` by this registry (so may be released). */
  private readonly counted = new Set<string>();
  private retained: RetainedObjects | undefined;
  /** A clone's origins, as its snapshots' manifests name them (clone.ts). */
  private readonly sources: readonly VolumeOrigin[];

  constructor(objects: ObjectStore, volume: Volume, sources: readonly VolumeOrigin[] = []) {
    this.objects = objects;
    this.volume = volume;
    this.sources = sources;
  }

  /** The volume grew (Storage.grow): snapshots taken from now on record its new size. */
  grew(volume: Volume): void {
    if (volume.id === this.volume.id && volume.size > this.volume.size) this.volume = volume;
  }

  /** The names of the snapshots in the bucket, sorted (one LIST per 1000). */
  async names(): Promise<string[]> {
    const names: string[] = [];
    for await (const key of this.objects.list(SNAPSHOT_PREFIX)) {
      const name = snapshotNameOf(key);
      if (name !== undefined) names.push(name);
    }
    return names.sort();
  }

  /** The snapshot's manifest, or undefined when there is none; S3NBD_BAD_SNAPSHOT when it is damaged. */
  async load(name: string): Promise<Manifest | undefined> {
    const known = this.manifests.get(name);
    if (known) return known;
    const body = await this.objects.get(manifestKey(name));
    if (body === undefined) return undefined;
    let manifest: Manifest;
    try {
      manifest = decodeManifest(body);
    } catch (err) {
      if (err instanceof ManifestError) throw Errors.badSnapshot(this.objects.description, name, err.message);
      throw err;
    }
    if (manifest.volumeId !== this.volume.id || manifest.name !== name || manifest.extentSize !== this.volume.extentSize) {
      throw Errors.badSnapshot(this.objects.description, name, `it describes ${manifest.name} of volume ${manifest.volumeId}, extent size ${manifest.extentSize}`);
    }
    this.manifests.set(name, manifest);
    return manifest;
  }

  /** Every snapshot's manifest, by name. */
  async loadAll(): Promise<Manifest[]> {
    const names = await this.names();
    const all: Manifest[] = [];
    for (let i = 0; i < names.length; i += LOAD_CONCURRENCY) {
      const loaded = await Promise.all(names.slice(i, i + LOAD_CONCURRENCY).map((n) => this.load(n)));
      for (const m of loaded) if (m) all.push(m);
    }
    return all;
  }

  /**
   * Counts every snapshot's objects in `retained`, the garbage collector's list of what it must
   * keep. Call before anything is collected; snapshots created from here on go through create().
   */
  async retainAll(retained: RetainedObjects): Promise<Manifest[]> {
    this.retained = retained;
    const all = await this.loadAll();
    for (const manifest of all) this.count(manifest);
    return all;
  }

  private count(manifest: Manifest): void {
    if (!this.retained || this.counted.has(manifest.name)) return;
    for (const ref of ownReferences(manifest)) this.retained.add(ref.index, ref.generation);
    this.counted.add(manifest.name);
  }

  /**
   * Creates snapshot `name` of what `extents` holds now (or of `references`): its objects are
   * kept from the collector first, then the manifest is written. S3NBD_SNAPSHOT_EXISTS when the
   * name is taken.
   */
  async create(extents: ObjectExtents, name: string,
    references: ReadonlyArray<{ index: number; generation: number }> = extents.currentObjects()): Promise<Manifest> {
    checkSnapshotName(name);
    this.retained = extents.retained;
    for (const ref of references) extents.retained.add(ref.index, ref.generation);
    // A failure (thrown) keeps the objects: the manifest may have landed all the same, and the
    // next start, which reads the manifests, lets go of them if it did not.
    const sourced = references.map((r) => ({ index: r.index, generation: r.generation, source: extents.referenceSource(r.index, r.generation) }));
    const manifest = await writeSnapshot(this.objects, this.volume, name, sourced, this.sources);
    if (!manifest) {
      this.release(extents, references);
      throw Errors.snapshotExists(this.objects.description, name);
    }
    this.manifests.set(name, manifest);
    this.counted.add(name);
    return manifest;
  }

  /**
   * Deletes snapshot `name`: its manifest first, then the objects only it kept (superseded, and
   * named by no other snapshot), through `extents`' garbage collector. S3NBD_NO_SNAPSHOT when
   * there is no such snapshot, S3NBD_SNAPSHOT_HAS_CLONES while clones read it; `forgettable`
   * picks the clones that are gone (their markers are deleted first).
   */
  async delete(extents: ObjectExtents, name: string, forgettable?: (clones: CloneMarker[]) => Promise<CloneMarker[]>): Promise<Manifest> {
    const manifest = await this.load(name);
    if (!manifest) throw Errors.noSnapshot(this.objects.description, name);
    let clones = await listClones(this.objects, name);
    const gone = clones.length > 0 && forgettable ? await forgettable(clones) : [];
    if (gone.length > 0) {
      await this.objects.deleteMany(gone.map((c) => c.key));
      clones = clones.filter((c) => !gone.includes(c));
    }
    if (clones.length > 0) throw Errors.snapshotHasClones(this.objects.description, name, describeClones(clones));
    await this.objects.deleteMany([manifestKey(name)]);
    await this.objects.flush();
    const late = await listClones(this.objects, name);
    if (late.length > 0) {
      // A clone made while we deleted: it read the manifest before we deleted it. Put it back.
      await this.objects.put(manifestKey(name), encodeManifest(manifest));
      await this.objects.flush();
      throw Errors.snapshotHasClones(this.objects.description, name, describeClones(late));
    }
    this.manifests.delete(name);
    // A snapshot this registry never counted (none, for the lease holder) keeps nothing here:
    // releasing it would let go of another snapshot's count. Its objects wait for the next start.
    if (this.counted.delete(name)) this.release(extents, ownReferences(manifest));
    await extents.collectGarbage();
    return manifest;
  }

  /** Forgets a manifest kept in memory (another process deleted the snapshot). */
  forget(name: string): void {
    this.manifests.delete(name);
  }

  private release(extents: ObjectExtents, references: Iterable<{ index: number; generation: number }>): void {
    const freed: number[] = [];
    for (const ref of references) if (extents.retained.release(ref.index, ref.generation)) freed.push(ref.index);
    extents.considerGarbage(freed);
  }
}

/** The references to this volume's own objects (not to a clone's origin). */
export function ownReferences(manifest: Manifest): SnapshotReference[] {
  return manifest.references.filter((r) => r.source === 0);
}

/**
 * For each manifest, its objects that no other snapshot names and the volume does not read
 * (`isCurrent` false): what deleting it would free.
 */
export function uniqueObjects(manifests: readonly Manifest[], isCurrent: (index: number, generation: number) => boolean): Map<string, number> {
  const users = new Map<string, number>();
  const keyOf = (r: SnapshotReference): string => `${r.index}.${r.generation}`;
  for (const m of manifests) for (const r of ownReferences(m)) users.set(keyOf(r), (users.get(keyOf(r)) ?? 0) + 1);
  const unique = new Map<string, number>();
  for (const m of manifests) {
    unique.set(m.name, ownReferences(m).filter((r) => users.get(keyOf(r)) === 1 && !isCurrent(r.index, r.generation)).length);
  }
  return unique;
}
