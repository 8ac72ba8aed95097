// A volume is described by one metadata object, written once when the volume is created:
//
//   s3nbd-volume.json  {"format":"s3nbd-volume","version":2,"id":"<uuid>","size":<bytes>,
//                       "extentSize":<bytes>,"createdAt":"<ISO 8601>",
//                       "origin":{"store":"<URL>","volumeId":"<uuid>","snapshot":"<name>"}}
//
// `origin` only for a clone (s3nbd clone, docs/format.md "Clones"): the snapshot whose objects
// it reads for the extents it has not written, in the volume at that store (an absolute
// directory path or an s3:// URL, opened with the clone's own S3 options).
//
// Version 2 is the bucket format of docs/format.md (immutable extent generations). A volume of
// version 1 is upgraded when a writer opens it: its metadata is replaced by version 2's with a
// compare-and-swap, before anything else is written, so that builds of version 1 refuse the
// volume from then on instead of writing keys version 2 does not read. Its extent objects
// stay and read as generation 0. Readers (--read-only, info) leave it as it is.
//
// It is created with a conditional put, so two gateways racing to create the same volume
// agree on one description. Serving reads it and checks any size the user asked for. Before
// a writer relies on conditional puts (the lease), the store shows that it refuses one whose
// condition fails (ObjectStore.checkConditionalWrites): an S3 server that ignored them would
// let two gateways write at once.

import { randomUUID } from 'node:crypto';
import { Errors, UserError } from '../../errors.ts';
import type { ObjectStore } from '../objects/object-store.ts';

export const VOLUME_KEY = 's3nbd-volume.json';
export const VOLUME_FORMAT = 's3nbd-volume';
export const VOLUME_VERSION = 2;
/** Versions this build reads (and upgrades to VOLUME_VERSION when it writes). */
const READABLE_VERSIONS: readonly unknown[] = [1, 2];
export const DEFAULT_EXTENT_SIZE = 1024 * 1024;
export const MIN_EXTENT_SIZE = 4096;
export const MAX_EXTENT_SIZE = 32 * 1024 * 1024;
export const MAX_DEVICE_SIZE = 2 ** 50;

export interface Volume {
  readonly id: string;
  readonly size: number;
  readonly extentSize: number;
  readonly createdAt: string;
  /** The bucket format: 1 until a writer upgrades it (docs/format.md). */
  readonly version: number;
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
      if (volume.version < VOLUME_VERSION) return { volume: await upgrade(objects, existing), created: false };
      await checkConditions(objects, existing.data, false);
      return { volume, created: false };
    }
    if (request.readOnly) throw Errors.noVolumeReadOnly(objects.description);
    if (request.mode === 'open' || request.size === undefined) throw Errors.noVolume(objects.description);
  } else if (request.size === undefined) {
    throw Errors.noVolume(objects.description);
  }
  await beforeCreate();
  const volume: Volume = {
    id: request.clone?.id ?? randomUUID(),
    size: request.size,
    extentSize: request.extentSize ?? DEFAULT_EXTENT_SIZE,
    createdAt: new Date().toISOString(),
    version: VOLUME_VERSION,
    ...request.clone ? { origin: request.clone.origin } : {},
  };
  const body = serialize(volume);
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

function serialize(volume: Volume): Buffer {
  const { version, ...rest } = volume;
  return Buffer.from(`${JSON.stringify({ format: VOLUME_FORMAT, version, ...rest })}\n`);
}

/**
 * Replaces a version 1 volume's metadata by version 2's (see the top of the file). The check of
 * conditional writes comes first: the upgrade itself is a compare-and-swap.
 */
async function upgrade(objects: ObjectStore, existing: { volume: Volume; data: Buffer }): Promise<Volume> {
  await checkConditions(objects, existing.data, false);
  const volume: Volume = { ...existing.volume, version: VOLUME_VERSION };
  const current = await objects.getTagged(VOLUME_KEY);
  const written = current?.data.equals(existing.data) === true && await objects.putIf(VOLUME_KEY, serialize(volume), current.tag) !== undefined;
  if (!written) {
    // Changed since we read it: another gateway of this version upgraded it first, or worse.
    const now = await readVolume(objects);
    if (now?.volume.version === VOLUME_VERSION && now.volume.id === existing.volume.id) return now.volume;
    throw Errors.badVolume(objects.description, 'it changed while being upgraded');
  }
  await objects.flush();
  return volume;
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

/** The volume in the store, or undefined when there is none. */
export async function readVolume(objects: ObjectStore): Promise<{ volume: Volume; data: Buffer } | undefined> {
  const data = await objects.get(VOLUME_KEY);
  if (!data) return undefined;
  let meta: Record<string, unknown>;
  try {
    meta = JSON.parse(data.toString('utf8')) as Record<string, unknown>;
  } catch {
    throw Errors.badVolume(objects.description, `${VOLUME_KEY} is not JSON`);
  }
  if (meta.format !== VOLUME_FORMAT) throw Errors.badVolume(objects.description, `${VOLUME_KEY} is not an s3nbd volume`);
  if (!READABLE_VERSIONS.includes(meta.version)) {
    throw Errors.badVolume(objects.description, `format version ${String(meta.version)} is not supported (this build reads ${READABLE_VERSIONS.join(' and ')})`);
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
  const volume: Volume = { id, size, extentSize, createdAt, version: meta.version as number };
  return { volume: o ? { ...volume, origin: { store: o.store as string, volumeId: o.volumeId as string, snapshot: o.snapshot as string } } : volume, data };
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
