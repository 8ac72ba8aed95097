// Drain progress on SIGTERM (src/cli/drain-progress.ts), on a manual clock.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { startDrainProgress, withDrainProgress } from '../../src/cli/drain-progress.ts';
import { ManualClock } from '../helpers/manual-clock.ts';

const MIB = 2 ** 20;

function recorder(): { log: { info: (fields: object, msg: string) => void }; lines: Array<{ fields: Record<string, unknown>; msg: string }> } {
  const lines: Array<{ fields: Record<string, unknown>; msg: string }> = [];
  return { lines, log: { info: (fields, msg) => { lines.push({ fields: fields as Record<string, unknown>, msg }); } } };
}

describe('drain progress', () => {
  it('says every 2 s the bytes left, the rate over the last interval and an ETA, then a final line', async () => {
    const clock = new ManualClock();
    const { log, lines } = recorder();
    let dirty = 10 * MIB;
    const stop = startDrainProgress({ clock, dirtyBytes: () => dirty, log: log as never });
    dirty = 8 * MIB;
    await clock.advance(1999);
    assert.equal(lines.length, 0, 'nothing before the first interval');
    await clock.advance(1);
    assert.deepEqual(lines[0]!.fields, { bytesLeft: 8 * MIB, bytesPerSecond: MIB, etaSeconds: 8 });
    assert.equal(lines[0]!.msg, 'draining: 8 MiB left to upload, 1 MiB/s, about 8 s to go');
    // The rate is that of the last interval alone: 6 MiB in 2 s.
    dirty = 2 * MIB;
    await clock.advance(2000);
    assert.deepEqual(lines[1]!.fields, { bytesLeft: 2 * MIB, bytesPerSecond: 3 * MIB, etaSeconds: 1 });
    // Nothing uploaded in an interval (S3 stalls): rate 0 and no ETA, said in words.
    await clock.advance(2000);
    assert.deepEqual(lines[2]!.fields, { bytesLeft: 2 * MIB, bytesPerSecond: 0, etaSeconds: null });
    assert.match(lines[2]!.msg, /no upload finished in the last interval/);
    dirty = 0;
    await clock.advance(1000);
    stop(true);
    assert.equal(lines.length, 4);
    assert.deepEqual(lines[3]!.fields, { bytesLeft: 0, bytesPerSecond: Math.round(10 * MIB / 7), uploadedBytes: 10 * MIB, seconds: 7, drained: true });
    assert.match(lines[3]!.msg, /^drain done: 10 MiB uploaded in 7\.0 s/);
    await clock.advance(10_000);
    assert.equal(lines.length, 4, 'no lines after the end');
  });

  it('says what the journal keeps when the drain runs out of time, and stops its lines when the drain fails', async () => {
    const clock = new ManualClock();
    const { log, lines } = recorder();
    const dirty = 3 * MIB;
    await withDrainProgress({ clock, dirtyBytes: () => dirty, log: log as never }, () => Promise.resolve(false));
    assert.equal(lines.length, 1);
    assert.match(lines[0]!.msg, /^drain stopped: 3 MiB not uploaded \(the journal keeps it/);
    await assert.rejects(withDrainProgress({ clock, dirtyBytes: () => dirty, log: log as never }, () => Promise.reject(new Error('S3 gone'))), /S3 gone/);
    assert.equal(lines.length, 2);
    await clock.advance(10_000);
    assert.equal(lines.length, 2, 'the interval was stopped though the drain threw');
  });

  it('says nothing when there was nothing to upload', async () => {
    const clock = new ManualClock();
    const { log, lines } = recorder();
    assert.equal(await withDrainProgress({ clock, dirtyBytes: () => 0, log: log as never }, async () => { await clock.advance(5000); return true; }), true);
    assert.deepEqual(lines, []);
  });
});
