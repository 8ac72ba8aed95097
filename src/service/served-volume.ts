// One volume a gateway serves: its storage stack (openStorage), its exports (the volume and
// its snapshots, snapshot-exports.ts), and what runs beside them while it is served: the
// control socket in its cache directory (snapshot commands reach the gateway there), the
// automatic snapshots, and `status.json` for `s3nbd info --cache-dir`. `serve --store` has one;
// `serve --volumes` one per volume under the prefix (volume-set.ts). The process-wide parts
// (listening, signals, exit statuses, the memory governor) stay with the caller.

import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { realClock } from '../clock.ts';
import { listenControl } from '../control/control-socket.ts';
import { startAutoSnapshots } from '../cli/auto-snapshots.ts';
import { gatewayControl } from '../cli/gateway-control.ts';
import { formatBytes } from '../cli/parse.ts';
import { GatewayExports, snapshotDescription } from '../cli/snapshot-exports.ts';
import { bufferBudgetBytes, type MemoryOptions } from '../memory-budget.ts';
import type { Export, ExportListing, ExportRegistry } from '../protocol/handshake.ts';
import type { ObjectRequest } from '../storage/format/object-settings.ts';
import { MemoryObjectStore } from '../storage/objects/memory-object-store.ts';
import type { S3Options } from '../storage/objects/store-url.ts';
import type { RetentionPolicy } from '../storage/snapshots/retention.ts';
import { type CacheConfig, type Storage, openStorage, s3ConnectionsFor } from '../storage/stack.ts';
import { writeAtomically } from '../storage/volume/cache-dir.ts';
import type { VolumeRequest } from '../storage/volume/volume.ts';
import type { GatewayView, Readiness, VolumeStatus, VolumeView } from './gateway-view.ts';
import type { VolumeBudgets } from './volume-shares.ts';

const STATUS_INTERVAL_MS = 2_000;

export interface ServedVolumeConfig {
  /** The export name. */
  readonly name: string;
  readonly store: string;
  /** The S3 options of the store (read timeout included). */
  readonly s3: S3Options;
  readonly volume: VolumeRequest;
  readonly objects: ObjectRequest;
  readonly readOnly: boolean;
  /** Serve this snapshot alone, read-only, as NAME@SNAPSHOT (serve --snapshot). */
  readonly snapshot?: string | undefined;
  readonly budgets: VolumeBudgets;
  readonly cache: Omit<CacheConfig, 'cacheBytes' | 'maxDirtyBytes' | 'uploadConcurrency'>;
  /** The empty export name "" (and "@SNAPSHOT") selects this volume: one volume per gateway. */
  readonly answersDefault: boolean;
  readonly autoSnapshots?: { readonly everyMs: number; readonly policy: RetentionPolicy } | undefined;
  readonly log: Logger;
  readonly onFenced?: (by: string) => void;
  readonly onJournalFailed?: (err: Error) => void;
}

export class ServedVolume implements VolumeView {
  readonly name: string;
  readonly storage: Storage;
  /** The volume's own export (or the snapshot's, with --snapshot). */
  readonly main: Export;
  readonly exports: ExportRegistry;
  private readonly config: ServedVolumeConfig;
  private readonly drops = new Set<() => void>();
  private lease: VolumeStatus['lease'];
  private stopServices: (() => Promise<void>) | undefined;

  private constructor(config: ServedVolumeConfig, storage: Storage, main: Export, exports: ExportRegistry) {
    this.config = config;
    this.name = config.name;
    this.storage = storage;
    this.main = main;
    this.exports = exports;
    this.lease = storage.cache ? 'held' : 'none';
  }

  /** Opens the volume's storage (creating the volume when the request allows); its services start with start(). */
  static async open(config: ServedVolumeConfig): Promise<ServedVolume> {
    // The volume object is made last: a client attaches only once it is there, and a fence
    // before then (while openStorage replays the journal) reaches config.onFenced alone.
    const ref: { self?: ServedVolume } = {};
    const { budgets, cache } = config;
    const storage = await openStorage({
      store: config.store,
      s3: config.s3,
      volume: config.volume,
      objects: config.objects,
      readOnly: config.readOnly,
      snapshot: config.snapshot,
      memoryCacheBytes: budgets.memoryCacheBytes,
      cache: { ...cache, cacheBytes: budgets.cacheBytes, maxDirtyBytes: budgets.maxDirtyBytes, uploadConcurrency: budgets.uploadConcurrency },
      log: config.log,
      onFenced: (by) => {
        if (ref.self) ref.self.lease = 'lost';
        config.onFenced?.(by);
      },
      ...config.onJournalFailed ? { onJournalFailed: config.onJournalFailed } : {},
    });
    const { volume } = storage;
    const counted = (exp: Export): Export => ({ ...exp, attach: (drop) => ref.self!.attach(drop) });
    let main: Export;
    let registry: ExportRegistry;
    if (config.snapshot === undefined) {
      main = counted({ name: config.name, description: `s3nbd volume ${volume.id}, ${formatBytes(volume.size)}`, device: storage.device });
      registry = new GatewayExports(main, storage, config.log, undefined, config.answersDefault);
    } else {
      const manifest = (await storage.snapshots.load(config.snapshot))!;
      const alone = counted({ name: `${config.name}@${config.snapshot}`, description: snapshotDescription(manifest, volume.id), device: storage.device });
      main = alone;
      registry = { find: (name) => ((name === '' && config.answersDefault) || name === alone.name ? alone : undefined), list: () => [alone] };
    }
    // Snapshot exports are counted as the volume's connections too (a deletion drops them).
    // One wrapper per export: the handshake knows an export again by identity (the meta
    // contexts a client set for it).
    const wrapped = new WeakMap<Export, Export>();
    const exports: ExportRegistry = {
      find: async (name) => {
        const exp = await registry.find(name);
        if (!exp || exp === main) return exp;
        let outer = wrapped.get(exp);
        if (!outer) wrapped.set(exp, outer = counted(exp));
        return outer;
      },
      list: (): Promise<readonly ExportListing[]> => Promise.resolve(registry.list()),
    };
    ref.self = new ServedVolume(config, storage, main, exports);
    return ref.self;
  }

  private attach(drop: () => void): () => void {
    this.drops.add(drop);
    return () => this.drops.delete(drop);
  }

  /** Clients connected to the volume or one of its snapshots. */
  get connections(): number {
    return this.drops.size;
  }

  /** Drops every client connection (a forced deletion). */
  dropConnections(): void {
    for (const drop of this.drops) drop();
  }

  /** What the volume's buffers may add up to (memory-budget.ts), without the server's in-flight payloads. */
  memoryOptions(): MemoryOptions {
    const { budgets } = this.config;
    return {
      memoryCacheBytes: budgets.memoryCacheBytes, extentSize: this.storage.volume.extentSize, uploadConcurrency: budgets.uploadConcurrency,
      s3Connections: /^s3:\/\//i.test(this.config.store) ? s3ConnectionsFor(budgets.uploadConcurrency) : 0,
    };
  }

  /** memoryOptions() as bytes, with the server's `inFlightBytes`; the volatile store's volume is Buffers too. */
  bufferBytes(inFlightBytes: number): number {
    return bufferBudgetBytes({ ...this.memoryOptions(), inFlightBytes }) + (this.storage.objects instanceof MemoryObjectStore ? this.storage.volume.size : 0);
  }

  /**
   * Starts what runs beside the exports: the control socket (snapshot commands) and the
   * automatic snapshots, and status.json, all in the volume's cache directory. Only a
   * writer with a write-back cache has them.
   */
  async start(): Promise<void> {
    const { storage, config } = this;
    const { log } = config;
    if (!storage.cache) return;
    const dir = config.cache.dir;
    const control = gatewayControl(storage, log, stripTimeout(config.s3));
    const closeControl = await listenControl(dir, control, log);
    const auto = config.autoSnapshots;
    const stopAuto = auto
      ? startAutoSnapshots({ clock: realClock, everyMs: auto.everyMs, policy: auto.policy, control, list: () => storage.snapshots.loadAll(), log })
      : undefined;
    const statusPath = join(dir, 'status.json');
    const timer = setInterval(() => {
      const status = { pid: process.pid, updatedAt: new Date().toISOString(), ...storage.cache!.status() };
      writeAtomically(statusPath, `${JSON.stringify(status)}\n`).catch(() => undefined);
    }, STATUS_INTERVAL_MS);
    timer.unref();
    this.stopServices = async () => {
      await stopAuto?.();
      await closeControl?.();
      clearInterval(timer);
    };
  }

  /** Stops the services, uploads dirty data for up to `drainMs`, closes the storage; resolves true if all was uploaded. */
  async close(drainMs: number): Promise<boolean> {
    const stop = this.stopServices;
    this.stopServices = undefined;
    await stop?.();
    const drained = await this.storage.close(drainMs);
    if (stop) await rm(join(this.config.cache.dir, 'status.json'), { force: true });
    return drained;
  }

  // TODO(issue 18, admin helper): replace with the admin helper's VolumeStatus from a Storage
  // (reads by source and S3 counts come from the telemetry hooks it adds).
  async status(): Promise<VolumeStatus> {
    const { storage } = this;
    const cache = storage.cache?.status();
    const stats = (storage.objects as { stats?: { get: number; put: number; delete: number; list: number; retries: number; exhausted: number } }).stats;
    const snapshots = this.config.snapshot === undefined ? await storage.snapshots.loadAll().catch(() => []) : [];
    return {
      name: this.name, volumeId: storage.volume.id, store: storage.objects.description, size: storage.volume.size,
      extentSize: storage.volume.extentSize, readOnly: this.config.readOnly || this.config.snapshot !== undefined, lease: this.lease,
      connections: this.connections, storedExtents: storage.extents.allocatedCount,
      ...cache ? {
        cache: {
          dirtyBytes: cache.dirtyBytes, dirtyExtents: cache.dirtyExtents, oldestDirtySeconds: 0, uploadsInFlight: cache.uploadsInFlight,
          uploadedExtents: cache.uploadedExtents, uploadedBytes: cache.uploadedExtents * storage.volume.extentSize, uploadFailures: cache.uploadFailures,
          journalBytes: cache.journalBytes, cachedExtents: cache.cachedExtents, cacheSlots: cache.cacheSlots,
        },
      } : {},
      reads: { memory: 0, disk: 0, miss: 0 },
      s3: stats ? { requests: stats.get + stats.put + stats.delete + stats.list, errors: stats.exhausted, retries: stats.retries } : { requests: 0, errors: 0, retries: 0 },
      snapshots: snapshots.map((m) => ({ name: m.name, createdAt: m.createdAt })).sort((a, b) => a.createdAt.localeCompare(b.createdAt)),
    };
  }

  readiness(): Promise<Readiness> {
    if (this.lease === 'lost') return Promise.resolve({ ready: false, reason: 'fenced off: another gateway took the volume over' });
    return Promise.resolve({ ready: true });
  }
}

/** The gateway's S3 options without the read timeout (what gatewayControl looks for clones with). */
function stripTimeout(s3: S3Options): S3Options {
  const { readTimeoutMs: _, ...rest } = s3;
  return rest;
}

/** What the admin endpoint sees of a gateway serving one volume (serve --store): that volume, no volume operations. */
export function singleVolumeView(volume: ServedVolume): GatewayView {
  return { volumes: () => [volume], skipped: () => [] };
}
