// `serve --snapshot-every DURATION` with the --keep-* options: the gateway snapshots its own
// volume on a timer and prunes by the policy, so that a backup schedule needs no cron job.
//
// Every DURATION (on the Clock, so tests drive it by hand) it takes a snapshot named
// AUTO_PREFIX + the UTC time, e.g. auto-20261206T233000Z, exactly as `snapshot create` asks a
// running gateway to (the control handler: a crash-consistent cut, writes going on), then
// deletes the automatic snapshots the policy does not keep, one at a time, as `snapshot
// delete` does. Only snapshots named AUTO_PREFIX… are pruned: the ones a user made by hand are
// the user's to delete (`snapshot prune` considers all of them, or those of a --prefix).
// A failure is logged and the next tick tries again; it never stops the gateway. A tick that
// comes while the previous one still runs is skipped.

import type { Logger } from 'pino';
import type { Clock } from '../clock.ts';
import type { ControlHandler } from '../control/control-socket.ts';
import { UserError } from '../errors.ts';
import { type DatedSnapshot, type RetentionPolicy, applyRetention, hasRules } from '../storage/snapshots/retention.ts';

export const AUTO_PREFIX = 'auto-';

/** auto-20261206T233000Z: sortable, and a valid snapshot name. */
export function autoSnapshotName(ms: number): string {
  return `${AUTO_PREFIX}${new Date(ms).toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')}`;
}

export interface AutoSnapshotsConfig {
  readonly clock: Clock;
  readonly everyMs: number;
  readonly policy: RetentionPolicy;
  /** The gateway's control handler: snapshot.create and snapshot.delete. */
  readonly control: ControlHandler;
  /** Every snapshot of the volume, with its time. */
  readonly list: () => Promise<readonly DatedSnapshot[]>;
  readonly log: Logger;
}

/** Starts the timer; returns its stop, which waits for a tick under way. */
export function startAutoSnapshots(config: AutoSnapshotsConfig): () => Promise<void> {
  const { clock, log } = config;
  let running: Promise<void> | undefined;
  let stopped = false;
  const tick = async (): Promise<void> => {
    const name = autoSnapshotName(clock.now());
    try {
      await config.control({ op: 'snapshot.create', name });
      log.info({ snapshot: name }, 'automatic snapshot taken');
    } catch (err) {
      log.warn({ snapshot: name, err: errorText(err) }, 'automatic snapshot failed; trying again at the next one');
      return;
    }
    if (!hasRules(config.policy)) return;
    try {
      const mine = (await config.list()).filter((s) => s.name.startsWith(AUTO_PREFIX));
      for (const d of applyRetention(mine, config.policy)) {
        if (d.keep || stopped) continue;
        try {
          await config.control({ op: 'snapshot.delete', name: d.name });
          log.info({ snapshot: d.name }, 'automatic snapshot pruned');
        } catch (err) {
          // One that clones read from stays; the others are still pruned.
          log.warn({ snapshot: d.name, err: errorText(err) }, 'pruning an automatic snapshot failed; trying again after the next one');
        }
      }
    } catch (err) {
      log.warn({ err: errorText(err) }, 'listing the snapshots to prune failed; trying again after the next one');
    }
  };
  const cancel = clock.every(config.everyMs, () => {
    if (running || stopped) return;
    running = tick().finally(() => { running = undefined; });
  });
  return async () => {
    stopped = true;
    cancel();
    await running;
  };
}

function errorText(err: unknown): string {
  if (err instanceof UserError) return `${err.message} (${err.code})`;
  return err instanceof Error ? err.message : String(err);
}
