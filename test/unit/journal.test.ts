// The journal's recycled segments: replay must return exactly the records of each segment's
// present life, never leftovers of its previous one, and never lose a later segment to a
// recycled segment's tail.

import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { after, describe, it, type TestContext } from 'node:test';
import { syncCalls } from '../../src/storage/cache/inline-writes.ts';
import { Journal, type JournalRecord, RecordType, SPARE_SEGMENTS } from '../../src/storage/cache/journal.ts';
import { pattern } from '../helpers/model.ts';
import { tempDir } from '../helpers/gateway.ts';

const MiB = 1024 * 1024;

/** Appends a WRITE of `size` bytes, one at a time (one record per batch), with a payload derived from its seq. */
async function write(journal: Journal, size: number): Promise<number> {
  const seq = journal.reserve();
  await journal.append({ type: RecordType.WRITE, seq, index: seq, offset: 0, length: size, payload: pattern(size, seq) });
  return seq;
}

async function writeMany(journal: Journal, count: number, size: number): Promise<number[]> {
  const seqs: number[] = [];
  for (let i = 0; i < count; i++) seqs.push(await write(journal, size));
  return seqs;
}

function assertRecords(records: readonly JournalRecord[], expected: readonly number[], why: string): void {
  assert.deepEqual(records.map((r) => r.seq), expected, why);
  for (const r of records) assert.ok(r.payload?.equals(pattern(r.length, r.seq)), `${why}: payload of record ${r.seq}`);
}

const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('Journal', () => {
  const dir = tempDir('journal');
  after(() => dir.remove());

  it('does not replay a trimmed segment that could not be retired once later segments were', async () => {
    const path = `${dir.path}/unretired`;
    const { journal } = await Journal.open(path);
    await writeMany(journal, 17, MiB); // A: 1-16, B: 17
    const [a] = readdirSync(path).filter((n) => n.endsWith('.log')).sort();
    const leftover = readFileSync(`${path}/${a!}`);
    await journal.trim(17); // A is retired
    await writeMany(journal, 16, MiB); // B: 17-32, C: 33
    await journal.trim(33); // B is retired too
    await journal.close();
    writeFileSync(`${path}/${a!}`, leftover); // as if A's rename had failed: it is still there
    const reopened = await Journal.open(path);
    assertRecords(reopened.records, [33], 'C only: A\'s records were replaced by B\'s, which are in the store');
    assert.ok(!readdirSync(path).includes(a!), 'A is retired at last');
    await reopened.journal.close();
  });

  it('replays only the present life of recycled segments, and keeps the segments after one whose old life was longer', async () => {
    const path = `${dir.path}/recycle`;
    let { journal } = await Journal.open(path);
    await writeMany(journal, 17, MiB); // A: 1-16 (16 MiB and a bit: full), B: 17
    await journal.trim(17); // A becomes a spare
    await writeMany(journal, 15, MiB); // B: 17-32, full
    await writeMany(journal, 4, 4 * MiB); // C, recycled from A: 33-36, shorter than A's life by 432 bytes
    await write(journal, 100); // D, a new file: C is cut to its records first
    await journal.close();

    let reopened = await Journal.open(path);
    assertRecords(reopened.records, range(17, 37), 'B, C (without A\'s tail) and D');
    journal = reopened.journal;

    await journal.trim(33); // B becomes a spare
    await writeMany(journal, 2, MiB); // E, recycled from B: 38-39, then B's old records 19-32, intact
    await journal.close(); // as a crash would leave it: E is not cut
    reopened = await Journal.open(path);
    assertRecords(reopened.records, range(33, 39), 'C, D and E\'s own records, not B\'s old ones');
    await reopened.journal.close();
  });

  it('does not lose the records appended after a crash left a segment without any', async () => {
    const path = `${dir.path}/empty-segment`;
    const { journal } = await Journal.open(path);
    await writeMany(journal, 3, 100);
    await journal.close();
    // A crash just after the next segment was created: a torn first record, named after seq 4.
    writeFileSync(`${path}/${(4).toString(16).padStart(16, '0')}.log`, Buffer.from('torn record'));
    let reopened = await Journal.open(path);
    assertRecords(reopened.records, [1, 2, 3], 'the torn record is not replayed');
    await write(reopened.journal, 100); // seq 4, in a new segment named like the torn one
    await reopened.journal.trim(4); // records 1-3 are in the store
    await reopened.journal.close();
    reopened = await Journal.open(path);
    assertRecords(reopened.records, [4], 'record 4 survives the trim of what came before it');
    await reopened.journal.close();
  });

  it('sync() makes the segments closed since the last one durable, and the directory', async (t) => {
    const path = `${dir.path}/sync`;
    const { journal } = await Journal.open(path);
    await writeMany(journal, 17, MiB); // the first segment is full and closed; the second is being written
    const probe = await open(path, 'r');
    const handles = Object.getPrototypeOf(probe) as FileHandle;
    await probe.close();
    const fsyncs = t.mock.method(handles, 'sync');
    const fdatasyncs = t.mock.method(handles, 'datasync');
    await journal.sync();
    assert.equal(fdatasyncs.mock.callCount(), 1, 'the segment being written');
    assert.equal(fsyncs.mock.callCount(), 2, 'the closed segment, and the directory that got a new segment');
    await journal.sync();
    assert.deepEqual([fdatasyncs.mock.callCount(), fsyncs.mock.callCount()], [2, 2], 'nothing else changed since');
    await journal.close();
  });

  it('refuses appends and syncs after an fsync failed, instead of promising durability a later fsync cannot give', async (t) => {
    const path = `${dir.path}/sync-failure`;
    const { journal } = await Journal.open(path);
    await writeMany(journal, 17, MiB); // a closed segment and one being written
    const probe = await open(path, 'r');
    const handles = Object.getPrototypeOf(probe) as FileHandle;
    await probe.close();
    const fsyncs = t.mock.method(handles, 'sync', () => Promise.reject(Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' })));
    await assert.rejects(journal.sync(), /journal sync failed .*EIO/);
    fsyncs.mock.restore();
    await assert.rejects(write(journal, MiB), /journal sync failed/, 'an append after the failure');
    await assert.rejects(journal.sync(), /journal sync failed/, 'a later sync, whose fsyncs would now succeed');
    await journal.close();
  });

  // A small batch is written inline (writevSync), a large one through the thread pool
  // (FileHandle.writev): each failure is tested on both paths.
  const paths = [{ name: 'inline', size: 4096 }, { name: 'through the thread pool', size: 512 * 1024 }] as const;

  /**
   * Makes the journal's writes of either path run `fail` instead (positions as writev's).
   * Returns a function that puts them back and says which path was taken.
   */
  async function failWrites(t: TestContext, fail: (fd: number, buffers: Buffer[], position: number) => void): Promise<() => string> {
    const probe = await open(dir.path, 'r');
    const handles = Object.getPrototypeOf(probe) as FileHandle;
    await probe.close();
    const pooled = t.mock.method(handles, 'writev', async function (this: FileHandle, buffers: Buffer[], position: number) {
      await Promise.resolve();
      fail(this.fd, buffers, position);
      return { bytesWritten: 0, buffers };
    });
    const inline = t.mock.method(syncCalls, 'writevSync', (fd: number, buffers: Buffer[], position: number) => {
      fail(fd, buffers, position);
      return 0;
    });
    return () => {
      const taken = `${inline.mock.callCount() > 0 ? 'inline' : ''}${pooled.mock.callCount() > 0 ? 'through the thread pool' : ''}`;
      pooled.mock.restore();
      inline.mock.restore();
      return taken;
    };
  }

  for (const { name, size } of paths) {
    it(`refuses a batch with ENOSPC when the disk is full, cuts its partial bytes off, and goes on once there is room (${name})`, async (t) => {
      const path = `${dir.path}/no-space-${size}`;
      const failures: Error[] = [];
      const { journal } = await Journal.open(path, { onFailed: (err) => failures.push(err) });
      const before = await writeMany(journal, 3, 64 * 1024);
      // The disk fills in the middle of the batch: part of the record reaches the file, then ENOSPC.
      const restore = await failWrites(t, (fd, buffers, position) => {
        writeSync(fd, buffers[0]!, 0, 20, position);
        throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
      });
      const segment = `${path}/${readdirSync(path).find((n) => n.endsWith('.log'))!}`;
      const validBytes = statSync(segment).size;
      const lost = journal.reserve();
      await assert.rejects(journal.append({ type: RecordType.WRITE, seq: lost, index: 0, offset: 0, length: size, payload: pattern(size, lost) }),
        (err: Error & { errno?: string }) => err.errno === 'ENOSPC' && /cache disk is full/.test(err.message));
      assert.equal(restore(), name);
      assert.equal(statSync(segment).size, validBytes, 'the part of the refused batch that was written is cut off at once');
      const after = await writeMany(journal, 3, 64 * 1024);
      await journal.sync();
      assert.deepEqual(failures, [], 'a full disk does not fail the journal');
      await journal.close();
      const { journal: reopened, records } = await Journal.open(path);
      assertRecords(records, [...before, ...after], 'the records before and after, none of the refused one (nor garbage from it)');
      await reopened.close();
    });

    it(`fails for good, and says so once, on a write error other than a full disk (${name})`, async (t) => {
      const path = `${dir.path}/write-error-${size}`;
      const failures: Error[] = [];
      const { journal } = await Journal.open(path, { onFailed: (err) => failures.push(err) });
      await writeMany(journal, 2, 4096);
      const restore = await failWrites(t, () => {
        throw Object.assign(new Error('EIO: i/o error, write'), { code: 'EIO' });
      });
      await assert.rejects(write(journal, size), /journal write failed .*EIO/);
      assert.equal(restore(), name);
      await assert.rejects(write(journal, 4096), /journal write failed/, 'an append after the failure');
      await assert.rejects(journal.sync(), /journal write failed/);
      assert.equal(failures.length, 1);
      assert.equal(journal.failure, failures[0]);
      await journal.close();
    });
  }

  it('with syncOnRollover, makes a full segment durable before it writes the next, so no power loss leaves a gap', async (t) => {
    const probe = await open(dir.path, 'r');
    const handles = Object.getPrototypeOf(probe) as FileHandle;
    await probe.close();
    /* eslint-disable @typescript-eslint/unbound-method -- called below with .call() */
    const realDatasync = handles.datasync;
    const realWritev = handles.writev;
    /* eslint-enable @typescript-eslint/unbound-method */
    for (const syncOnRollover of [true, false]) {
      const { journal } = await Journal.open(`${dir.path}/rollover-${syncOnRollover}`, { syncOnRollover });
      await writeMany(journal, 16, MiB); // the first segment is full
      const events: string[] = [];
      const datasync = t.mock.method(handles, 'datasync', function (this: FileHandle) {
        events.push('datasync');
        return realDatasync.call(this);
      });
      const writev = t.mock.method(handles, 'writev', function (this: FileHandle, ...args: Parameters<FileHandle['writev']>) {
        events.push('writev');
        return realWritev.apply(this, args);
      });
      await write(journal, MiB); // starts the second segment
      datasync.mock.restore();
      writev.mock.restore();
      assert.deepEqual(events, syncOnRollover ? ['datasync', 'writev'] : ['writev'], `syncOnRollover ${syncOnRollover}`);
      await journal.close();
    }
  });

  it(`keeps at most ${SPARE_SEGMENTS} spare segments and reuses them`, async () => {
    const path = `${dir.path}/spares`;
    const { journal } = await Journal.open(path);
    let last = 0;
    let live: string[] = [];
    for (let round = 0; round < 3; round++) {
      last = (await writeMany(journal, 8 * 16 + 1, MiB)).at(-1)!; // 8 segments or more
      await journal.trim(last);
      const files = readdirSync(path);
      assert.equal(files.filter((f) => f.startsWith('spare-')).length, SPARE_SEGMENTS, `round ${round}: spares`);
      live = files.filter((f) => /^[0-9a-f]{16}\.log$/.test(f));
      assert.equal(live.length, 1, `round ${round}: the live segment only`);
    }
    await journal.close();
    const reopened = await Journal.open(path);
    assertRecords(reopened.records, range(parseInt(live[0]!.slice(0, 16), 16), last), 'the live segment\'s records');
    await reopened.journal.close();
  });
});
