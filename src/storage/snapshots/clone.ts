// Clones (docs/format.md, "Clones"): a new writable volume made from a snapshot without
// copying data. The clone is a volume of its own (its own id and s3nbd-volume.json, in its
// own store) whose metadata names its origin: the store, volume id and snapshot it was made
// from. The extents it has not written it reads from the snapshot's objects in the origin's
// store (extent-objects.ts: the `base`); what it writes are objects of its own.
//
// The origin must never collect an object a clone still reads, so the origin records its
// clones, one small object per clone under the snapshot's name:
//
//   clones/<snapshot>/<clone volume id>   {"format":"s3nbd-clone","store":"<clone's store>",
//                                          "volumeId":"<clone volume id>","createdAt":"<ISO 8601>"}
//
// and a snapshot with clones cannot be deleted (S3NBD_SNAPSHOT_HAS_CLONES names them). Making
// a clone, in this order, each step durable before the next:
//
//   1. PUT the marker in the origin;
//   2. GET the manifest again: gone (deleted meanwhile) → the marker is removed, no clone;
//   3. create the clone's s3nbd-volume.json (If-None-Match: *).
//
// Killed between 1 and 3: a marker without a clone, which keeps the snapshot from deletion
// until `snapshot delete --forget-missing-clones` (or `clone` run again to the same store,
// which removes markers naming that store when it holds no volume) removes it. Deleting a
// snapshot looks for markers before and again after deleting its manifest, and puts the
// manifest back if one appeared meanwhile (registry.ts): a clone whose step 2 found the
// manifest wrote its marker before, so the second look sees it.
//
// A clone of a clone's snapshot reads objects of several volumes: its sources are its origin
// (source 1) and then that snapshot's own sources (its manifest's, shifted by one).

import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { Errors, UserError } from '../../errors.ts';
import type { ExtentSource } from '../extents/extent-objects.ts';
import type { ExtentCodec } from '../format/extent-codec.ts';
import { type ObjectRequest, type ObjectSettings, newObjectSettings, openCodec, unlock } from '../format/object-settings.ts';
import { type KeySource, wrapDataKey } from '../format/volume-keys.ts';
import type { ObjectStore } from '../objects/object-store.ts';
import { type S3Options, absoluteStoreUrl, openObjectStore } from '../objects/store-url.ts';
import { type Volume, type VolumeOrigin, openVolume, readVolume } from '../volume/volume.ts';
import { type Manifest, checkSnapshotName, decodeManifest, manifestKey } from './manifest.ts';
import { SnapshotRegistry } from './registry.ts';

export const CLONE_PREFIX = 'clones/';
const CLONE_FORMAT = 's3nbd-clone';

/** What the origin knows of a clone (its marker). */
export interface CloneMarker {
  readonly key: string;
  readonly store: string;
  readonly volumeId: string;
  readonly createdAt: string;
}

export function cloneMarkerKey(snapshot: string, cloneId: string): string {
  return `${CLONE_PREFIX}${checkSnapshotName(snapshot)}/${cloneId}`;
}

/** The clones of snapshot `name` that its volume knows of. */
export function listClones(objects: ObjectStore, name: string): Promise<CloneMarker[]> {
  return markersUnder(objects, `${CLONE_PREFIX}${checkSnapshotName(name)}/`);
}

/** The clones of every snapshot of the volume (deleting the volume: volume-ops.ts). */
export function listClonesAll(objects: ObjectStore): Promise<CloneMarker[]> {
  return markersUnder(objects, CLONE_PREFIX);
}

async function markersUnder(objects: ObjectStore, prefix: string): Promise<CloneMarker[]> {
  const markers: CloneMarker[] = [];
  for await (const key of objects.list(prefix)) {
    const body = await objects.get(key, 64 * 1024);
    if (!body) continue; // removed since the listing
    let m: Record<string, unknown> = {};
    try {
      m = JSON.parse(body.toString('utf8')) as Record<string, unknown>;
    } catch {
      // A damaged marker still stands for a clone: it blocks deletion like the others.
    }
    markers.push({
      key,
      store: typeof m.store === 'string' ? m.store : '(unreadable marker)',
      volumeId: typeof m.volumeId === 'string' ? m.volumeId : key.slice(key.lastIndexOf('/') + 1),
      createdAt: typeof m.createdAt === 'string' ? m.createdAt : '',
    });
  }
  return markers.sort((a, b) => a.key.localeCompare(b.key));
}

/** How a list of clones reads in an error: "volume ID in STORE, …". */
export function describeClones(clones: readonly CloneMarker[]): string {
  return clones.map((c) => `volume ${c.volumeId} in ${c.store}`).join(', ');
}

/** The markers whose clone is gone: no volume with that id at that store. */
export async function missingClones(clones: readonly CloneMarker[], s3: S3Options, log: Logger): Promise<CloneMarker[]> {
  const missing: CloneMarker[] = [];
  for (const clone of clones) {
    let store: ObjectStore;
    try {
      store = openObjectStore(clone.store, s3, log);
    } catch {
      continue; // an unreadable marker is never judged missing
    }
    try {
      const there = await readVolume(store);
      if (there?.volume.id !== clone.volumeId) missing.push(clone);
    } finally {
      await store.close();
    }
  }
  return missing;
}

/** A clone's origins, opened: what its extent layer reads through, and what its snapshots' manifests name. */
export interface CloneBase {
  /** Source i is sources[i - 1]. */
  readonly sources: readonly ExtentSource[];
  /** The same, as manifests name them. */
  readonly descriptors: readonly VolumeOrigin[];
  /** The origin snapshot's objects, their sources shifted by one (source 1: the origin). */
  readonly base: ReadonlyArray<{ index: number; generation: number; source: number }>;
  close(): Promise<void>;
}

/** No origin: a volume that is not a clone. */
export const NO_BASE: CloneBase = { sources: [], descriptors: [], base: [], close: () => Promise.resolve() };

/**
 * Opens the origins of `volume` (a clone): the origin's store with the clone's S3 options, its
 * snapshot's manifest, and the stores of that manifest's own sources. S3NBD_NO_ORIGIN when
 * the origin volume or its snapshot is gone.
 */
export async function openCloneBase(volume: Volume, s3: S3Options, log: Logger, request?: ObjectRequest): Promise<CloneBase> {
  const origin = volume.origin;
  if (!origin) return NO_BASE;
  const stores: ObjectStore[] = [];
  const close = async (): Promise<void> => {
    for (const store of stores) await store.close().catch(() => undefined);
  };
  try {
    const originStore = openObjectStore(origin.store, s3, log);
    stores.push(originStore);
    const there = await readVolume(originStore);
    if (!there) throw Errors.noOrigin(volume.id, origin, 'holds no volume');
    if (there.volume.id !== origin.volumeId) throw Errors.noOrigin(volume.id, origin, `holds another volume (${there.volume.id})`);
    const manifest = await new SnapshotRegistry(originStore, there.volume).load(origin.snapshot);
    if (!manifest) throw Errors.noOrigin(volume.id, origin, `has no snapshot "${origin.snapshot}" any more`);
    // A clone may have grown since (volume resize): it reads its origin only below the snapshot's size.
    if (manifest.extentSize !== volume.extentSize || manifest.size > volume.size) {
      throw Errors.noOrigin(volume.id, origin, 'holds a snapshot of another geometry under that name');
    }
    const descriptors = [origin, ...manifest.sources.map((s, i) => sourceDescriptor(s, manifest, i))];
    // Each source's objects are decoded with its own volume's codec (format, compression).
    const codecOf = (v: Volume, store: ObjectStore): Promise<ExtentCodec> => openCodec(v, request ? { key: request.key } : undefined, store.description);
    const sources: ExtentSource[] = [{ objects: originStore, volumeId: origin.volumeId, codec: await codecOf(there.volume, originStore) }];
    for (const d of descriptors.slice(1)) {
      const store = openObjectStore(d.store, s3, log);
      stores.push(store);
      const its = await readVolume(store);
      if (its?.volume.id !== d.volumeId) throw Errors.noOrigin(volume.id, d, its ? `holds another volume (${its.volume.id})` : 'holds no volume');
      sources.push({ objects: store, volumeId: d.volumeId, codec: await codecOf(its.volume, store) });
    }
    const base = manifest.references.map((r) => ({ index: r.index, generation: r.generation, source: r.source + 1 }));
    return { sources, descriptors, base, close };
  } catch (err) {
    await close();
    throw err;
  }
}

/** A manifest's source entry, checked. */
function sourceDescriptor(entry: unknown, manifest: Manifest, i: number): VolumeOrigin {
  const e = entry as Record<string, unknown> | null;
  if (!e || typeof e.store !== 'string' || typeof e.volumeId !== 'string' || typeof e.snapshot !== 'string') {
    throw new UserError('S3NBD_BAD_SNAPSHOT', `the manifest of snapshot "${manifest.name}" has an unusable source ${i + 1}`,
      'restore snapshots/NAME from a backup of the bucket');
  }
  return { store: e.store, volumeId: e.volumeId, snapshot: e.snapshot };
}

export interface CloneRequest {
  /** The origin volume's store, and its snapshot. */
  readonly store: string;
  readonly snapshot: string;
  /** Where the clone is made: a store that holds no volume. */
  readonly to: string;
  readonly s3: S3Options;
  readonly log: Logger;
  /** The origin's key, when it is encrypted: the clone shares its data key. */
  readonly key?: KeySource | undefined;
  /** Wraps the stores (test hooks). */
  readonly wrapStore?: (objects: ObjectStore) => ObjectStore;
}

export interface CloneResult {
  readonly volume: Volume;
  /** False when `to` already held this very clone (a command run again after it succeeded). */
  readonly created: boolean;
  readonly manifest: Manifest;
}

/** Makes the clone (see the top of the file): O(1) requests and one manifest read, nothing copied. */
export async function createClone(request: CloneRequest): Promise<CloneResult> {
  checkSnapshotName(request.snapshot);
  const wrap = request.wrapStore ?? ((o: ObjectStore) => o);
  const origin = wrap(openObjectStore(request.store, request.s3, request.log));
  const target = wrap(openObjectStore(request.to, request.s3, request.log));
  try {
    const { volume: originVolume } = await openVolume(origin, { mode: 'open' });
    const manifest = await new SnapshotRegistry(origin, originVolume).load(request.snapshot);
    if (!manifest) throw Errors.noSnapshot(origin.description, request.snapshot);
    const originUrl = absoluteStoreUrl(request.store);
    const toUrl = absoluteStoreUrl(request.to);
    const there = await readVolume(target);
    if (there) {
      const o = there.volume.origin;
      if (o?.volumeId === originVolume.id && o.snapshot === request.snapshot) return { volume: there.volume, created: false, manifest };
      throw Errors.volumeExists(target.description);
    }
    // Markers naming this store are of clones that were never finished: it holds no volume.
    const stale = (await listClones(origin, request.snapshot)).filter((c) => c.store === toUrl);
    if (stale.length > 0) await origin.deleteMany(stale.map((c) => c.key));
    const id = randomUUID();
    // Checked before anything is written: a missing or wrong key changes nothing.
    const objects = await cloneObjectSettings(originVolume, id, request.key, origin.description);
    const key = cloneMarkerKey(request.snapshot, id);
    await origin.put(key, Buffer.from(`${JSON.stringify({ format: CLONE_FORMAT, store: toUrl, volumeId: id, createdAt: new Date().toISOString() })}\n`));
    await origin.flush();
    const unmark = (): Promise<void> => origin.deleteMany([key]).catch(() => undefined);
    // Read again, not from memory: a deletion that listed the markers before ours may have run since.
    const still = await origin.get(manifestKey(request.snapshot));
    if (!still || !sameSnapshot(still, manifest)) {
      await unmark();
      throw Errors.noSnapshot(origin.description, request.snapshot);
    }
    try {
      const { volume } = await openVolume(target, {
        mode: 'create', size: manifest.size, extentSize: manifest.extentSize, writer: true, newObjects: () => Promise.resolve(objects),
        clone: { id, origin: { store: originUrl, volumeId: originVolume.id, snapshot: request.snapshot } },
      });
      return { volume, created: true, manifest };
    } catch (err) {
      await unmark();
      throw err;
    }
  } finally {
    await origin.close();
    await target.close();
  }
}

/**
 * The clone's object settings: the origin's (compression, cipher, KEK parameters), and for an
 * encrypted origin its data key, unwrapped with `key` and wrapped again for the clone's id (the
 * wrapping binds the volume id), so that the one key opens both volumes. A format 1 origin:
 * a new volume's defaults.
 */
async function cloneObjectSettings(origin: Volume, cloneId: string, key: KeySource | undefined, store: string): Promise<ObjectSettings | undefined> {
  const s = origin.objects;
  if (!s) return newObjectSettings({}, cloneId);
  if (!s.encryption) return s;
  const dataKey = await unlock(s.encryption, origin.id, key, store);
  const wrappedKey = wrapDataKey(await key!.kek(s.encryption.kek), dataKey, { volumeId: cloneId, cipher: s.encryption.cipher });
  dataKey.fill(0);
  return { ...s, encryption: { ...s.encryption, wrappedKey } };
}

/** True when `body` is the manifest of the same snapshot (not another one made under the name since). */
function sameSnapshot(body: Buffer, manifest: Manifest): boolean {
  try {
    const m = decodeManifest(body);
    return m.volumeId === manifest.volumeId && m.createdAt === manifest.createdAt;
  } catch {
    return false;
  }
}
