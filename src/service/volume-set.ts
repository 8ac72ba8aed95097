// Every volume under a store prefix, served by one gateway (`serve --volumes URL`): volume
// `<name>` lives at `<URL>/<name>` and is the export `<name>` (its snapshots `<name>@<snapshot>`),
// with its own metadata, lease, journal and cache directory `<cache-dir>/volumes/<name>`, and
// one share of the gateway's budgets (volume-shares.ts).
//
// A volume that cannot be opened (unreadable metadata, a lease another gateway holds, a wrong
// key) is logged as one error line with its code and kept in skipped(); the others are served.
// A volume fenced off or whose journal fails later is closed and skipped alike: in this mode
// one volume's trouble never stops the gateway. The empty export name "" is refused
// (NBD_REP_ERR_UNKNOWN): which volume it would pick would change as volumes come and go.

import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { type ControlHandler, listenControl } from '../control/control-socket.ts';
import { Errors, UserError } from '../errors.ts';
import { gatewayBufferBytes } from '../memory-budget.ts';
import type { ExportRegistry } from '../protocol/handshake.ts';
import type { ObjectRequest } from '../storage/format/object-settings.ts';
import type { S3Options } from '../storage/objects/store-url.ts';
import type { RetentionPolicy } from '../storage/snapshots/retention.ts';
import type { CacheConfig } from '../storage/stack.ts';
import { lockCacheDir } from '../storage/volume/cache-lock.ts';
import { checkVolumeName, checkVolumesStore, discoverVolumes } from '../storage/volume/volume-names.ts';
import { DEFAULT_EXTENT_SIZE } from '../storage/volume/volume.ts';
import type { GatewayView, SkippedVolume, VolumeAdmin, VolumeStatus } from './gateway-view.ts';
import { ServedVolume } from './served-volume.ts';
import type { Metrics } from './metrics.ts';
import { volumeControl } from './volume-control.ts';
import { type VolumePrefix, checkDeletable, deleteVolume, listVolumes, openVolumePrefix } from './volume-ops.ts';
import { type VolumeBudgets, shareOf } from './volume-shares.ts';

export interface VolumeSetConfig {
  /** --volumes: s3://BUCKET/PREFIX or a directory. */
  readonly url: string;
  /** S3 options, the read timeout included. */
  readonly s3: S3Options;
  readonly objects: ObjectRequest;
  readonly readOnly: boolean;
  /** The gateway's totals, divided into --max-volumes shares. */
  readonly totals: VolumeBudgets;
  readonly maxVolumes: number;
  /** The gateway's cache directory: each volume's is `volumes/<name>` in it. */
  readonly cacheDir: string;
  readonly cache: Omit<CacheConfig, 'dir' | 'cacheBytes' | 'maxDirtyBytes' | 'uploadConcurrency'>;
  readonly autoSnapshots?: { readonly everyMs: number; readonly policy: RetentionPolicy } | undefined;
  readonly log: Logger;
  /** The admin endpoint's metrics: each volume reports to its own series, removed when it is deleted. */
  readonly metrics?: Metrics | undefined;
  /**
   * What the gateway's control socket `<cache-dir>/control.sock` answers (the volume commands
   * reach the gateway there); default volumeSetControl.
   */
  readonly control?: (set: VolumeSet) => ControlHandler;
}

export class VolumeSet implements GatewayView {
  readonly admin: VolumeAdmin;
  readonly exports: ExportRegistry;
  readonly shares: VolumeBudgets;
  private readonly config: VolumeSetConfig;
  private readonly prefix: VolumePrefix;
  private readonly served = new Map<string, ServedVolume>();
  /** The volumes a close() is draining (served is empty by then). */
  private draining: readonly ServedVolume[] = [];
  private readonly skippedVolumes = new Map<string, SkippedVolume>();
  /** Names being created or deleted: a second operation on one is refused meanwhile. */
  private readonly busy = new Set<string>();
  private closing = false;
  private closeControl: (() => Promise<void>) | undefined;

  private constructor(config: VolumeSetConfig, prefix: VolumePrefix) {
    this.config = config;
    this.prefix = prefix;
    this.shares = shareOf(config.totals, config.maxVolumes);
    this.admin = {
      create: (name, size, extentSize) => this.create(name, size, extentSize),
      resize: (name, size) => this.resize(name, size),
      delete: (name, options) => this.delete(name, options?.force ?? false, options?.withSnapshots ?? false),
    };
    this.exports = {
      // "<name>" or "<name>@<snapshot>"; "" and "@<snapshot>" name no volume here.
      find: (exportName) => this.served.get(exportName.split('@', 1)[0]!)?.exports.find(exportName),
      list: async () => {
        const lists = await Promise.all([...this.served.values()].sort(byName).map((v) => Promise.resolve(v.exports.list())));
        return lists.flat();
      },
    };
  }

  /**
   * Locks the gateway's cache directory, finds the volumes under the prefix and opens each,
   * then listens on the gateway's control socket; resolves once every volume was opened or
   * skipped.
   */
  static async open(config: VolumeSetConfig): Promise<VolumeSet> {
    const { cacheBytes, maxDirtyBytes } = config.totals;
    const share = shareOf(config.totals, config.maxVolumes);
    if (share.cacheBytes < share.maxDirtyBytes + 2 * DEFAULT_EXTENT_SIZE) throw Errors.badCacheShare(cacheBytes, maxDirtyBytes, config.maxVolumes, DEFAULT_EXTENT_SIZE);
    const prefix = openVolumesPrefix(config);
    const store = prefix.root;
    // The gateway's own lock: one gateway per cache directory (and its control socket).
    const lock = await lockCacheDir(config.cacheDir).catch(async (err: unknown) => {
      await prefix.close();
      throw err;
    });
    const set = new VolumeSet(config, prefix);
    set.closeControl = () => lock.release();
    try {
      await checkVolumesStore(config.url, store);
      const found = await discoverVolumes(store);
      for (const name of found.badNames) set.skip(name, Errors.badVolumeName(name));
      const names = found.volumes.slice(0, config.maxVolumes);
      for (const name of found.volumes.slice(config.maxVolumes)) set.skip(name, Errors.tooManyVolumes(config.maxVolumes));
      await Promise.all(names.map(async (name) => {
        try {
          set.served.set(name, await set.openVolume(name, { mode: 'open' }));
        } catch (err) {
          set.skip(name, err);
        }
      }));
      const control = await listenControl(config.cacheDir, (config.control ?? volumeSetControl)(set), config.log);
      set.closeControl = async () => {
        await control?.();
        await lock.release();
      };
    } catch (err) {
      await set.close(0);
      throw err;
    }
    return set;
  }

  volumes(): readonly ServedVolume[] {
    return [...this.served.values()].sort(byName);
  }

  skipped(): readonly SkippedVolume[] {
    return [...this.skippedVolumes.values()].sort(byName);
  }

  /** The governor's budget: every volume's buffers, and the server's in-flight payloads once. */
  bufferBytes(inFlightBytes: number): number {
    return gatewayBufferBytes([...this.served.values()].map((v) => v.memoryOptions()), inFlightBytes);
  }

  /** Every volume's memoryCacheBytes(), added up. */
  memoryCacheBytes(): number {
    let n = 0;
    for (const v of this.served.values()) n += v.memoryCacheBytes();
    return n;
  }

  /** Data written but not yet uploaded, of every volume (those a close() drains included). */
  dirtyBytes(): number {
    let n = 0;
    for (const v of new Set([...this.served.values(), ...this.draining])) n += v.dirtyBytes();
    return n;
  }

  get connections(): number {
    let n = 0;
    for (const v of this.served.values()) n += v.connections;
    return n;
  }

  /** Closes every volume at once, each uploading its dirty data for up to `drainMs`; resolves true if all was uploaded. */
  async close(drainMs: number): Promise<boolean> {
    this.closing = true;
    // No more volume operations: a request still waiting hears that the gateway stopped.
    await this.closeControl?.();
    this.closeControl = undefined;
    const volumes = [...this.served.values()];
    this.draining = volumes;
    this.served.clear();
    const drained = await Promise.all(volumes.map((v) => v.close(drainMs).catch((err: unknown) => {
      this.config.log.error({ volumeName: v.name, err }, 'closing the volume failed');
      return false;
    })));
    await this.prefix.close();
    return drained.every(Boolean);
  }

  private cacheDirOf(name: string): string {
    return join(this.config.cacheDir, 'volumes', name);
  }

  private storeOf(name: string): string {
    return this.prefix.url(name);
  }

  private async openVolume(name: string, volume: { mode: 'open' } | { mode: 'create'; size: number; extentSize?: number | undefined }): Promise<ServedVolume> {
    const { config } = this;
    const log = config.log.child({ volumeName: name });
    const served: ServedVolume = await ServedVolume.open({
      name, store: this.storeOf(name), s3: config.s3, volume, objects: config.objects, readOnly: config.readOnly,
      budgets: this.shares, cache: { ...config.cache, dir: this.cacheDirOf(name) }, answersDefault: false,
      autoSnapshots: config.autoSnapshots, log, telemetry: config.metrics?.forVolume(name),
      // One volume's trouble is that volume's: it stops being served, the others go on.
      onFenced: (by) => this.retire(name, Errors.volumeInUse(this.storeOf(name), by, 'now (it took the volume over)')),
      onJournalFailed: (err) => setImmediate(() => this.retire(name, err)),
    });
    await served.start();
    const { storage } = served;
    log.info({ store: storage.objects.description, volume: storage.volume.id, size: storage.volume.size, created: storage.created,
      storedExtents: storage.extents.allocatedCount, budgets: this.shares }, 'serving volume');
    return served;
  }

  /** Reports a volume that is not served: one error line with its code. */
  private skip(name: string, err: unknown): void {
    const error = err instanceof UserError ? `${err.message} (${err.code}). Fix: ${err.fix}.` : err instanceof Error ? err.message : String(err);
    this.skippedVolumes.set(name, { name, error });
    this.config.log.error({ volumeName: name, ...err instanceof UserError ? { code: err.code } : {}, error }, 'volume skipped: not served');
  }

  /** Stops serving a volume that failed while served (fenced off, journal failed), and reports it. */
  private retire(name: string, err: unknown): void {
    const volume = this.served.get(name);
    if (!volume || this.closing) return;
    this.served.delete(name);
    this.skip(name, err);
    volume.dropConnections();
    // Nothing is uploaded (fenced off, or the journal failed): what is not in S3 stays in its journal.
    void volume.close(0).catch((err: unknown) => this.config.log.error({ volumeName: name, err }, 'closing the retired volume failed'));
    void this.config.metrics?.removeVolume(name);
  }

  private async create(name: string, size: number, extentSize?: number): Promise<VolumeStatus> {
    checkVolumeName(name);
    if (this.config.readOnly) throw Errors.conflictingOptions('creating a volume', '--read-only', 'restart the gateway without --read-only to create volumes');
    if (this.served.has(name) || this.busy.has(name)) throw Errors.volumeExists(this.storeOf(name));
    if (this.served.size + this.busy.size >= this.config.maxVolumes) throw Errors.tooManyVolumes(this.config.maxVolumes);
    this.busy.add(name);
    try {
      const volume = await this.openVolume(name, { mode: 'create', size, extentSize });
      if (this.closing) {
        await volume.close(0);
        throw Errors.gatewayStopped('the gateway');
      }
      this.skippedVolumes.delete(name);
      this.served.set(name, volume);
      return await volume.status();
    } finally {
      this.busy.delete(name);
    }
  }

  private async resize(name: string, size: number): Promise<VolumeStatus> {
    const volume = this.served.get(name);
    if (!volume) throw Errors.noNamedVolume(this.prefix.description, name);
    await volume.storage.grow(size);
    return volume.status();
  }

  private async delete(name: string, force: boolean, withSnapshots: boolean): Promise<void> {
    const volume = this.served.get(name);
    if (!volume || this.busy.has(name)) throw Errors.noNamedVolume(this.prefix.description, name);
    if (volume.connections > 0 && !force) throw Errors.volumeHasClients(name, volume.connections);
    this.busy.add(name);
    try {
      // What deleteVolume() would refuse (snapshots, clones reading them) is refused while the volume is still served.
      await checkDeletable(this.prefix, name, { withSnapshots });
      // No new connections from here on; the open ones are dropped; nothing is uploaded (it is deleted).
      this.served.delete(name);
      volume.dropConnections();
      await volume.close(0);
      try {
        await deleteVolume(this.prefix, name, { withSnapshots, log: this.config.log, s3: this.config.s3 });
      } catch (err) {
        // Served no more and not deleted: shown as skipped (its error says how to finish), not forgotten.
        this.skip(name, err);
        throw err;
      }
      await rm(this.cacheDirOf(name), { recursive: true, force: true });
      await this.config.metrics?.removeVolume(name);
    } finally {
      this.busy.delete(name);
    }
  }

  /** The volumes under the prefix as `s3nbd volume list` shows them (served or not). */
  list(): ReturnType<typeof listVolumes> {
    return listVolumes(this.prefix);
  }
}

/** The prefix at --volumes; a URL it refuses is named as --volumes (the store's errors say --store). */
function openVolumesPrefix(config: VolumeSetConfig): VolumePrefix {
  try {
    return openVolumePrefix(config.url, config.s3, config.log);
  } catch (err) {
    if (err instanceof UserError) throw new UserError(err.code, err.message.replace(/^--store /, '--volumes '), err.fix);
    throw err;
  }
}

function byName<T extends { readonly name: string }>(a: T, b: T): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

/**
 * The gateway control socket's handler in --volumes mode (`<cache-dir>/control.sock`): the
 * volume commands (volume-control.ts), and hello, which says this gateway serves a prefix.
 */
export function volumeSetControl(set: VolumeSet): ControlHandler {
  return volumeControl(set.admin, () => set.list(), (request) => {
    if (request.op === 'hello') return Promise.resolve({ pid: process.pid, volumes: true });
    throw new Error(`unknown control request ${JSON.stringify(request.op)}`);
  });
}
