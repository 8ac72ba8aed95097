// serve --snapshot-every (src/cli/auto-snapshots.ts) on a manual clock: a snapshot named by
// the UTC time every interval, automatic snapshots pruned by the policy (a hand-made one never),
// a failure logged and retried at the next tick without stopping the timer, a tick skipped
// while the previous one runs, and nothing after stop. And --snapshot-every's parser.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { UserError } from '../../src/errors.ts';
import { autoSnapshotName, startAutoSnapshots } from '../../src/cli/auto-snapshots.ts';
import { parseDuration } from '../../src/cli/parse.ts';
import type { ControlRequest } from '../../src/control/control-socket.ts';
import type { DatedSnapshot } from '../../src/storage/snapshots/retention.ts';
import { ManualClock, settle } from '../helpers/manual-clock.ts';

const log = pino({ level: 'silent' });
const HOUR = 3_600_000;

/** A gateway's snapshots as the control handler changes them; `fail` makes the next create fail. */
function fakeGateway(clock: ManualClock) {
  const snapshots = new Map<string, string>([['by-hand', new Date(0).toISOString()]]);
  const ops: string[] = [];
  let fail = 0;
  let hold: Promise<void> | undefined;
  return {
    snapshots, ops,
    failNext(n = 1) { fail = n; },
    holdNext(p: Promise<void>) { hold = p; },
    control: async (request: ControlRequest): Promise<unknown> => {
      const name = String(request.name);
      ops.push(`${request.op} ${name}`);
      if (request.op === 'snapshot.create') {
        if (hold) {
          const h = hold;
          hold = undefined;
          await h;
        }
        if (fail > 0) {
          fail--;
          throw new UserError('S3NBD_TEST', 'the store refused', 'none');
        }
        snapshots.set(name, new Date(clock.now()).toISOString());
      } else {
        snapshots.delete(name);
      }
      return undefined;
    },
    list: (): Promise<DatedSnapshot[]> => Promise.resolve([...snapshots].map(([name, createdAt]) => ({ name, createdAt }))),
  };
}

describe('automatic snapshots', () => {
  it('names snapshots by the UTC time', () => {
    assert.equal(autoSnapshotName(Date.parse('2026-12-06T23:30:00.123Z')), 'auto-20261206T233000Z');
  });

  it('takes one every interval and prunes the automatic ones by the policy, never a hand-made one', async () => {
    const clock = new ManualClock();
    const gw = fakeGateway(clock);
    const stop = startAutoSnapshots({ clock, everyMs: HOUR, policy: { last: 3 }, control: gw.control, list: gw.list, log });
    await clock.advance(5 * HOUR);
    const names = [...gw.snapshots.keys()].sort();
    assert.equal(names.length, 4, names.join(' '));
    assert.ok(names.includes('by-hand'));
    const autos = names.filter((n) => n.startsWith('auto-'));
    assert.deepEqual(autos, [3, 4, 5].map((h) => autoSnapshotName(1_000_000 + h * HOUR)));
    assert.equal(gw.ops.filter((o) => o.startsWith('snapshot.delete')).length, 2);
    await stop();
    await clock.advance(3 * HOUR);
    assert.equal(gw.ops.filter((o) => o.startsWith('snapshot.create')).length, 5, 'nothing after stop');
  });

  it('logs a failure and tries again at the next tick; without keep rules it prunes nothing', async () => {
    const clock = new ManualClock();
    const gw = fakeGateway(clock);
    const stop = startAutoSnapshots({ clock, everyMs: 60_000, policy: {}, control: gw.control, list: gw.list, log });
    gw.failNext(2);
    await clock.advance(4 * 60_000);
    assert.equal(gw.ops.length, 4);
    assert.equal([...gw.snapshots.keys()].filter((n) => n.startsWith('auto-')).length, 2);
    await stop();
  });

  it('skips a tick while the previous one still runs', async () => {
    const clock = new ManualClock();
    const gw = fakeGateway(clock);
    let release: () => void = () => undefined;
    gw.holdNext(new Promise<void>((resolve) => { release = resolve; }));
    const stop = startAutoSnapshots({ clock, everyMs: 60_000, policy: { last: 10 }, control: gw.control, list: gw.list, log });
    await clock.advance(3 * 60_000);
    assert.equal(gw.ops.length, 1, gw.ops.join(', '));
    release();
    await settle();
    await clock.advance(60_000);
    assert.equal(gw.ops.filter((o) => o.startsWith('snapshot.create')).length, 2);
    await stop();
  });

  it('parses --snapshot-every', () => {
    assert.equal(parseDuration('--snapshot-every', '1h', 60_000), HOUR);
    assert.equal(parseDuration('--snapshot-every', '1h30m', 60_000), 1.5 * HOUR);
    assert.equal(parseDuration('--snapshot-every', '2d', 60_000), 48 * HOUR);
    assert.equal(parseDuration('--snapshot-every', '90s', 60_000), 90_000);
    for (const bad of ['', '1', 'h', '1x', '30s', '1h 30m', '-1h', '1.5h']) {
      assert.throws(() => parseDuration('--snapshot-every', bad, 60_000), (err: unknown) => err instanceof UserError && err.code === 'S3NBD_BAD_DURATION', bad);
    }
  });
});
