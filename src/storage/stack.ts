// The storage stack, assembled in one place, bottom to top:
//
//   ObjectStore         objects/    where bytes live: S3, a local directory, or memory
//   ObjectExtents       extents/    one object per extent; zero extents not stored; allocation bitmap
//   WriteBackCache      cache/      journal + disk cache: writes acknowledged locally, uploaded later
//     or DirectExtentStore extents/ read-modify-write of whole extents, every change put at once
//   ExtentDevice        the byte-addressed BlockDevice the NBD server serves
//
// volume/ holds what decides who may write the volume: its metadata, the writer lease, and
// the cache directory's identity and lock. snapshots/ holds the manifests of the volume's
// snapshots: every object one names is kept from the garbage collector, which only a writer
// runs, and only once it holds the lease and has counted every manifest (registry.ts).
//
// The write-back cache (and the cache directory's lock and the writer lease that protect it)
// is left out where it has no job: for the volatile memory store, for read-only serving, and
// for inspection (`s3nbd info`, which may run beside a gateway on its cache directory).

import type { Logger } from 'pino';
import type { VolumeTelemetry } from '../telemetry.ts';
import { Errors, UserError } from '../errors.ts';
import type { BlockDevice } from '../protocol/block-device.ts';
import { type CacheIdentity, claimCacheDir, prepareCacheDir } from './volume/cache-dir.ts';
import { lockCacheDir } from './volume/cache-lock.ts';
import { ExtentDevice } from './extent-device.ts';
import { FileObjectStore } from './objects/file-object-store.ts';
import { explainLocalError, explainS3Error } from './first-run-errors.ts';
import type { ExtentStore } from './extent-store.ts';
import { Lease } from './volume/lease.ts';
import { MemoryObjectStore } from './objects/memory-object-store.ts';
import { DirectExtentStore } from './extents/direct-extent-store.ts';
import { ObjectExtents } from './extents/extent-objects.ts';
import { RetainedObjects } from './extents/retained-objects.ts';
import { SnapshotRegistry } from './snapshots/registry.ts';
import { type CloneBase, openCloneBase } from './snapshots/clone.ts';
import { type SnapshotDevice, openSnapshotDevice } from './snapshots/snapshot-device.ts';
import type { Manifest } from './snapshots/manifest.ts';
import type { ObjectStore } from './objects/object-store.ts';
import { S3ObjectStore } from './objects/s3/s3-object-store.ts';
import { type S3Options, openObjectStore, parseS3Url } from './objects/store-url.ts';
import { DEFAULT_EXTENT_SIZE, type Volume, type VolumeRequest, extentCountOf, growVolume, openVolume } from './volume/volume.ts';
import { WriteBackCache, type WriteBackOptions } from './cache/write-back-cache.ts';
import { type ObjectRequest, newObjectSettings, openCodec } from './format/object-settings.ts';

/** The write-back cache's settings, and the lease's that protects it. */
export interface CacheConfig extends Pick<WriteBackOptions, 'cacheBytes' | 'maxDirtyBytes' | 'uploadConcurrency' | 'flushMode' | 'uploadDelayMs'> {
  readonly dir: string;
  readonly leaseTtlMs: number;
  readonly takeOver: boolean;
}

export interface StorageConfig {
  readonly store: string;
  readonly s3?: S3Options;
  readonly volume: VolumeRequest;
  /**
   * Compression, encryption and key asked for: a new volume's settings, checked against an
   * existing one's. Absent: inspection (`info`), which reads no extent and needs no key.
   */
  readonly objects?: ObjectRequest | undefined;
  readonly readOnly: boolean;
  /** Bytes of clean extents kept in memory. */
  readonly memoryCacheBytes: number;
  /** Absent: no write-back cache (inspection). */
  readonly cache?: CacheConfig | undefined;
  readonly log: Logger;
  /** Called when another gateway took the volume over (this one is fenced off). */
  readonly onFenced?: (by: string) => void;
  /** Called once if the cache's journal fails for good (the gateway should stop; status 4). */
  readonly onJournalFailed?: (err: Error) => void;
  /** Bound on the first contact with S3 (default FIRST_CONTACT_MS). */
  readonly firstContactMs?: number;
  /** Serve this snapshot, read-only, instead of the volume (no cache, no lease). */
  readonly snapshot?: string | undefined;
  /** Told what the layers do (S3 requests, uploads, fetches, cache lookups): the admin endpoint's metrics. Default none. */
  readonly telemetry?: VolumeTelemetry | undefined;
}

export interface Storage {
  readonly objects: ObjectStore;
  /** The volume's metadata as this gateway knows it: its size changes with grow(). */
  readonly volume: Volume;
  readonly created: boolean;
  readonly extents: ObjectExtents;
  /** A snapshot of this volume as a read-only device, decoded with the volume's codec. */
  openSnapshot(manifest: Manifest, memoryCacheBytes: number): SnapshotDevice;
  /** The volume's snapshots; a writer's has counted every one in extents.retained. */
  readonly snapshots: SnapshotRegistry;
  /** A clone's origins (none for a volume that is not one): its snapshots read through them too. */
  readonly clone: CloneBase;
  /** Present when writes go through the write-back cache. */
  readonly cache: WriteBackCache | undefined;
  readonly identity: CacheIdentity | undefined;
  /** The writer lease, held while the write-back cache is used; undefined without one. */
  readonly lease: Lease | undefined;
  readonly device: BlockDevice;
  /**
   * Grows the live volume to `size` bytes without a restart (see growStorage()); resolves the
   * volume as it is now. The current size changes nothing; a smaller one is refused
   * (S3NBD_VOLUME_SHRINK), as is a volume this process does not write (S3NBD_VOLUME_NOT_WRITABLE).
   */
  grow(size: number): Promise<Volume>;
  /**
   * Uploads dirty data for up to `timeoutMs`, then closes everything, in about that time
   * (plus at most RELEASE_MIN_MS for the lease) whatever S3 does. Resolves true if all was
   * uploaded.
   */
  close(drainTimeoutMs?: number): Promise<boolean>;
}

/** The least time the lease release gets when the drain used up the time allowed. */
const RELEASE_MIN_MS = 1000;

export const DEFAULT_MEMORY_CACHE = 1024 * 1024 * 1024;
/**
 * How long the first contact with S3 (reading the volume) may take, retries included. A wrong
 * endpoint that accepts connections but never answers would otherwise cost 6 attempts of 30 s
 * before the user hears anything; once S3 has answered, the normal retry policy applies.
 */
export const FIRST_CONTACT_MS = 10_000;

/**
 * How long after the lease is taken an earlier writer's upload may still land: its lease has
 * lapsed by a lifetime after ours was taken, and each S3 attempt ends within 30 s.
 */
const LATE_UPLOAD_MS = 60_000;

/**
 * Lists the store again once earlier writers' uploads cannot land any more (`recount`: it lists
 * the manifests and the extents again, and may start the collector); returns its cancel.
 */
function scheduleRecount(recount: () => Promise<void>, ms: number, log: Logger): () => Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const attempt = (delay: number): void => {
    timer = setTimeout(() => {
      recount().catch((err: unknown) => {
        log.warn({ err: (err as Error).message }, 'listing the store again failed; retrying in a minute (until then, zeroed extents get tombstones)');
        attempt(60_000);
      });
    }, delay);
    timer.unref();
  };
  attempt(ms);
  return () => {
    clearTimeout(timer);
    return Promise.resolve();
  };
}

/** Waits for `work` for at most `ms` (it goes on in the background, and is ended by closing the store). */
async function bounded(work: Promise<unknown>, ms: number): Promise<void> {
  // No deadline (a refused start closing what it opened): setTimeout(Infinity) would print a
  // TimeoutOverflowWarning on stderr, beside the start's one-line error.
  if (!Number.isFinite(ms)) {
    await work.catch(() => undefined);
    return;
  }
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([work.catch(() => undefined), new Promise((resolve) => { timer = setTimeout(resolve, ms); })]);
  clearTimeout(timer);
}

/** Connections to S3: uploads and fetches in flight at once, with room for reads beside uploads. */
export function s3ConnectionsFor(uploadConcurrency = 16): number {
  return uploadConcurrency * 2 + 16;
}

export async function openStorage(config: StorageConfig): Promise<Storage> {
  const { log } = config;
  const objects = openObjectStore(config.store, { maxSockets: s3ConnectionsFor(config.cache?.uploadConcurrency), ...config.s3, telemetry: config.telemetry }, log);
  const opened: Array<() => Promise<unknown>> = [() => objects.close()];
  /** Closes in reverse order of opening; each step (the lease release) may take until `deadline`. */
  const closeAll = async (deadline = Infinity): Promise<void> => {
    for (const close of opened.reverse()) await bounded(close(), Math.max(deadline - Date.now(), RELEASE_MIN_MS));
  };
  const checkCacheSize = (extentSize: number): void => {
    const c = config.cache;
    if (c && c.cacheBytes < c.maxDirtyBytes + 2 * extentSize) throw Errors.badCacheSize(c.cacheBytes, c.maxDirtyBytes, extentSize);
  };
  const firstContact = new AbortController();
  const firstContactTimer = setTimeout(() => firstContact.abort(new Error('first contact timed out')), config.firstContactMs ?? FIRST_CONTACT_MS);
  try {
    // Everything that can refuse the start is checked before the first write to the store, so a
    // refused start leaves nothing behind in the bucket: local checks first (they need no S3),
    // then S3's answers, and only then the volume is created and the lease taken.
    // Before a volume is created, with the extent size asked for; again once it is known.
    checkCacheSize(config.volume.extentSize ?? DEFAULT_EXTENT_SIZE);
    const writeBack = config.cache !== undefined && !config.readOnly && !(objects instanceof MemoryObjectStore);
    // First of all, before the bucket is touched: a second gateway on this cache directory is
    // refused here, having created no volume, written no lease and replayed no journal.
    let lockId: string | undefined;
    if (writeBack) {
      const lock = await lockCacheDir(config.cache.dir);
      lockId = lock.id;
      opened.push(() => lock.release());
    }
    // The directory is usable (made, writable) and which volume it belongs to, if any.
    const c = config.cache;
    const previous = writeBack && c ? await prepareCacheDir(c.dir) : undefined;
    // The first contact goes through a view of the store with a short retry budget (FIRST_CONTACT_MS).
    const firstReads = objects instanceof S3ObjectStore ? objects.withRetry({ maxAttempts: 4, signal: firstContact.signal, quiet: true }) : objects;
    const request = {
      writer: !config.readOnly, ...config.volume, readOnly: config.readOnly && config.volume.mode === 'open-or-create',
      // The volatile memory store keeps extents raw (format 1): nothing outside this process can
      // read or damage them, and its writes (DirectExtentStore: a put per write) would pay a
      // checksum and a compression of the whole extent each.
      newObjects: (volumeId: string) => (objects instanceof MemoryObjectStore ? Promise.resolve(undefined) : newObjectSettings(config.objects ?? {}, volumeId)),
    };
    const { volume, created } = await openVolume(firstReads, request, () => {
      // About to create a volume: a cache directory of another volume means a wrong --store.
      if (previous && c) throw Errors.cacheDirNotNew(c.dir, previous.volume, objects.description);
      return Promise.resolve();
    });
    clearTimeout(firstContactTimer);
    if (previous && c && previous.volume !== volume.id) throw Errors.cacheDirMismatch(c.dir, previous.volume, volume.id);
    // The key is checked here, before the lease is taken: a wrong one changes nothing.
    const codec = await openCodec(volume, config.objects, objects.description);
    // A clone reads what it has not written from its origin's snapshot (snapshots/clone.ts).
    const clone = await openCloneBase(volume, config.s3 ?? {}, log, config.objects);
    opened.push(() => clone.close());
    const snapshots = new SnapshotRegistry(objects, volume, clone.descriptors);
    const openSnapshot = (manifest: Manifest, memoryCacheBytes: number): SnapshotDevice =>
      openSnapshotDevice(objects, volume, manifest, memoryCacheBytes, codec, clone.sources);
    if (config.snapshot !== undefined) {
      const manifest = await snapshots.load(config.snapshot);
      if (!manifest) throw Errors.noSnapshot(objects.description, config.snapshot);
      const snapshot = openSnapshot(manifest, config.memoryCacheBytes);
      return {
        objects, volume, created, extents: snapshot.extents, snapshots, clone, openSnapshot, cache: undefined, identity: undefined, lease: undefined, device: snapshot.device,
        grow: () => Promise.reject(Errors.volumeNotWritable(objects.description, 'this gateway serves a snapshot, which never changes')),
        async close() {
          await closeAll();
          return true;
        },
      };
    }
    // A writer that takes the lease may find an earlier writer's uploads landing after its
    // listing: it knows every object only after recount() (see extent-objects.ts). It collects
    // garbage only once it holds the lease and has counted every snapshot (below); readers never.
    const extents = await ObjectExtents.open(objects, {
      extentSize: volume.extentSize, extentCount: extentCountOf(volume), volumeId: volume.id, complete: !writeBack,
      retained: new RetainedObjects(), collect: false, codec, log, telemetry: config.telemetry, sources: clone.sources, base: clone.base,
    });
    opened.push(() => extents.close());
    let cache: WriteBackCache | undefined;
    let identity: CacheIdentity | undefined;
    let heldLease: Lease | undefined;
    if (writeBack && c) {
      checkCacheSize(volume.extentSize);
      identity = await claimCacheDir(c.dir, volume);
      const lease = await Lease.acquire(objects, {
        owner: identity.gateway, lockId, ttlMs: c.leaseTtlMs, takeOver: c.takeOver, log, minEpoch: extents.maxEpoch + 1,
        onLost: (by) => {
          cache?.fence(by);
          config.onFenced?.(by);
        },
      });
      opened.push(() => lease.release());
      heldLease = lease;
      extents.useEpoch(lease.epoch);
      await snapshots.retainAll(extents.retained);
      // On S3 a dead holder's manifest PUT may still land until lease.lateUntil (a `snapshot
      // create` killed with it in flight): collecting waits until it cannot, and the manifests
      // are counted again first. A directory store has no requests in flight once their writer
      // is dead.
      const lateManifests = !(objects instanceof FileObjectStore) && lease.lateUntil > Date.now();
      if (!lateManifests) extents.startCollecting();
      opened.push(scheduleRecount(async () => {
        if (lateManifests) await snapshots.retainAll(extents.retained);
        await extents.recount();
        extents.startCollecting();
      }, Math.max(c.leaseTtlMs + LATE_UPLOAD_MS, lease.lateUntil - Date.now()), log));
      cache = await WriteBackCache.open(extents, {
        cacheDir: c.dir, cacheBytes: c.cacheBytes, memoryCacheBytes: config.memoryCacheBytes,
        maxDirtyBytes: c.maxDirtyBytes, uploadConcurrency: c.uploadConcurrency, flushMode: c.flushMode,
        uploadDelayMs: c.uploadDelayMs, log, telemetry: config.telemetry, mayUpload: () => lease.isValid(),
        ...config.onJournalFailed ? { onFailed: config.onJournalFailed } : {},
      });
    }
    if (!writeBack && !config.readOnly) {
      // No write-back cache, no lease: the volatile memory store, which no other process can reach.
      await snapshots.retainAll(extents.retained);
      extents.startCollecting();
    }
    const stackTop: ExtentStore = cache ?? new DirectExtentStore(extents, config.memoryCacheBytes);
    const device = new ExtentDevice(stackTop, volume.size, config.readOnly);
    const openedCache = cache;
    let current = volume;
    let growing: Promise<unknown> = Promise.resolve();
    const grow = (size: number): Promise<Volume> => {
      // One at a time: each reads the metadata the one before wrote.
      const done = growing.then(async () => {
        if (config.readOnly) throw Errors.volumeNotWritable(objects.description, 'this gateway serves it --read-only');
        if (heldLease && !heldLease.isValid()) throw Errors.volumeNotWritable(objects.description, 'this gateway does not hold its lease now (lost, or not renewed lately)');
        current = await growStorage({ objects, volume: current, extents, snapshots, device }, size);
        return current;
      });
      growing = done.catch(() => undefined);
      return done;
    };
    return {
      objects, created, extents, snapshots, clone, openSnapshot, cache, identity, lease: heldLease, device, grow,
      get volume() {
        return current;
      },
      async close(drainTimeoutMs = 0) {
        const deadline = Date.now() + drainTimeoutMs;
        let drained = true;
        if (openedCache) {
          if (drainTimeoutMs > 0) drained = await openedCache.drain(drainTimeoutMs);
          const uploadsInFlight = openedCache.status().uploadsInFlight;
          const closing = openedCache.close(); // no new uploads from here on
          if (uploadsInFlight > 0) {
            // The time is up and uploads hang on S3: cut them off (closing the store ends every
            // request in flight), or the cache would wait for them for minutes. The journal
            // keeps what they carried. The lease is then not released but left to expire: a
            // PUT already sent may still land, and must not land after a successor's.
            log.warn({ uploadsInFlight }, 'stopping uploads in flight; the lease is left to expire (the journal keeps their data for the next start)');
            await objects.close();
          }
          await closing;
          await extents.flush();
        } else {
          await stackTop.close();
        }
        await closeAll(deadline);
        return drained;
      },
    };
  } catch (err) {
    clearTimeout(firstContactTimer);
    await closeAll();
    throw await explain(err, config, objects, firstContact.signal.aborted);
  }
}

/**
 * Grows a live volume. The order is what makes a crash anywhere in it safe: first the metadata
 * (a compare-and-swap, durable before anything else), then the layers bottom up, the extent
 * layer's census and allocation map, then the device, whose size new connections negotiate.
 * Until the device grows, no request reaches the new extents, so the journal never holds a
 * record past the end the metadata gives: killed before the metadata is durable, the volume
 * is as it was; killed after, it opens at the new size with every acknowledged write (the
 * journal's records carry extent indexes and replay against whatever size the volume has,
 * and it never shrinks). The write-back cache and DirectExtentStore take their extent count
 * from the extent layer, so they learn it at once.
 */
async function growStorage(parts: { objects: ObjectStore; volume: Volume; extents: ObjectExtents; snapshots: SnapshotRegistry; device: ExtentDevice }, size: number): Promise<Volume> {
  const grown = await growVolume(parts.objects, parts.volume.id, size);
  parts.extents.grow(extentCountOf(grown));
  parts.snapshots.grew(grown);
  parts.device.grow(grown.size);
  return grown;
}

/** The error as users should read it: a UserError with its fix where the failure is a known first-run one. */
export async function explain(err: unknown, config: Pick<StorageConfig, 'store' | 's3' | 'cache' | 'firstContactMs'>, objects: ObjectStore, timedOut: boolean): Promise<unknown> {
  if (err instanceof UserError) return err;
  if (err instanceof Error && /region is missing/i.test(err.message)) return Errors.noRegion(objects.description);
  if (objects instanceof S3ObjectStore) {
    const endpoint = config.s3?.endpoint ?? process.env.AWS_ENDPOINT_URL_S3 ?? process.env.AWS_ENDPOINT_URL;
    const place = { description: objects.description, bucket: parseS3Url(config.store).bucket, endpoint };
    if (timedOut) return Errors.s3Unreachable(objects.description, `no answer within ${(config.firstContactMs ?? FIRST_CONTACT_MS) / 1000} s`);
    const s3 = explainS3Error(err, place);
    if (s3) return s3;
  }
  const places = [
    ...config.cache ? [{ option: '--cache-dir', path: config.cache.dir }] : [],
    ...objects instanceof FileObjectStore ? [{ option: '--store', path: objects.root }] : [],
  ];
  return await explainLocalError(err, places) ?? err;
}
