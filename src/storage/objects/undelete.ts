// Undoing deletions, in a store that keeps old versions (S3 in a bucket with versioning or
// Object Lock): every key under a prefix that was deleted at or after a given time comes back
// as it was, by removing the delete markers written since then. Nothing is copied or written;
// the versions below the markers become current again.
//
// Only the markers written since `since` are removed: a key deleted before then (an extent
// that a TRIM made read as zeros, say) stays deleted, and undoing everything ever deleted
// would bring such stale data back. Removing a marker that S3 no longer has is not an error,
// so an interrupted run is simply run again. The listing is one request per 1000 versions;
// the markers are removed in batches of 1000 while it goes on, each batch only of keys the
// listing has passed.

import { Errors } from '../../errors.ts';
import type { ObjectStore, ObjectVersion, VersionRef } from './object-store.ts';

export interface UndeleteOptions {
  /**
   * Undoes the deletions at or after this time (the server's LastModified: to the second on
   * AWS). Without it, every deletion of the selected keys: right for keys written once and
   * never replaced (extent objects of format 2, manifests), whose every version is the same.
   */
  readonly since?: Date;
  /** Only the keys this accepts (default: every key under the prefix). */
  readonly select?: (key: string) => boolean;
  /** Only keys starting with this (relative to the store's own prefix). Default: every key. */
  readonly prefix?: string;
  /** Lists what would be undone, and removes nothing. */
  readonly dryRun?: boolean;
  /** Called after every page of the listing and every batch removed, and once at the end. */
  readonly onProgress?: (progress: UndeleteProgress) => void;
}

export interface UndeleteProgress {
  /** Versions and delete markers listed so far. */
  readonly listed: number;
  /** Keys found whose current version is a delete marker written since `since`. */
  readonly keys: number;
  /** Delete markers of theirs removed so far (none in a dry run). */
  readonly removed: number;
}

export interface UndeleteResult extends UndeleteProgress {
  /** The delete markers to remove (removed, unless a dry run). */
  readonly markers: number;
  /** When the first and the last of them were written. */
  readonly first?: Date;
  readonly last?: Date;
  /** The first few of those keys (up to 10), in listing order. */
  readonly sample: readonly string[];
}

const BATCH = 1000;
const SAMPLE = 10;

/** Throws UserError S3NBD_NO_VERSIONS when the store keeps no versions (a directory, memory). */
export async function undelete(store: ObjectStore, options: UndeleteOptions): Promise<UndeleteResult> {
  if (!store.listVersions || !store.deleteVersions) throw Errors.noVersions(store.description);
  const versioned = store as ObjectStore & Required<Pick<ObjectStore, 'listVersions' | 'deleteVersions'>>;
  const since = options.since?.getTime() ?? -Infinity;
  const select = options.select ?? (() => true);
  let listed = 0;
  let keys = 0;
  let removed = 0;
  let markers = 0;
  let first: Date | undefined;
  let last: Date | undefined;
  const sample: string[] = [];
  let batch: VersionRef[] = [];
  const report = (): void => options.onProgress?.({ listed, keys, removed });

  const removeBatch = async (): Promise<void> => {
    const todo = batch;
    batch = [];
    if (todo.length === 0 || options.dryRun) return;
    await versioned.deleteVersions(todo);
    removed += todo.length;
    report();
  };
  /** One key's entries, all of them: queue its markers if its current version is one written since `since`. */
  const settle = async (group: readonly ObjectVersion[]): Promise<void> => {
    const current = group.find((v) => v.latest);
    if (!current?.deleteMarker || current.lastModified.getTime() < since || !select(current.key)) return;
    const recent = group.filter((v) => v.deleteMarker && v.lastModified.getTime() >= since);
    keys++;
    if (sample.length < SAMPLE) sample.push(current.key);
    for (const marker of recent) {
      markers++;
      if (!first || marker.lastModified < first) first = marker.lastModified;
      if (!last || marker.lastModified > last) last = marker.lastModified;
      batch.push({ key: marker.key, versionId: marker.versionId });
    }
    if (batch.length >= BATCH) await removeBatch();
  };

  let group: ObjectVersion[] = [];
  for await (const version of versioned.listVersions(options.prefix ?? '', (n) => { listed = n; report(); })) {
    if (group.length > 0 && group[0]!.key !== version.key) {
      await settle(group);
      group = [];
    }
    group.push(version);
  }
  if (group.length > 0) await settle(group);
  await removeBatch();
  report(); // the last key, and a dry run's last batch
  return { listed, keys, removed, markers, sample, ...first ? { first } : {}, ...last ? { last } : {} };
}
