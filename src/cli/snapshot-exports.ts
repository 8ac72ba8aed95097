// The exports of a running gateway: the volume, and each of its snapshots as a read-only
// export named EXPORT@SNAPSHOT (`@SNAPSHOT` too, as "" names the volume's export). A snapshot's
// device is opened on first use and kept; snapshots made after the gateway started are found
// by name (one GET of the manifest) and listed by NBD_OPT_LIST (one LIST, at most every
// LIST_CACHE_MS). The protocol layer knows nothing of this: it sees an ExportRegistry.

import type { Logger } from 'pino';
import type { Export, ExportListing, ExportRegistry } from '../protocol/handshake.ts';
import type { Manifest } from '../storage/snapshots/manifest.ts';
import type { Storage } from '../storage/stack.ts';
import { formatBytes } from './parse.ts';

/** How long a listing of the snapshots is reused for NBD_OPT_LIST. */
const LIST_CACHE_MS = 2000;
/** Memory for each snapshot export's clean extents. */
const SNAPSHOT_MEMORY_CACHE = 64 * 1024 * 1024;

export function snapshotDescription(manifest: Manifest, volumeId: string): string {
  return `snapshot ${manifest.name} of s3nbd volume ${volumeId}, taken ${manifest.createdAt}, ${formatBytes(manifest.size)}, read-only`;
}

export class GatewayExports implements ExportRegistry {
  private readonly main: Export;
  private readonly storage: Storage;
  private readonly log: Logger;
  private readonly memoryCacheBytes: number;
  /** "" selects the volume and "@SNAPSHOT" its snapshot (one volume per gateway; not with serve --volumes). */
  private readonly answersDefault: boolean;
  private readonly opened = new Map<string, Promise<Export | undefined>>();
  private listed: { at: number; names: Promise<string[]> } | undefined;

  constructor(main: Export, storage: Storage, log: Logger, memoryCacheBytes = SNAPSHOT_MEMORY_CACHE, answersDefault = true) {
    this.main = main;
    this.storage = storage;
    this.log = log;
    this.memoryCacheBytes = memoryCacheBytes;
    this.answersDefault = answersDefault;
  }

  /** The snapshot an export name asks for, or undefined when it names no snapshot. */
  private snapshotOf(name: string): string | undefined {
    for (const base of this.answersDefault ? [`${this.main.name}@`, '@'] : [`${this.main.name}@`]) if (name.startsWith(base) && name.length > base.length) return name.slice(base.length);
    return undefined;
  }

  find(name: string): Export | undefined | Promise<Export | undefined> {
    if ((name === '' && this.answersDefault) || name === this.main.name) return this.main;
    const snapshot = this.snapshotOf(name);
    if (snapshot === undefined) return undefined;
    let exp = this.opened.get(snapshot);
    if (!exp) {
      exp = this.open(snapshot);
      this.opened.set(snapshot, exp);
      // Not there (yet): ask again next time, it may be made meanwhile.
      void exp.then((e) => { if (!e) this.opened.delete(snapshot); });
    }
    return exp;
  }

  private async open(snapshot: string): Promise<Export | undefined> {
    try {
      const manifest = await this.storage.snapshots.load(snapshot);
      if (!manifest) return undefined;
      const { device } = this.storage.openSnapshot(manifest, this.memoryCacheBytes);
      return { name: `${this.main.name}@${snapshot}`, description: snapshotDescription(manifest, this.storage.volume.id), device };
    } catch (err) {
      this.log.warn({ snapshot, err: (err as Error).message }, 'snapshot cannot be served');
      return undefined;
    }
  }

  /** Stops serving a snapshot to new connections (it was deleted); connections open on it keep their device. */
  forget(snapshot: string): void {
    this.opened.delete(snapshot);
    this.storage.snapshots.forget(snapshot);
    this.listed = undefined;
  }

  async list(): Promise<readonly ExportListing[]> {
    const now = Date.now();
    if (!this.listed || now - this.listed.at > LIST_CACHE_MS) this.listed = { at: now, names: this.storage.snapshots.names() };
    let names: string[];
    try {
      names = await this.listed.names;
    } catch (err) {
      this.listed = undefined;
      this.log.warn({ err: (err as Error).message }, 'listing the snapshots failed: NBD_OPT_LIST shows the volume only');
      return [this.main];
    }
    const snapshots: ExportListing[] = [];
    for (const name of names) {
      const manifest = await this.storage.snapshots.load(name).catch(() => undefined);
      if (manifest) snapshots.push({ name: `${this.main.name}@${name}`, description: snapshotDescription(manifest, this.storage.volume.id) });
    }
    return [this.main, ...snapshots];
  }
}
