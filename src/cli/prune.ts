// `s3nbd snapshot prune --keep-last N --keep-hourly N --keep-daily N --keep-weekly N
// --keep-monthly N [--prefix P] [--dry-run]`: deletes the snapshots the retention policy does
// not keep (storage/snapshots/retention.ts: restic's `forget` rules), printing for each
// snapshot whether it is kept and by which rules.
//
// Which snapshots: all of them, as restic's forget, unless --prefix names the ones to consider
// (e.g. --prefix auto- for those `serve --snapshot-every` takes); the others are left alone
// and not counted. A snapshot that clones read from is kept whatever the policy (said so).
//
// Each deletion goes the way `snapshot delete` goes (the gateway on --cache-dir through its
// control socket, or the idle volume under its lease), one snapshot at a time, manifest first:
// interrupted (Ctrl-C, kill -9), prune has deleted whole snapshots and left at most garbage
// for the next gc; run again, it deletes the rest.

import { Errors, UserError } from '../errors.ts';
import { openObjectStore } from '../storage/objects/store-url.ts';
import { missingClones } from '../storage/snapshots/clone.ts';
import type { Manifest } from '../storage/snapshots/manifest.ts';
import { SnapshotRegistry } from '../storage/snapshots/registry.ts';
import { type RetentionDecision, type RetentionPolicy, applyRetention, hasRules } from '../storage/snapshots/retention.ts';
import { openVolume } from '../storage/volume/volume.ts';
import { showProgress } from './progress.ts';
import { type IdleOptions, onIdleVolume, quiet, viaGateway } from './snapshot.ts';
import { s3OptionsOf } from './store-options.ts';

interface PruneOptions extends IdleOptions {
  keepLast?: number;
  keepHourly?: number;
  keepDaily?: number;
  keepWeekly?: number;
  keepMonthly?: number;
  prefix?: string;
  dryRun?: boolean;
}

export function policyOf(opts: { keepLast?: number; keepHourly?: number; keepDaily?: number; keepWeekly?: number; keepMonthly?: number }): RetentionPolicy {
  return { last: opts.keepLast, hourly: opts.keepHourly, daily: opts.keepDaily, weekly: opts.keepWeekly, monthly: opts.keepMonthly };
}

/** The decisions for the snapshots `prefix` selects, newest first. */
export function decide(manifests: readonly Manifest[], policy: RetentionPolicy, prefix = ''): RetentionDecision[] {
  return applyRetention(manifests.filter((m) => m.name.startsWith(prefix)), policy);
}

export async function runSnapshotPrune(raw: Record<string, unknown>): Promise<void> {
  const opts = raw as unknown as PruneOptions;
  const policy = policyOf(opts);
  if (!hasRules(policy)) throw Errors.noRetentionPolicy();
  const decisions = decide(await readManifests(opts), policy, opts.prefix);
  printDecisions(decisions);
  const forget = decisions.filter((d) => !d.keep).map((d) => d.name);
  if (opts.dryRun) {
    process.stdout.write(`dry run: would delete ${forget.length} of ${decisions.length} snapshots\n`);
    return;
  }
  if (forget.length === 0) {
    process.stdout.write(`nothing to delete: the policy keeps all ${decisions.length} snapshots\n`);
    return;
  }
  let deleted = 0;
  let objects = 0;
  const kept: string[] = [];
  const progress = showProgress(() => `pruning: ${deleted + kept.length} of ${forget.length} snapshots done, ${objects} objects deleted`);
  const forgetMissingClones = opts.forgetMissingClones === true;
  /** Deletes one; a snapshot with clones is kept (reported), anything else stops the prune. */
  const one = async (name: string, del: () => Promise<number>): Promise<void> => {
    try {
      objects += await del();
      deleted++;
      process.stdout.write(`deleted snapshot ${name}\n`);
    } catch (err) {
      if (!(err instanceof UserError) || err.code !== 'S3NBD_SNAPSHOT_HAS_CLONES') throw err;
      kept.push(name);
      process.stdout.write(`kept snapshot ${name}: ${err.message}\n`);
    }
  };
  try {
    if (await viaGateway(raw, { op: 'hello' }) !== undefined) {
      for (const name of forget) await one(name, async () => (await viaGateway<number>(raw, { op: 'snapshot.delete', name, forgetMissingClones }))!);
    } else {
      await onIdleVolume(raw, 'snapshot prune', true, async (v) => {
        // Decided again under the lease: exactly the snapshots there are now.
        const now = decide(await v.snapshots.loadAll(), policy, opts.prefix).filter((d) => !d.keep).map((d) => d.name);
        for (const name of now) {
          const before = v.extents.garbage.deleted;
          await one(name, async () => {
            await v.snapshots.delete(v.extents, name, forgetMissingClones ? (clones) => missingClones(clones, s3OptionsOf(opts), quiet) : undefined);
            return v.extents.garbage.deleted - before;
          });
        }
      });
    }
  } finally {
    progress.done();
  }
  process.stdout.write(`pruned: ${deleted} snapshots deleted${kept.length > 0 ? `, ${kept.length} kept for their clones` : ''}; ${objects} objects nothing needs any more deleted\n`);
}

/** Every snapshot's manifest, read from the store without taking anything (a gateway may serve the volume). */
async function readManifests(opts: PruneOptions): Promise<Manifest[]> {
  const objects = openObjectStore(opts.store, s3OptionsOf(opts), quiet);
  try {
    const { volume } = await openVolume(objects, { mode: 'open' });
    return await new SnapshotRegistry(objects, volume).loadAll();
  } finally {
    await objects.close();
  }
}

function printDecisions(decisions: readonly RetentionDecision[]): void {
  const width = Math.max(0, ...decisions.map((d) => d.name.length));
  for (const d of decisions) {
    process.stdout.write(`${d.keep ? 'keep  ' : 'forget'}  ${d.name.padEnd(width)}  ${d.createdAt}${d.keep ? `  ${d.reasons.join(', ')}` : ''}\n`);
  }
}
