// `s3nbd snapshot create|list|delete` and `s3nbd gc`. When a gateway serves the volume on
// --cache-dir, it carries create, delete and gc out itself (asked through its control socket,
// src/control/): it holds the volume, and only it can cut a snapshot of what its journal
// holds. Otherwise they work on the idle volume (storage/snapshots/idle-volume.ts: they take
// the writer lease). `list` only reads.
//
// Every one of them can be interrupted (Ctrl-C, kill -9) and run again: an interrupted create
// made a whole snapshot or none, an interrupted delete or gc left garbage that the next gc (or
// the next start of a gateway) deletes. SIGINT and SIGTERM stop collecting after the batch in
// flight and release the lease, so the next command need not wait for it to expire.

import { pino } from 'pino';
import { type ControlRequest, callGateway } from '../control/control-socket.ts';
import { missingClones } from '../storage/snapshots/clone.ts';
import { type SnapshotSummary, summaryOf } from '../storage/snapshots/manifest.ts';
import { checkSnapshotName } from '../storage/snapshots/manifest.ts';
import { type IdleVolume, openIdleVolume } from '../storage/snapshots/idle-volume.ts';
import { uniqueObjects } from '../storage/snapshots/registry.ts';
import { restoreSnapshot } from '../storage/snapshots/restore.ts';
import { openObjectStore } from '../storage/objects/store-url.ts';
import { openStorage } from '../storage/stack.ts';
import { formatBytes } from './parse.ts';
import { showProgress } from './progress.ts';
import { withKillHook } from './test-hooks.ts';
import { type StoreOptions, s3OptionsOf } from './store-options.ts';

export const quiet = pino({ level: 'silent' });
const EXIT_FENCED = 3;
const EXIT_INTERRUPTED = 130;

export interface IdleOptions extends StoreOptions {
  leaseTtl: number;
  cacheDir: string;
  json?: boolean;
  forgetMissingClones?: boolean;
}

/** What the gateway serving the volume on --cache-dir answered, or undefined when none does. */
export function viaGateway<T>(raw: Record<string, unknown>, request: ControlRequest): Promise<T | undefined> {
  return callGateway((raw as unknown as IdleOptions).cacheDir, request) as Promise<T | undefined>;
}

/** Opens the idle volume for `command`, runs `work`, and closes it however `work` ends. */
export async function onIdleVolume<T>(raw: Record<string, unknown>, command: string, collect: boolean, work: (v: IdleVolume) => Promise<T>): Promise<T> {
  const opts = raw as unknown as IdleOptions;
  const volume = await openIdleVolume({
    store: opts.store, s3: s3OptionsOf(opts), log: quiet, command, leaseTtlMs: opts.leaseTtl * 1000, collect, wrapStore: withKillHook,
    onWait: (ms) => process.stderr.write(`s3nbd: the volume's previous writer stopped without releasing it: waiting ${Math.ceil(ms / 1000)} s, until its last requests cannot land any more, before deleting anything\n`),
    onLost: (by) => {
      // Deleting on without the lease could delete what the new holder's snapshots keep.
      process.stderr.write(`s3nbd: ${by} took the volume over: stopped (what was not collected, the next gc collects)\n`);
      process.exit(EXIT_FENCED);
    },
  });
  let interrupted = false;
  const interrupt = (): void => {
    if (interrupted) process.exit(EXIT_INTERRUPTED);
    interrupted = true;
    process.stderr.write('\ns3nbd: interrupted: stopping after the request in flight (run the command again, or s3nbd gc, to finish)\n');
    void volume.close().finally(() => process.exit(EXIT_INTERRUPTED));
  };
  process.on('SIGINT', interrupt);
  process.on('SIGTERM', interrupt);
  try {
    return await work(volume);
  } finally {
    if (!interrupted) await volume.close();
    process.off('SIGINT', interrupt);
    process.off('SIGTERM', interrupt);
  }
}

export async function runSnapshotCreate(name: string, raw: Record<string, unknown>): Promise<void> {
  checkSnapshotName(name);
  const created = await viaGateway<SnapshotSummary>(raw, { op: 'snapshot.create', name }) ?? await onIdleVolume(raw, 'snapshot create', false, async (v) => {
    const holder = v.lease.previousHolder;
    if (v.previousCrashed && holder && !holder.owner.startsWith('s3nbd ')) {
      process.stderr.write(`s3nbd: warning: gateway ${holder.owner} on ${holder.host} did not stop cleanly; writes left in its journal are not in the bucket, so not in this snapshot (restart it on its cache directory and stop it, then take the snapshot)\n`);
    }
    return summaryOf(await v.snapshots.create(v.extents, name));
  });
  process.stdout.write(`created snapshot ${created.name}: ${created.extents} extents (${formatBytes(created.extents * created.extentSize)}) of ${formatBytes(created.size)}, ${created.createdAt}\n`);
}

export async function runSnapshotDelete(name: string, raw: Record<string, unknown>): Promise<void> {
  checkSnapshotName(name);
  const opts = raw as unknown as IdleOptions;
  const forgetMissingClones = opts.forgetMissingClones === true;
  const deleted = await viaGateway<number>(raw, { op: 'snapshot.delete', name, forgetMissingClones }) ?? await onIdleVolume(raw, 'snapshot delete', true, async (v) => {
    const progress = showProgress(() => `deleting snapshot ${name}: ${v.extents.garbage.deleted} objects deleted, ${v.extents.garbage.pending} to go`);
    try {
      await v.snapshots.delete(v.extents, name, forgetMissingClones ? (clones) => missingClones(clones, s3OptionsOf(opts), quiet) : undefined);
    } finally {
      progress.done();
    }
    return v.extents.garbage.deleted;
  });
  process.stdout.write(`deleted snapshot ${name}; ${deleted} objects nothing needs any more deleted\n`);
}

export async function runGc(raw: Record<string, unknown>): Promise<void> {
  const { deleted, tombstonesKept } = await viaGateway<{ deleted: number; tombstonesKept: boolean }>(raw, { op: 'gc' }) ?? await onIdleVolume(raw, 'gc', true, async (v) => {
    const progress = showProgress(() => `collecting: ${v.extents.garbage.deleted} objects deleted, ${v.extents.garbage.pending} to go`);
    try {
      await v.extents.collectGarbage();
    } finally {
      progress.done();
    }
    return { deleted: v.extents.garbage.deleted, tombstonesKept: v.lateUploads };
  });
  process.stdout.write(`deleted ${deleted} objects nothing needs any more${tombstonesKept ? ' (tombstones stay while a crashed writer\'s last uploads may still land: the next gateway or gc deletes them)' : ''}\n`);
}

export interface SnapshotListing {
  readonly name: string;
  readonly createdAt: string;
  readonly size: number;
  readonly extents: number;
  /** Objects no other snapshot holds and the volume does not read: what deleting it frees. */
  readonly uniqueExtents: number;
  /** uniqueExtents × the extent size: an upper bound (objects may be compressed). */
  readonly uniqueBytes: number;
}

export async function runSnapshotList(raw: Record<string, unknown>): Promise<void> {
  const opts = raw as unknown as IdleOptions;
  const storage = await openStorage({ store: opts.store, s3: s3OptionsOf(opts), log: quiet, volume: { mode: 'open' }, readOnly: true, memoryCacheBytes: 0 });
  let listing: SnapshotListing[];
  try {
    const manifests = await storage.snapshots.loadAll();
    const unique = uniqueObjects(manifests, (index, generation) => storage.extents.isCurrent(index, generation));
    listing = manifests.map((m) => ({
      name: m.name, createdAt: m.createdAt, size: m.size, extents: m.references.length,
      uniqueExtents: unique.get(m.name) ?? 0, uniqueBytes: (unique.get(m.name) ?? 0) * m.extentSize,
    }));
  } finally {
    await storage.close();
  }
  listing.sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.name.localeCompare(b.name));
  if (opts.json) {
    process.stdout.write(`${JSON.stringify(listing, null, 2)}\n`);
    return;
  }
  const rows = [['NAME', 'CREATED', 'SIZE', 'STORED', 'UNIQUE'],
    ...listing.map((s) => [s.name, s.createdAt, formatBytes(s.size), formatBytes(s.extents * storage.volume.extentSize), formatBytes(s.uniqueBytes)])];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  process.stdout.write(rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n') + '\n');
}

/** `snapshot restore NAME`: brings back a deleted snapshot's objects in a bucket that keeps versions (restore.ts). */
export async function runSnapshotRestore(name: string, raw: Record<string, unknown>): Promise<void> {
  checkSnapshotName(name);
  const opts = raw as unknown as IdleOptions;
  const objects = openObjectStore(opts.store, s3OptionsOf(opts), quiet);
  try {
    let listed = 0;
    let found = 0;
    let removed = 0;
    const progress = showProgress(() => `restoring snapshot ${name}: ${listed} versions listed, ${found} of its objects deleted, ${removed} delete markers removed`);
    try {
      const result = await restoreSnapshot(objects, name, (p) => { ({ listed, keys: found, removed } = p); });
      process.stdout.write(`restored snapshot ${name} of ${objects.description}: ${result.restored} deleted objects brought back; serve it with s3nbd serve --snapshot ${name}\n`);
    } finally {
      progress.done();
    }
  } finally {
    await objects.close();
  }
}
