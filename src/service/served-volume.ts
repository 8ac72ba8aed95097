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
import type { Readiness, VolumeStatus, VolumeView } from './gateway-view.ts';
import type { VolumeMetrics } from './metrics.ts';
import { servedVolumeView, volumeLabel } from './volume-view.ts';
import { VolumeCounters } from './volume-counters.ts';
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
  /** The volume's metrics (the admin endpoint's); without them its status still counts what it shows. */
  readonly telemetry?: VolumeMetrics | undefined;
  readonly onFenced?: (by: string) => void;
  readonly onJournalFailed?: (err: Error) => void;
}

export class ServedVolume implements VolumeView {
  /** As the admin endpoint and the metrics name it: the export's name ("default" for ""). */
  readonly name: string;
  readonly storage: Storage;
  /** The volume's own export (or the snapshot's, with --snapshot). */
  readonly main: Export;
  readonly exports: ExportRegistry;
  private readonly config: ServedVolumeConfig;
  private readonly drops = new Set<() => void>();
  private stopServices: (() => Promise<void>) | undefined;
  private closing = false;
  /** Live status and readiness (volume-status.ts, readiness.ts). */
  private readonly view: VolumeView;

  private constructor(config: ServedVolumeConfig, storage: Storage, main: Export, exports: ExportRegistry, counters: VolumeCounters) {
    this.config = config;
    this.name = volumeLabel(main.name);
    this.storage = storage;
    this.main = main;
    this.exports = exports;
    this.view = servedVolumeView({
      name: volumeLabel(main.name), storage, counters, connections: () => this.connections, stopping: () => this.closing,
    });
  }

  /** Opens the volume's storage (creating the volume when the request allows); its services start with start(). */
  static async open(config: ServedVolumeConfig): Promise<ServedVolume> {
    // The volume object is made last: a client attaches only once it is there, and a fence
    // before then (while openStorage replays the journal) reaches config.onFenced alone.
    const ref: { self?: ServedVolume } = {};
    const { budgets, cache } = config;
    const counters = config.telemetry?.counters ?? new VolumeCounters();
    const telemetry = config.telemetry ?? counters;
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
      telemetry,
      onFenced: (by) => config.onFenced?.(by),
      ...config.onJournalFailed ? { onJournalFailed: config.onJournalFailed } : {},
    });
    const { volume } = storage;
    // NBD requests are counted by the metrics alone (the status shows none of them).
    const extras = { ...config.telemetry ? { telemetry: config.telemetry } : {}, attach: (drop: () => void) => ref.self!.attach(drop) };
    const counted = (exp: Export): Export => ({ ...exp, ...extras });
    let main: Export;
    let registry: ExportRegistry;
    if (config.snapshot === undefined) {
      // The description is read when a client asks: it gives the size the volume has grown to.
      main = { name: config.name, get description() { return `s3nbd volume ${volume.id}, ${formatBytes(storage.volume.size)}`; }, device: storage.device, ...extras };
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
    ref.self = new ServedVolume(config, storage, main, exports, counters);
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

  /** Data written but not yet uploaded. */
  dirtyBytes(): number {
    return this.storage.cache?.status().dirtyBytes ?? 0;
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

  /** The memory cache's budget, with a memory: store's data (Buffers the governor counts, and must leave be). */
  memoryCacheBytes(): number {
    return this.config.budgets.memoryCacheBytes + this.volatileBytes();
  }

  /** memoryOptions() as bytes, with the server's `inFlightBytes`; the volatile store's volume is Buffers too. */
  bufferBytes(inFlightBytes: number): number {
    return bufferBudgetBytes({ ...this.memoryOptions(), inFlightBytes }) + this.volatileBytes();
  }

  /** A memory: store holds the whole volume in Buffers. */
  private volatileBytes(): number {
    return this.storage.objects instanceof MemoryObjectStore ? this.storage.volume.size : 0;
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
    this.closing = true;
    const stop = this.stopServices;
    this.stopServices = undefined;
    await stop?.();
    const drained = await this.storage.close(drainMs);
    if (stop) await rm(join(this.config.cache.dir, 'status.json'), { force: true });
    return drained;
  }

  status(): Promise<VolumeStatus> {
    return this.view.status();
  }

  readiness(): Promise<Readiness> {
    return this.view.readiness();
  }
}

/** The gateway's S3 options without the read timeout (what gatewayControl looks for clones with). */
function stripTimeout(s3: S3Options): S3Options {
  const { readTimeoutMs: _, ...rest } = s3;
  return rest;
}
