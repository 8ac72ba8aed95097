// The volumes under a store prefix (`--volumes URL`: the volume NAME is everything below
// URL/NAME/, a store of its own, as `--store URL/NAME` would open it), and what can be done to
// them on the store itself: list, create, grow and delete. `s3nbd volume …` calls these when
// no gateway serving the prefix answers on its control socket (volume-control.ts), and a
// gateway serving the prefix calls them for its VolumeAdmin.
//
// Deleting a volume, in this order, each step durable before the next:
//
//   1. refuse if it has snapshots (unless --with-snapshots: a backup target keeps history, so
//      losing it must be asked for) or clones read its snapshots (their markers, clone.ts);
//   2. take its writer lease (refused while a gateway holds it: S3NBD_VOLUME_IN_USE), and look
//      again: no snapshot can be made while we hold it;
//   3. replace its metadata by a deletion mark (VOLUME_DELETING_FORMAT) with a compare-and-swap:
//      from here on no build opens the volume, and this one says how to finish the deletion;
//   4. a clone's marker in its origin is removed (so the origin's snapshot may be deleted);
//   5. every other object (extents, tombstones, manifests, markers, the lease) is deleted;
//   6. the mark last (and a directory store's emptied directories).
//
// Killed anywhere, the volume is either whole (before 3) or marked (3 to 6), never a volume
// that opens with data missing; running the deletion again finishes it (a marked volume skips
// 1 and 2: nothing can open it, and its own lease may be the killed run's).

import { rm } from 'node:fs/promises';
import type { Logger } from 'pino';
import { Errors, UserError } from '../errors.ts';
import { FileObjectStore } from '../storage/objects/file-object-store.ts';
import { MemoryObjectStore } from '../storage/objects/memory-object-store.ts';
import type { ObjectStore } from '../storage/objects/object-store.ts';
import { PrefixedObjectStore } from '../storage/objects/prefixed-object-store.ts';
import { type S3Options, openObjectStore } from '../storage/objects/store-url.ts';
import { type ObjectRequest, newObjectSettings } from '../storage/format/object-settings.ts';
import { cloneMarkerKey, describeClones, listClonesAll } from '../storage/snapshots/clone.ts';
import { SNAPSHOT_PREFIX } from '../storage/snapshots/manifest.ts';
import { Lease, leaseHolder } from '../storage/volume/lease.ts';
import { checkVolumeName, childNames, isVolumeName, volumeStoreUrl } from '../storage/volume/volume-names.ts';
import {
  VOLUME_DELETING_FORMAT, VOLUME_KEY, type Volume, type VolumeOrigin, growVolume, openVolume, readVolume,
} from '../storage/volume/volume.ts';

/** Keys per DeleteObjects request. */
const DELETE_BATCH = 1000;
const DEFAULT_LEASE_TTL_MS = 30_000;

/** The stores of the volumes under one prefix. */
export interface VolumePrefix {
  /** The store at the prefix itself (what the volumes' names are listed in). */
  readonly root: ObjectStore;
  /** The prefix, safe to print. */
  readonly description: string;
  /** The store of volume `name` (closed by the caller; closing a view closes nothing shared). */
  open(name: string): ObjectStore;
  /** The names that may hold a volume (each is checked with readVolume). */
  names(): Promise<string[]>;
  /** The store URL of volume `name`, as its clones' markers and `--store` name it. */
  url(name: string): string;
  close(): Promise<void>;
}

/** `--volumes URL` (s3://, a directory, file://, or memory:). */
export function openVolumePrefix(volumes: string, s3: S3Options = {}, log?: Logger): VolumePrefix {
  const root = openObjectStore(volumes, s3, log);
  const url = (name: string): string => volumeStoreUrl(volumes, name, root);
  const open = (name: string): ObjectStore => (root instanceof FileObjectStore
    ? new FileObjectStore(url(name))
    : new PrefixedObjectStore(root, `${checkVolumeName(name)}/`, root instanceof MemoryObjectStore ? `memory volume ${name}` : url(name)));
  return {
    root,
    description: root instanceof FileObjectStore ? `directory ${root.root}` : volumes,
    open, url,
    names: async () => (await childNames(root)).filter(isVolumeName),
    close: () => root.close(),
  };
}

export interface VolumeListing {
  readonly name: string;
  /** ok; deleting (a deletion began and has not finished); unreadable (see error). */
  readonly state: 'ok' | 'deleting' | 'unreadable';
  readonly id?: string;
  readonly size?: number;
  readonly extentSize?: number;
  readonly createdAt?: string;
  readonly snapshots?: number;
  /** A clone's origin. */
  readonly origin?: VolumeOrigin;
  /** The gateway (or command) whose lease is unexpired, if any. */
  readonly lease?: { readonly owner: string; readonly host: string; readonly pid: number; readonly expiresAt: string } | undefined;
  /** The one-line error of an unreadable volume, with its code. */
  readonly error?: string;
}

/** Every volume under the prefix, by name: names without volume metadata are left out. */
export async function listVolumes(prefix: VolumePrefix): Promise<VolumeListing[]> {
  const listings: VolumeListing[] = [];
  for (const name of await prefix.names()) {
    const objects = prefix.open(name);
    try {
      const listing = await describeVolume(objects, name);
      if (listing) listings.push(listing);
    } finally {
      await objects.close();
    }
  }
  return listings;
}

async function describeVolume(objects: ObjectStore, name: string): Promise<VolumeListing | undefined> {
  let read;
  try {
    read = await readVolume(objects);
  } catch (err) {
    if (!(err instanceof UserError)) throw err;
    const state = err.code === 'S3NBD_VOLUME_DELETING' ? 'deleting' : 'unreadable';
    return { name, state, error: `${err.message} (${err.code})` };
  }
  if (!read) return undefined;
  const { volume } = read;
  return {
    name, state: 'ok', id: volume.id, size: volume.size, extentSize: volume.extentSize, createdAt: volume.createdAt,
    snapshots: await count(objects, SNAPSHOT_PREFIX), ...volume.origin ? { origin: volume.origin } : {},
    lease: await leaseHolder(objects),
  };
}

async function count(objects: ObjectStore, prefix: string): Promise<number> {
  let n = 0;
  for await (const _ of objects.list(prefix)) n++;
  return n;
}

export interface CreateRequest {
  readonly size: number;
  readonly extentSize?: number | undefined;
  /** Compression, encryption and key of the new volume (default: checksums, zstd, no encryption). */
  readonly objects?: ObjectRequest | undefined;
}

/** Creates volume `name` (openVolume's create path); refused when the name is taken or its place holds objects. */
export async function createVolume(prefix: VolumePrefix, name: string, request: CreateRequest): Promise<Volume> {
  const objects = prefix.open(checkVolumeName(name));
  try {
    if (await readVolume(objects)) throw Errors.namedVolumeExists(prefix.description, name);
    for await (const _ of objects.list('')) throw Errors.storeNotEmpty(objects.description);
    try {
      const { volume } = await openVolume(objects, {
        mode: 'create', size: request.size, extentSize: request.extentSize, writer: true,
        newObjects: (id) => newObjectSettings(request.objects ?? {}, id),
      });
      return volume;
    } catch (err) {
      if (err instanceof UserError && err.code === 'S3NBD_VOLUME_EXISTS') throw Errors.namedVolumeExists(prefix.description, name);
      throw err;
    }
  } finally {
    await objects.close();
  }
}

export interface IdleOptions {
  readonly log: Logger;
  readonly leaseTtlMs?: number;
}

/**
 * Grows volume `name`, which no gateway serves: holding its lease (refused while a gateway
 * holds it: a serving gateway grows it itself, Storage.grow), like any writer of the metadata.
 */
export async function resizeVolume(prefix: VolumePrefix, name: string, size: number, options: IdleOptions): Promise<Volume> {
  const objects = prefix.open(checkVolumeName(name));
  try {
    const existing = await readVolume(objects);
    if (!existing) throw Errors.noNamedVolume(prefix.description, name);
    const lease = await takeLease(objects, 'resize', options);
    try {
      return await growVolume(objects, existing.volume.id, size);
    } finally {
      await lease.release();
    }
  } finally {
    await objects.close();
  }
}

async function takeLease(objects: ObjectStore, command: string, options: IdleOptions): Promise<Lease> {
  try {
    return await Lease.acquire(objects, {
      owner: `s3nbd volume ${command}`, ttlMs: options.leaseTtlMs ?? DEFAULT_LEASE_TTL_MS, takeOver: false, log: options.log, onlyDeletes: true,
      onLost: (by) => options.log.warn({ by }, `the volume was taken over during volume ${command}`),
    });
  } catch (err) {
    if (err instanceof UserError && err.code === 'S3NBD_VOLUME_IN_USE') throw Errors.volumeBusy(err.message, command);
    throw err;
  }
}

export interface DeleteOptions extends IdleOptions {
  /** Delete its snapshots too; without it, a volume with snapshots is refused. */
  readonly withSnapshots?: boolean | undefined;
  /** S3 options to open a clone's origin (to remove the clone's marker there). */
  readonly s3?: S3Options;
}

/** Deletes volume `name` and every object of it, in the order at the top of the file; resolves the objects deleted. */
export async function deleteVolume(prefix: VolumePrefix, name: string, options: DeleteOptions): Promise<number> {
  const objects = prefix.open(checkVolumeName(name));
  try {
    let mark = await readMark(objects);
    if (!mark) {
      const existing = await readVolume(objects);
      if (!existing) throw Errors.noNamedVolume(prefix.description, name);
      await refuseDeletion(objects, options);
      const lease = await takeLease(objects, 'delete', options);
      try {
        await refuseDeletion(objects, options); // a snapshot made before we held the lease
        mark = { id: existing.volume.id, origin: existing.volume.origin };
        const body = Buffer.from(`${JSON.stringify({ format: VOLUME_DELETING_FORMAT, ...mark, deletingSince: new Date().toISOString() })}\n`);
        if (await objects.putIf(VOLUME_KEY, body, existing.tag) === undefined) throw Errors.badVolume(objects.description, 'its metadata changed while it was being deleted; nothing was deleted');
        await objects.flush();
      } finally {
        await lease.release();
      }
    }
    if (mark.origin) await forgetOrigin(mark.origin, mark.id, options);
    let deleted = 0;
    let batch: string[] = [];
    for await (const key of objects.list('')) {
      if (key === VOLUME_KEY) continue;
      batch.push(key);
      if (batch.length < DELETE_BATCH) continue;
      await objects.deleteMany(batch);
      deleted += batch.length;
      batch = [];
    }
    await objects.deleteMany(batch);
    deleted += batch.length;
    await objects.flush();
    await objects.deleteMany([VOLUME_KEY]);
    await objects.flush();
    // A directory store keeps empty directories and its lock files (.tmp-lock-*, never listed).
    if (objects instanceof FileObjectStore) await rm(objects.root, { recursive: true, force: true });
    options.log.info({ volume: name, id: mark.id, objects: deleted + 1 }, 'volume deleted');
    return deleted + 1;
  } finally {
    await objects.close();
  }
}

/** The deletion mark, if a deletion began. */
async function readMark(objects: ObjectStore): Promise<{ id: string; origin?: VolumeOrigin | undefined } | undefined> {
  const data = await objects.get(VOLUME_KEY);
  if (!data) return undefined;
  try {
    const meta = JSON.parse(data.toString('utf8')) as { format?: unknown; id?: unknown; origin?: VolumeOrigin };
    if (meta.format === VOLUME_DELETING_FORMAT && typeof meta.id === 'string') return { id: meta.id, origin: meta.origin };
  } catch {
    // Not a mark: readVolume says what it is.
  }
  return undefined;
}

/**
 * Throws what deleteVolume() would refuse now (no such volume, snapshots without
 * `withSnapshots`, clones), without taking the lease: a gateway calls it before it stops
 * serving the volume it was asked to delete. A volume whose deletion began passes.
 */
export async function checkDeletable(prefix: VolumePrefix, name: string, options: Pick<DeleteOptions, 'withSnapshots'>): Promise<void> {
  const objects = prefix.open(checkVolumeName(name));
  try {
    if (await readMark(objects)) return;
    if (!await readVolume(objects)) throw Errors.noNamedVolume(prefix.description, name);
    await refuseDeletion(objects, options);
  } finally {
    await objects.close();
  }
}

async function refuseDeletion(objects: ObjectStore, options: Pick<DeleteOptions, 'withSnapshots'>): Promise<void> {
  const clones = await listClonesAll(objects);
  if (clones.length > 0) throw Errors.volumeHasClones(objects.description, describeClones(clones));
  const snapshots = await count(objects, SNAPSHOT_PREFIX);
  if (snapshots > 0 && options.withSnapshots !== true) throw Errors.volumeHasSnapshots(objects.description, snapshots);
}

/** A deleted clone's marker in its origin: without it, the origin's snapshot may be deleted again. */
async function forgetOrigin(origin: VolumeOrigin, cloneId: string, options: DeleteOptions): Promise<void> {
  let store: ObjectStore | undefined;
  try {
    store = openObjectStore(origin.store, options.s3 ?? {}, options.log);
    await store.deleteMany([cloneMarkerKey(origin.snapshot, cloneId)]);
    await store.flush();
  } catch (err) {
    options.log.warn({ origin: origin.store, snapshot: origin.snapshot, err: (err as Error).message },
      'the clone\'s marker in its origin could not be removed; forget it there with: s3nbd snapshot delete --forget-missing-clones');
  } finally {
    await store?.close().catch(() => undefined);
  }
}

