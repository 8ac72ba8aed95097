// The dirty-extent journal: a redo log of every change not yet known to be in the object
// store, so an acknowledged write survives a crash of the gateway process.
//
// On-disk format. The journal is a directory of segment files, named by a sequence number in
// 16 hex digits (`0000000000000001.log`): the one after the last record of the segment before,
// which is that of their first record unless appends were refused in between (below). They
// are replayed in name order. A segment is a plain sequence of records, whose format and
// encoding are in journal-records.ts; an UPLOADED record says that the extent's changes up to
// a generation (a sequence number) are in the object store: replay skips them, so a restart
// only re-applies (and only needs cache room for) what was not uploaded yet.
//
// Replay stops at the first record whose magic, length or checksum is wrong: that is the torn
// tail of a write the crash interrupted (which was never acknowledged, because a write is only
// acknowledged after its record was written). The segment is truncated there so new records
// never follow garbage.
//
// Segments are recycled: a trimmed segment is renamed `spare-<its name>` (at most
// SPARE_SEGMENTS of them; replay ignores them) and a new segment is a spare renamed and
// overwritten from its start. Overwriting file pages the kernel still caches costs about a
// third of the CPU of freeing them (unlink) and allocating new ones. A segment may therefore
// hold intact records of its previous life after its own: replay also stops at a record whose
// sequence number is below the segment's name or not above the record before it (records of
// an earlier life are all older than every record of the present one). A segment is cut to
// the length of its records before the journal moves on to the next, so only the last
// segment can have such a tail, and it is truncated like a torn one.
//
// A write that fails for want of space (ENOSPC, EDQUOT) is not a failure of the journal: the
// segment is cut back to the end of its last whole record (ftruncate needs no space), the
// batch is refused with ENOSPC, and later appends go on once there is room again. Their
// sequence numbers are lost, which replay tolerates (it needs them increasing, not
// consecutive), and a new segment is named after the last record of the one before it, not
// after its own first record, so lost numbers never look like a gap between segments (below).
// Any other write error, a failed truncate, and any failed fsync fail the journal for good.
//
// Live segments follow each other without a gap in sequence numbers. Replay starts after the
// last gap: a segment before one was trimmed but could not be retired, while newer segments
// (with newer bytes for the same extents) were, so its records are stale. A power loss could
// also leave a gap, by writing back a new segment but not the end of the one before it; the
// records before the gap are then dropped. That is harmless where FLUSH waits for the object
// store (anything flushed is there), but not where it only syncs the journal (`--flush-mode
// local`): there the journal is opened with `syncOnRollover`, and a full segment is fsynced
// before the next one gets a record (once per SEGMENT_BYTES), so no power loss leaves a gap.
//
// The write cache reads payloads of large writes back from their segment (readPayload) until
// the extent is uploaded; such a segment is live, so it is not trimmed.
//
// Appends reach the kernel (write(2)) before a write is acknowledged, which is what a process
// crash needs; sync() is for `--flush-mode local` and power loss: it fsyncs the segment being
// written, every segment closed since the last sync(), and the directory whenever segments
// were created or renamed since (a recycled segment whose rename was lost would be replayed
// under its old name, out of order). A small batch is written with a synchronous write(2)
// from the event loop, a large one (or any after a write that blocked) through the thread
// pool (inline-writes.ts). Records are appended
// in sequence order, one batch at a time (group commit), so replay applies changes in the
// order they were applied to the cache. Whole segments are retired once every change in them
// is in the object store; recovery therefore reads only what is still dirty.

import { mkdir, open, readdir, rename, rm, type FileHandle } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { StorageError } from '../storage-error.ts';
import { fsyncPath } from '../../fsync.ts';
import { InlineWrites, syncCalls } from './inline-writes.ts';
import { decodeSegment, encodeHeader, HEADER_SIZE, type JournalRecord } from './journal-records.ts';

export { decodeSegment, encodeHeader, HEADER_SIZE, type JournalRecord, RecordType, type RecordTypeValue, uploadedGeneration, uploadedRecord } from './journal-records.ts';

/** A new segment is started once the current one reaches this size. */
export const SEGMENT_BYTES = 16 * 1024 * 1024;
/** Trimmed segments kept for reuse (disk space: this many times SEGMENT_BYTES, at most). */
export const SPARE_SEGMENTS = 4;
const SEGMENT_NAME = /^[0-9a-f]{16}\.log$/;
const SPARE_NAME = /^spare-[0-9a-f]{16}\.log$/;

export interface JournalOptions {
  /** fsync each full segment before writing the next: for when FLUSH only syncs the journal. */
  readonly syncOnRollover?: boolean;
  /** Called once when the journal fails for good (a failed fsync, a write error other than no space). */
  readonly onFailed?: (err: Error) => void;
}

/** Write errors that only mean the disk is full for now: the journal goes on once there is room. */
const NO_SPACE = new Set(['ENOSPC', 'EDQUOT']);

/** An fsync that failed: never recoverable (the kernel may have dropped the pages it could not write). */
class SyncFailed extends Error {}

interface Segment {
  readonly firstSeq: number;
  lastSeq: number;
  bytes: number;
  readonly path: string;
}

interface PendingAppend {
  readonly buffers: Buffer[];
  readonly lastSeq: number;
  resolve(where: JournalLocation): void;
  reject(err: Error): void;
}

/** Where a record's payload is: the write cache reads whole-extent writes back from here. */
export interface JournalLocation {
  readonly path: string;
  /** File offset of the payload (just after the record's header). */
  readonly position: number;
}


export class Journal {
  private readonly dir: string;
  private readonly segments: Segment[] = [];
  private handle: FileHandle | undefined;
  /** Read handles of live segments, for readPayload(). */
  private readonly readers = new Map<string, Promise<FileHandle>>();
  private nextSeq = 1;
  private queue: PendingAppend[] = [];
  private writing = false;
  private failed: Error | undefined;
  private trimming: Promise<void> = Promise.resolve();
  /** A full segment is made durable before the next one is written (see the top of the file). */
  private readonly syncOnRollover: boolean;
  /** Paths of spare segments, ready to be reused. */
  private readonly spares: string[] = [];
  /** Segments closed since the last sync(), whose data may not be durable yet. */
  private unsynced: string[] = [];
  /** Segments were created or renamed since the last sync(). */
  private directoryChanged = false;

  private readonly onFailed: ((err: Error) => void) | undefined;
  /** Batches this small are written inline (inline-writes.ts): a few small writes' records. */
  private readonly inline = new InlineWrites(256 * 1024);

  private constructor(dir: string, options: JournalOptions) {
    this.dir = dir;
    this.syncOnRollover = options.syncOnRollover ?? false;
    this.onFailed = options.onFailed;
  }

  /**
   * Opens the journal in `dir`, truncating a torn tail, and returns it ready for appends with
   * every intact record in order.
   */
  static async open(dir: string, options: JournalOptions = {}): Promise<{ journal: Journal; records: JournalRecord[]; bytes: number }> {
    await mkdir(dir, { recursive: true });
    const journal = new Journal(dir, options);
    const listed = await readdir(dir);
    journal.spares.push(...listed.filter((n) => SPARE_NAME.test(n)).map((n) => join(dir, n)));
    const names = listed.filter((n) => SEGMENT_NAME.test(n)).sort();
    const all: JournalRecord[] = [];
    let bytes = 0;
    let torn = false;
    for (const name of names) {
      const path = join(dir, name);
      if (torn) {
        // Anything after a torn record cannot be trusted to follow it in order.
        await rm(path, { force: true });
        continue;
      }
      const handle = await open(path, 'r+').catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return undefined; // trimmed while we listed
        throw err;
      });
      if (!handle) continue;
      let records: JournalRecord[];
      let validBytes: number;
      const firstSeq = parseInt(name.slice(0, 16), 16);
      try {
        const data = await handle.readFile();
        ({ records, validBytes } = decodeSegment(data, firstSeq));
        if (validBytes < data.length) {
          await handle.truncate(validBytes);
          torn = true;
        }
      } finally {
        await handle.close();
      }
      if (records.length === 0) {
        // Created by a crash before its first record landed. Its name is the sequence number
        // the next append will get, so it must not stay: that segment would share its path.
        await journal.retire(path);
        continue;
      }
      for (const record of records) {
        all.push(record);
        journal.nextSeq = Math.max(journal.nextSeq, record.seq + 1);
      }
      bytes += validBytes;
      journal.segments.push({ firstSeq, lastSeq: records.at(-1)!.seq, bytes: validBytes, path });
    }
    // Live segments are consecutive: sequence numbers are appended in the order reserved, and
    // trim() retires segments from the oldest. A segment before a gap was trimmed but could
    // not be retired (a failed rename or unlink), and the ones in the gap were. Replaying it
    // would put back, and upload again, bytes that later writes in the gap replaced.
    const gap = journal.segments.findLastIndex((s, i) => i > 0 && s.firstSeq !== journal.segments[i - 1]!.lastSeq + 1);
    if (gap > 0) {
      for (const stale of journal.segments.splice(0, gap)) {
        bytes -= stale.bytes;
        await journal.retire(stale.path);
      }
      const firstLive = journal.segments[0]!.firstSeq;
      return { journal, records: all.filter((r) => r.seq >= firstLive), bytes };
    }
    return { journal, records: all, bytes };
  }

  /** Reserves the next sequence number. Records must be appended in the order reserved. */
  reserve(): number {
    return this.nextSeq++;
  }

  /** Why the journal failed for good, if it did: appends and syncs are refused. */
  get failure(): Error | undefined {
    return this.failed;
  }

  /** Bytes in live segments (what a recovery would read). */
  get bytes(): number {
    return this.segments.reduce((n, s) => n + s.bytes, 0);
  }

  /**
   * Appends a record; resolves, with where its payload is, once it has been written to the
   * file (not fsynced). Callers append in reserve() order; appends issued while a batch is
   * being written go together in the next batch.
   */
  append(record: JournalRecord): Promise<JournalLocation> {
    if (this.failed) return Promise.reject(this.failed);
    const buffers = [encodeHeader(record)];
    if (record.payload) buffers.push(record.payload);
    return new Promise<JournalLocation>((resolve, reject) => {
      this.queue.push({ buffers, lastSeq: record.seq, resolve, reject });
      if (!this.writing) void this.writeBatches();
    });
  }

  /**
   * Reads `length` bytes of a payload that append() placed at `where`. The caller keeps the
   * record's segment alive (trim() only deletes segments below the sequence it is given).
   */
  async readPayload(where: JournalLocation, length: number, into: Buffer = Buffer.allocUnsafe(length)): Promise<Buffer> {
    let reader = this.readers.get(where.path);
    if (!reader) {
      reader = open(where.path, 'r');
      this.readers.set(where.path, reader);
      reader.catch(() => this.readers.delete(where.path));
    }
    const data = into.subarray(0, length);
    const { bytesRead } = await (await reader).read(data, 0, length, where.position);
    if (bytesRead !== length) throw new Error(`journal ${where.path}: ${bytesRead} of ${length} bytes at ${where.position}`);
    return data;
  }

  /**
   * Every append that resolved before the call survives power loss once this resolves. A
   * failed fsync fails the journal for good: the kernel may have dropped the pages it could
   * not write and report success to the next fsync, so nothing appended can be promised
   * durable any more (appends and syncs are refused from then on).
   */
  async sync(): Promise<void> {
    if (this.failed) throw this.failed;
    try {
      const handle = this.handle;
      try {
        await handle?.datasync();
      } catch (err) {
        // Closed by a rollover meanwhile: it is in `unsynced` now, synced below.
        if (handle === this.handle) throw err;
      }
      const closed = this.unsynced;
      this.unsynced = [];
      // A closed segment that is gone was retired: everything in it is in the store.
      for (const path of closed) await fsyncPath(path, 'file');
      if (this.directoryChanged) {
        this.directoryChanged = false;
        await fsyncPath(this.dir, 'directory');
      }
    } catch (err) {
      throw this.fail(new Error(`journal sync failed in ${this.dir}: ${(err as Error).message}`, { cause: err }));
    }
  }

  /** Fails the journal for good (the first failure is the one kept and reported). */
  private fail(err: Error): Error {
    if (this.failed) return this.failed;
    this.failed = err;
    this.onFailed?.(err);
    return err;
  }

  /** Retires (deletes, or keeps as spares) every segment whose records all have sequence numbers below `neededSeq`. */
  trim(neededSeq: number): Promise<void> {
    // Segments are taken off the list at once, so overlapping trims never delete one twice.
    let n = 0;
    while (n < this.segments.length && this.segments[n]!.lastSeq < neededSeq) n++;
    // The segment being appended to (the last) may only go while nothing is written to it.
    let handle: FileHandle | undefined;
    if (this.handle && n > 0 && n === this.segments.length) {
      if (this.writing || this.queue.length > 0) n--;
      else {
        handle = this.handle;
        this.handle = undefined; // the next append starts a new segment
      }
    }
    const doomed = this.segments.splice(0, n);
    const readers = doomed.flatMap((segment) => {
      const reader = this.readers.get(segment.path);
      this.readers.delete(segment.path);
      return reader ? [reader] : [];
    });
    const work = (async () => {
      await handle?.close();
      for (const reader of readers) await (await reader.catch(() => undefined))?.close();
      for (const segment of doomed) await this.retire(segment.path);
    })();
    this.trimming = this.trimming.then(() => work, () => work);
    return work;
  }

  async close(): Promise<void> {
    while (this.writing) await new Promise((r) => setTimeout(r, 1));
    await this.trimming;
    await this.handle?.close();
    this.handle = undefined;
    for (const reader of this.readers.values()) await (await reader.catch(() => undefined))?.close();
    this.readers.clear();
  }

  private async writeBatches(): Promise<void> {
    this.writing = true;
    try {
      while (this.queue.length > 0) {
        const batch = this.queue;
        this.queue = [];
        try {
          const handle = await this.activeHandle(batch[0]!.lastSeq);
          const segment = this.segments.at(-1)!;
          const buffers = batch.flatMap((p) => p.buffers);
          const bytes = buffers.reduce((n, b) => n + b.length, 0);
          // At explicit positions: a recycled segment is overwritten from its start. writev may
          // write less than asked on some file systems: finish the rest.
          let written = await this.inline.write(bytes, () => syncCalls.writevSync(handle.fd, buffers, segment.bytes), async () => (await handle.writev(buffers, segment.bytes)).bytesWritten);
          while (written < bytes) {
            const rest = Buffer.concat(buffers).subarray(written);
            written += (await handle.write(rest, 0, rest.length, segment.bytes + written)).bytesWritten;
          }
          let position = segment.bytes;
          segment.bytes += bytes;
          segment.lastSeq = batch.at(-1)!.lastSeq;
          for (const p of batch) {
            p.resolve({ path: segment.path, position: position + HEADER_SIZE });
            position += p.buffers.reduce((n, b) => n + b.length, 0);
          }
        } catch (err) {
          if (await this.cutBackAfterNoSpace(err)) {
            const full = new StorageError('ENOSPC', `journal write failed in ${this.dir}: the cache disk is full`, { cause: err });
            for (const p of batch) p.reject(full);
            continue;
          }
          // A journal that cannot be written cannot protect writes: refuse all further ones.
          const failed = this.fail(new Error(`journal ${err instanceof SyncFailed ? 'sync' : 'write'} failed in ${this.dir}: ${(err as Error).message}`, { cause: err }));
          for (const p of [...batch, ...this.queue]) p.reject(failed);
          this.queue = [];
        }
      }
    } finally {
      this.writing = false;
    }
  }

  /**
   * After a failed batch: if it failed for want of space (and not in an fsync), cuts the
   * segment back to its last whole record, so the partial batch can neither be replayed nor
   * be followed by records, and says the journal may go on. False: it must fail for good.
   */
  private async cutBackAfterNoSpace(err: unknown): Promise<boolean> {
    if (err instanceof SyncFailed || !NO_SPACE.has((err as NodeJS.ErrnoException).code ?? '')) return false;
    const segment = this.segments.at(-1);
    if (!this.handle || !segment) return true; // no segment was opened: nothing was written
    try {
      await this.handle.truncate(segment.bytes);
      return true;
    } catch {
      return false;
    }
  }

  private async activeHandle(firstSeq: number): Promise<FileHandle> {
    const current = this.segments.at(-1);
    if (this.handle && current && current.bytes < SEGMENT_BYTES) return this.handle;
    if (this.handle && current) {
      // Cut what a recycled file held beyond our records: only the last segment may have a tail.
      await this.handle.truncate(current.bytes);
      if (this.syncOnRollover) {
        await this.handle.datasync().catch((err: unknown) => {
          throw new SyncFailed((err as Error).message, { cause: err });
        });
      } else this.unsynced.push(current.path);
      await this.handle.close();
    }
    this.handle = undefined;
    this.directoryChanged = true;
    // Named after the record that follows the previous segment's last, which is this batch's
    // first unless appends failed for want of space in between: never a gap (see the top).
    const name = current ? current.lastSeq + 1 : firstSeq;
    const path = join(this.dir, `${name.toString(16).padStart(16, '0')}.log`);
    const spare = this.spares.pop();
    if (spare !== undefined) await rename(spare, path);
    this.handle = await open(path, spare !== undefined ? 'r+' : 'w');
    this.segments.push({ firstSeq: name, lastSeq: name - 1, bytes: 0, path });
    return this.handle;
  }

  /** A segment no longer needed becomes a spare, or is deleted if there are enough spares. */
  private async retire(path: string): Promise<void> {
    if (this.spares.length >= SPARE_SEGMENTS) {
      await rm(path, { force: true });
      return;
    }
    const spare = join(this.dir, `spare-${basename(path)}`);
    await rename(path, spare);
    this.directoryChanged = true;
    this.spares.push(spare);
  }
}
