// A volume is described by one metadata object, written once when the volume is created:
//
//   s3nbd-volume.json  {"format":"s3nbd-volume","version":2,"id":"<uuid>","size":<bytes>,
//                       "extentSize":<bytes>,"createdAt":"<ISO 8601>","objects":{...},
//                       "origin":{"store":"<URL>","volumeId":"<uuid>","snapshot":"<name>"}}
//
// `origin` only for a clone (s3nbd clone, docs/format.md "Clones"): the snapshot whose objects
// it reads for the extents it has not written, in the volume at that store (an absolute
// directory path or an s3:// URL, opened with the clone's own S3 options).
//
// `objects` (format 2: every extent object has a header and checksum, and may be compressed
// and encrypted) is parsed by format/object-settings.ts. Version 2 is also the bucket layout
// of docs/format.md (immutable extent generations). Version 1 (format 1) has no `objects`:
// its extents are raw bytes under keys without a generation. A writer that opens a volume of
// version 1 upgrades it: the metadata is replaced by version 2's (default object settings,
// no encryption) with a compare-and-swap before anything else is written, so that builds of
// version 1 refuse the volume from then on instead of writing keys version 2 does not read.
// Its old extent objects stay, read raw as generation 0. Readers (--read-only, info) leave it
// as it is. (The volatile memory store's volumes are made version 1 on purpose: raw extents.)
//
// It is created with a conditional put, so two gateways racing to create the same volume
// agree on one description. Serving reads it and checks any size the user asked for. Before
// a writer relies on conditional puts (the lease), the store shows that it refuses one whose
// condition fails (ObjectStore.checkConditionalWrites): an S3 server that ignored them would
// let two gateways write at once.

import { randomUUID } from 'node:crypto';
import { Errors, UserError } from '../../errors.ts';
import type { ObjectStore } from '../objects/object-store.ts';
import { type ObjectSettings, newObjectSettings, objectSettingsJson, parseObjectSettings } from '../format/object-settings.ts';

export const VOLUME_KEY = 's3nbd-volume.json';
export const VOLUME_FORMAT = 's3nbd-volume';
/**
 * The metadata of a volume being deleted (service/volume-ops.ts): written over the volume's
 * before anything else is deleted, and deleted last, so that a deletion killed halfway leaves a
 * volume that every build refuses to open (this one says how to finish it), never one that
 * looks whole with its data gone. `{"format":"s3nbd-volume-deleting","id":"<uuid>","deletingSince":"<ISO 8601>"}`
 */
export const VOLUME_DELETING_FORMAT = 's3nbd-volume-deleting';
export const VOLUME_VERSION = 2;
/** Format 1: no `objects`, raw extents. Still read. */
export const VOLUME_VERSION_RAW = 1;
export const DEFAULT_EXTENT_SIZE = 1024 * 1024;
export const MIN_EXTENT_SIZE = 4096;
export const MAX_EXTENT_SIZE = 32 * 1024 * 1024;
export const MAX_DEVICE_SIZE = 2 ** 50;

export interface Volume {
  readonly id: string;
  readonly size: number;
  readonly extentSize: number;
  readonly createdAt: string;
  /** How extents are stored (format 2); undefined for a format 1 volume (raw extents). */
  readonly objects?: ObjectSettings | undefined;
  /** A clone's origin: the snapshot it was made from. */
  readonly origin?: VolumeOrigin;
}

export interface VolumeOrigin {
  /** Where the origin volume lives: an absolute directory path or an s3:// URL. */
  readonly store: string;
  readonly volumeId: string;
  readonly snapshot: string;
}

export interface VolumeRequest {
  /** Size wanted; required to create, checked against an existing volume otherwise. */
  readonly size?: number | undefined;
  readonly extentSize?: number | undefined;
  /** 'open-or-create' for serve, 'create' for `s3nbd create`, 'open' for `s3nbd info`. */
  readonly mode: 'open' | 'create' | 'open-or-create';
  /** The caller will write (and take the lease): check the store's conditional writes. Always done on creation. */
  readonly writer?: boolean | undefined;
  /** Serving --read-only: never create (that would write to the store), whatever the mode. */
  readonly readOnly?: boolean | undefined;
  /** Creating a clone: its id (chosen before its origin records it) and its origin. */
  readonly clone?: { readonly id: string; readonly origin: VolumeOrigin } | undefined;
  /**
   * The object settings of a volume about to be created (default: checksum and default
   * compression, no encryption); undefined makes a volume of format 1 (raw extents).
   */
  readonly newObjects?: ((volumeId: string) => Promise<ObjectSettings | undefined>) | undefined;
}

export function extentCountOf(volume: Volume): number {
  return Math.ceil(volume.size / volume.extentSize);
}

export function checkGeometry(size: number | undefined, extentSize: number | undefined): void {
  if (size !== undefined && Number.isSafeInteger(size) && size > MAX_DEVICE_SIZE) throw Errors.sizeTooLarge('--size', String(size), '1 PiB');
  if (size !== undefined && (!Number.isSafeInteger(size) || size <= 0 || size % 512 !== 0)) {
    throw Errors.badDeviceSize(size);
  }
  if (extentSize !== undefined
    && (extentSize < MIN_EXTENT_SIZE || extentSize > MAX_EXTENT_SIZE || (extentSize & (extentSize - 1)) !== 0)) {
    throw Errors.badExtentSize(extentSize);
  }
}

/**
 * Reads the volume, or creates it when the request allows. `beforeCreate` runs just before the
 * first write to the store, so that a start refused for a local reason (cache directory,
 * listen address) leaves nothing behind in the bucket.
 */
export async function openVolume(objects: ObjectStore, request: VolumeRequest,
  beforeCreate: () => Promise<void> = () => Promise.resolve()): Promise<{ volume: Volume; created: boolean }> {
  checkGeometry(request.size, request.extentSize);
  if (request.mode !== 'create') {
    const existing = await readVolume(objects);
    if (existing) {
      const volume = matchRequest(objects, existing.volume, request);
      if (!request.writer) return { volume, created: false };
      await checkConditions(objects, existing.data, false);
      if (volume.objects === undefined) return { volume: await upgrade(objects, existing), created: false };
      return { volume, created: false };
    }
    if (request.readOnly) throw Errors.noVolumeReadOnly(objects.description);
    if (request.mode === 'open' || request.size === undefined) throw Errors.noVolume(objects.description);
  } else if (request.size === undefined) {
    throw Errors.noVolume(objects.description);
  }
  await beforeCreate();
  const id = request.clone?.id ?? randomUUID();
  const volume: Volume = {
    id,
    size: request.size,
    extentSize: request.extentSize ?? DEFAULT_EXTENT_SIZE,
    createdAt: new Date().toISOString(),
    objects: await (request.newObjects ?? ((volumeId) => newObjectSettings({}, volumeId)))(id),
    ...request.clone ? { origin: request.clone.origin } : {},
  };
  const body = volumeBody(volume);
  if (await objects.putIf(VOLUME_KEY, body, undefined) !== undefined) {
    await checkConditions(objects, body, true);
    await objects.flush();
    return { volume, created: true };
  }
  if (request.mode === 'create') throw Errors.volumeExists(objects.description);
  // Another gateway created it first: serve theirs, if it is what we asked for.
  const theirs = await readVolume(objects);
  if (!theirs) throw Errors.badVolume(objects.description, 'it vanished while being created');
  const matched = matchRequest(objects, theirs.volume, request);
  if (request.writer) await checkConditions(objects, theirs.data, false);
  return { volume: matched, created: false };
}

/** See ObjectStore.checkConditionalWrites. A volume this call created is deleted again when the check fails: a refused start leaves nothing behind. */
async function checkConditions(objects: ObjectStore, data: Buffer, created: boolean): Promise<void> {
  try {
    await objects.checkConditionalWrites?.(VOLUME_KEY, data);
  } catch (err) {
    if (created && err instanceof UserError) await objects.deleteMany([VOLUME_KEY]).catch(() => undefined);
    throw err;
  }
}

/** Replaces a version 1 volume's metadata by version 2's (see the top of the file), with a compare-and-swap. */
async function upgrade(objects: ObjectStore, existing: { volume: Volume; tag: string }): Promise<Volume> {
  const volume: Volume = { ...existing.volume, objects: await newObjectSettings({}, existing.volume.id) };
  if (await objects.putIf(VOLUME_KEY, volumeBody(volume), existing.tag) === undefined) {
    // Changed since we read it: another gateway of this version upgraded it first, or worse.
    const now = await readVolume(objects);
    if (now?.volume.objects !== undefined && now.volume.id === existing.volume.id) return now.volume;
    throw Errors.badVolume(objects.description, 'it changed while being upgraded');
  }
  await objects.flush();
  return volume;
}

/** The metadata object's bytes. */
export function volumeBody(volume: Volume): Buffer {
  const { objects, ...rest } = volume;
  const version = objects ? VOLUME_VERSION : VOLUME_VERSION_RAW;
  return Buffer.from(`${JSON.stringify({ format: VOLUME_FORMAT, version, ...rest, ...objects ? { objects: objectSettingsJson(objects) } : {} })}\n`);
}

/** The volume, its metadata's bytes, and their version tag (for a compare-and-swap: `s3nbd key change`). */
export async function readVolume(objects: ObjectStore): Promise<{ volume: Volume; data: Buffer; tag: string } | undefined> {
  const tagged = await objects.getTagged(VOLUME_KEY);
  if (!tagged) return undefined;
  const { data, tag } = tagged;
  let meta: Record<string, unknown>;
  try {
    meta = JSON.parse(data.toString('utf8')) as Record<string, unknown>;
  } catch {
    throw Errors.badVolume(objects.description, `${VOLUME_KEY} is not JSON`);
  }
  if (meta.format === VOLUME_DELETING_FORMAT) throw Errors.volumeDeleting(objects.description);
  if (meta.format !== VOLUME_FORMAT) throw Errors.badVolume(objects.description, `${VOLUME_KEY} is not an s3nbd volume`);
  if (meta.version !== VOLUME_VERSION && meta.version !== VOLUME_VERSION_RAW) {
    throw Errors.badVolume(objects.description, `format version ${String(meta.version)} is not supported (this build reads ${VOLUME_VERSION_RAW} and ${VOLUME_VERSION})`);
  }
  const { id, size, extentSize, createdAt, origin } = meta;
  if (typeof id !== 'string' || typeof size !== 'number' || typeof extentSize !== 'number' || typeof createdAt !== 'string') {
    throw Errors.badVolume(objects.description, `${VOLUME_KEY} lacks id, size, extentSize or createdAt`);
  }
  checkGeometry(size, extentSize);
  const o = origin as Record<string, unknown> | undefined;
  if (o !== undefined && (typeof o !== 'object' || typeof o.store !== 'string' || typeof o.volumeId !== 'string' || typeof o.snapshot !== 'string')) {
    throw Errors.badVolume(objects.description, `${VOLUME_KEY}'s origin lacks store, volumeId or snapshot`);
  }
  const cloneOf = o ? { origin: { store: o.store as string, volumeId: o.volumeId as string, snapshot: o.snapshot as string } } : {};
  if (meta.version === VOLUME_VERSION_RAW) return { volume: { id, size, extentSize, createdAt, ...cloneOf }, data, tag };
  let settings: ObjectSettings;
  try {
    settings = parseObjectSettings(meta.objects);
  } catch (err) {
    throw Errors.badVolume(objects.description, `${VOLUME_KEY}: ${(err as Error).message}`);
  }
  return { volume: { id, size, extentSize, createdAt, objects: settings, ...cloneOf }, data, tag };
}

function matchRequest(objects: ObjectStore, volume: Volume, request: VolumeRequest): Volume {
  if (request.size !== undefined && request.size !== volume.size) {
    throw Errors.volumeConflict(objects.description, 'size', volume.size, request.size);
  }
  if (request.extentSize !== undefined && request.extentSize !== volume.extentSize) {
    throw Errors.volumeConflict(objects.description, 'extent size', volume.extentSize, request.extentSize);
  }
  return volume;
}

/**
 * Rewrites the metadata with a larger size (a volume grown at runtime), by compare-and-swap on
 * the metadata's tag, so that a concurrent change (`s3nbd key change`) is never overwritten;
 * then makes it durable. The caller holds the lease. Asking for the current size changes
 * nothing (a retried resize); a smaller one is refused (S3NBD_VOLUME_SHRINK). Only the size
 * changes: which extents exist is derived from it, and objects past the old end cannot exist
 * (nothing writes there before the metadata says the volume reaches that far).
 */
export async function growVolume(objects: ObjectStore, volumeId: string, size: number): Promise<Volume> {
  checkGeometry(size, undefined);
  for (let attempt = 0; ; attempt++) {
    const existing = await readVolume(objects);
    if (!existing) throw Errors.noVolume(objects.description);
    if (existing.volume.id !== volumeId) throw Errors.badVolume(objects.description, `it is now volume ${existing.volume.id}, not ${volumeId}`);
    const { volume } = existing;
    if (size < volume.size) throw Errors.volumeShrink(objects.description, volume.size, size);
    if (size === volume.size) return volume;
    const grown: Volume = { ...volume, size };
    if (await objects.putIf(VOLUME_KEY, volumeBody(grown), existing.tag) !== undefined) {
      await objects.flush();
      return grown;
    }
    // Changed between our read and our write: read it again, a few times at most.
    if (attempt >= 3) throw Errors.badVolume(objects.description, 'its metadata kept changing while it was being resized');
  }
}
