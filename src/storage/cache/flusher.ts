// The flusher: uploads dirty extents when they are due, retries until the store has them,
// wakes the flushes that wait for them, and trims the journal behind them.
//
// Retry policy, one place for the whole cache. The S3 store retries each request a few times
// itself (s3-object-store.ts); what still fails reaches this loop, which never gives up on
// data the journal holds:
//   - a failure retrying can fix (S3 unreachable, 5xx, throttling, a full disk): tried again
//     with capped exponential backoff and full jitter (RETRY_BASE_MS doubling to RETRY_CAP_MS),
//     logged at warn at most every REPEAT_LOG_INTERVAL_MS;
//   - a failure retrying cannot fix (StorageError.permanent: 403 AccessDenied, a missing
//     bucket, a store directory we may not write): the uploads are REFUSED. One error line
//     says what is wrong and what to do (S3NBD_UPLOADS_REFUSED), FLUSH and FUA fail with that
//     error instead of waiting for ever, writes are still acknowledged from the journal up to
//     --max-dirty (one that would pass it fails too), and each refused upload is tried again every REFUSED_RETRY_MS, so the
//     gateway carries on by itself once the cause is fixed ("uploads resumed");
//   - no attempt at all without a valid writer lease (mayUpload), nor once fenced or closed.
// Time comes from the context's clock, so tests drive this policy without real sleeps.

import { LogCodes } from '../../errors.ts';
import { LogThrottle } from '../../log-throttle.ts';
import { isAllZero } from '../extents/zeros.ts';
import { StorageError } from '../storage-error.ts';
import type { CleanExtents } from './clean-extents.ts';
import { type CacheContext, REPEAT_LOG_INTERVAL_MS } from './context.ts';
import type { Entry, EntryTable } from './entries.ts';
import type { EntryBytes } from './entry-bytes.ts';
import { SEGMENT_BYTES, uploadedRecord } from './journal.ts';
import { Ranges } from './ranges.ts';

/** The longest a dirty extent that keeps changing waits before it is uploaded. */
const MAX_DIRTY_AGE_MS = 10_000;
/**
 * How long an extent whose last change stopped short of its end (random writes, not a writer
 * going forward) waits without a change, instead of the upload delay: random writes come back
 * to an extent every so often, and each early upload costs a whole-extent PUT (and the CPU to
 * encode it) for a few KiB (see pump()).
 */
export const SCATTERED_IDLE_MS = 2_000;
export const RETRY_BASE_MS = 200;
export const RETRY_CAP_MS = 15_000;
/** How often a refused upload is tried again (see the header). */
export const REFUSED_RETRY_MS = 60_000;
/** While uploads stay refused, the error line is repeated this often. */
const REFUSED_LOG_INTERVAL_MS = 10 * 60_000;
/** How often a retry waiting for the lease looks again. */
const POLL_MS = 50;
/** Deletes of discarded extents sent in one batch (DeleteObjects takes 1000 keys). */
const DELETE_BATCH = 1000;

export class Flusher {
  uploadsInFlight = 0;
  uploadedExtents = 0;
  uploadFailures = 0;
  /** Extents with an upload task started (it may still wait for the extent's lock). */
  private readonly scheduled = new Set<number>();
  /** Sequence numbers of changes between reserve() and done(): their records must not be trimmed. */
  private readonly inProgress = new Set<number>();
  /** Flushes (and writes waiting for room) in progress: while any, dirty extents are uploaded without delay. */
  private urgent = 0;
  private stopTimer: (() => void) | undefined;
  /** Set while the store refuses uploads with a failure retrying cannot fix (see the header). */
  private refusal: StorageError | undefined;
  private readonly retryLog: LogThrottle;
  private refusedLog: LogThrottle;

  private readonly ctx: CacheContext;
  private readonly table: EntryTable;
  private readonly bytes: EntryBytes;
  private readonly clean: CleanExtents;

  constructor(ctx: CacheContext, table: EntryTable, bytes: EntryBytes, clean: CleanExtents) {
    this.ctx = ctx;
    this.table = table;
    this.bytes = bytes;
    this.clean = clean;
    this.retryLog = new LogThrottle(ctx.log, 'warn', { intervalMs: REPEAT_LOG_INTERVAL_MS, now: () => ctx.clock.now() });
    this.refusedLog = this.refusalThrottle();
  }

  private refusalThrottle(): LogThrottle {
    return new LogThrottle(this.ctx.log, 'error', { intervalMs: REFUSED_LOG_INTERVAL_MS, now: () => this.ctx.clock.now() });
  }

  /** Told of every upload of an extent's version `gen`, with the object's generation (undefined: deleted as zeros); under the lock. */
  onUploaded: (index: number, gen: number, generation: number | undefined) => void = () => {};

  /** Starts the periodic look for due uploads. */
  start(): void {
    this.stopTimer = this.ctx.clock.every(Math.max(20, Math.min(this.ctx.options.uploadDelayMs, 100)), () => this.pump());
    this.pump();
  }

  /** What the store refuses uploads with, if it does. */
  get refused(): StorageError | undefined {
    return this.refusal;
  }

  /** Uploads without delay until `until` settles. */
  async hurry(until: Promise<void>): Promise<void> {
    this.urgent++;
    try {
      this.pump();
      await until;
    } finally {
      this.urgent--;
    }
  }

  /**
   * Starts uploads of dirty extents that are due, up to the concurrency limit. An extent is
   * due once it has had no change for the upload delay (a sequential writer has moved on:
   * its last change reached the extent's end, or it rewrote the whole extent since the last
   * upload; SCATTERED_IDLE_MS otherwise), or
   * MAX_DIRTY_AGE_MS after it became dirty (one that keeps being rewritten is uploaded every
   * so often, not after each write), or at once when a flush waits, when dirty data passes
   * half the dirty limit, or when the journal (which keeps every rewrite until the extent is
   * uploaded, and is replayed in memory) passes the dirty limit plus two segments. `dirty`
   * iterates oldest first.
   */
  pump(): void {
    const { options, journal, extentSize, clock } = this.ctx;
    if (this.ctx.closed || this.ctx.fenced !== undefined || options.mayUpload?.() === false) return;
    const now = clock.now();
    const pressure = this.urgent > 0
      || this.table.dirtySlots * extentSize * 2 >= options.maxDirtyBytes
      || journal.bytes >= options.maxDirtyBytes + 2 * SEGMENT_BYTES;
    const due = (e: Entry): boolean => pressure
      || now - e.lastChange >= (e.zeros || movedOn(e, extentSize) ? options.uploadDelayMs : Math.max(SCATTERED_IDLE_MS, options.uploadDelayMs))
      || now - e.dirtySince >= Math.max(MAX_DIRTY_AGE_MS, options.uploadDelayMs);
    const deletes: Entry[] = [];
    for (const e of this.table.dirty.values()) {
      if (this.uploadsInFlight >= options.uploadConcurrency) break;
      if (e.uploading !== undefined || this.scheduled.has(e.index) || !due(e)) continue;
      if (e.zeros) {
        deletes.push(e);
        if (deletes.length === DELETE_BATCH) break;
        continue;
      }
      const index = e.index;
      this.scheduled.add(index);
      this.run(`upload of extent ${index}`, this.upload(index), () => this.scheduled.delete(index));
    }
    if (deletes.length > 0 && this.uploadsInFlight < options.uploadConcurrency) {
      this.run(`delete of ${deletes.length} extents`, this.deleteZeros(deletes));
    }
  }

  /** Counts a task in flight until it ends, then looks for more work. */
  private run(what: string, task: Promise<void>, after?: () => void): void {
    this.uploadsInFlight++;
    void task.catch((err: unknown) => {
      // Uploads stop only at close() (the journal keeps what they carried), or on a bug.
      if (this.ctx.closed) this.ctx.log.debug({ error: (err as Error).message }, `${what} stopped by the shutdown; the journal keeps it`);
      else this.ctx.log.error({ err }, `${what} abandoned`);
    }).finally(() => {
      after?.();
      this.uploadsInFlight--;
      this.pump();
    });
  }

  /** Uploads one dirty extent, retrying until it succeeds (the journal keeps it safe meanwhile). */
  private async upload(index: number): Promise<void> {
    const { locks, lower, extentSize } = this.ctx;
    let snapshot: { gen: number; data: Buffer } | undefined;
    while (!snapshot) {
      const step = await locks.with(index, async () => {
        const e = this.table.get(index);
        if (!e || e.gen <= e.uploadedGen || e.uploading !== undefined || e.zeros) return 'done';
        if (!e.valid.covers(0, extentSize)) return 'needs-base';
        e.uploading = e.gen;
        e.changedSinceUpload = new Ranges();
        snapshot = { gen: e.gen, data: await this.bytes.read(e, 0, extentSize) };
        return 'ready';
      });
      if (step === 'done') return;
      if (step === 'needs-base') await this.retrying(`read base of extent ${index}`, () => this.bytes.completeFromStore(index));
    }
    const { gen, data } = snapshot;
    // One scan for zeros: an all-zero extent is deleted, never stored.
    const zero = isAllZero(data);
    let generation: number | undefined;
    await this.retrying(`upload extent ${index}`, async () => {
      if (zero) {
        await lower.deleteExtents([index]);
        return;
      }
      const started = performance.now();
      generation = await lower.put(index, data);
      this.ctx.options.telemetry?.upload((performance.now() - started) / 1000, data.length);
    });
    await locks.with(index, () => {
      this.finishUpload(index, gen, zero ? undefined : data);
      this.onUploaded(index, gen, generation);
      return Promise.resolve();
    });
  }

  /** Uploads a snapshot's copy of an extent (ExtentObjects.putCopy()), by the same retry policy. */
  async putCopy(index: number, data: Buffer, generation: number): Promise<void> {
    await this.retrying(`upload extent ${index} for a snapshot`, () => this.ctx.lower.putCopy(index, data, generation));
  }

  private async deleteZeros(entries: Entry[]): Promise<void> {
    const batch = entries.map((e) => {
      e.uploading = e.gen;
      return { index: e.index, gen: e.gen };
    });
    await this.retrying(`delete ${batch.length} extents`, () => this.ctx.lower.deleteExtents(batch.map((b) => b.index)));
    // Under each extent's lock: a write may be giving the extent a slot right now.
    for (const { index, gen } of batch) {
      await this.ctx.locks.with(index, () => {
        this.finishUpload(index, gen, undefined);
        return Promise.resolve();
      });
    }
  }

  /**
   * Records that `gen` of the extent is in the store; cleans the entry if nothing changed
   * since. Call under the extent's lock.
   */
  private finishUpload(index: number, gen: number, data: Buffer | undefined): void {
    const { journal } = this.ctx;
    const e = this.table.get(index);
    this.uploadedExtents++;
    // Tell a future replay that this much of the extent is in the store. Losing the record
    // in a crash costs only a repeated upload.
    journal.append(uploadedRecord(journal.reserve(), index, gen)).catch(() => undefined);
    if (!e) return;
    e.uploading = undefined;
    this.table.update(e, () => { e.uploadedGen = Math.max(e.uploadedGen, gen); });
    if (e.gen === gen) {
      if (e.zeros) this.table.forget(e);
      else {
        if (e.journalPieces.length > 0) {
          // Bytes of it are in the journal, which may now be trimmed, not in the slot: the store
          // (and the memory cache) hold the extent from now on.
          this.table.releaseSlot(e);
          this.table.forget(e);
        } else {
          this.table.markClean(e);
        }
        if (data && !e.streamedWrite) this.clean.keep(index, data);
      }
      this.table.wakeRoomWaiters();
    }
    this.table.uploaded(e);
    this.trimJournal();
  }

  /** Runs `fn` until it succeeds, by the policy in the header. */
  private async retrying(what: string, fn: () => Promise<void>): Promise<void> {
    const { ctx } = this;
    for (let attempt = 0; ; attempt++) {
      // Not even a retry without a valid lease: after a long S3 outage the volume may belong
      // to another gateway, and this attempt would overwrite its data.
      while (ctx.options.mayUpload?.() === false && !ctx.closed && ctx.fenced === undefined) await ctx.clock.sleep(POLL_MS, ctx.closingSignal);
      ctx.checkNotFenced();
      if (ctx.options.mayUpload?.() === false) throw new StorageError('ESHUTDOWN', 'the cache was closed while the lease was not valid');
      try {
        await fn();
        this.resumed();
        return;
      } catch (err) {
        if (ctx.closed) throw err;
        this.uploadFailures++;
        let delay: number;
        if (err instanceof StorageError && err.permanent) {
          delay = REFUSED_RETRY_MS;
          this.refuse(err, what);
        } else {
          delay = ctx.clock.random() * Math.min(RETRY_CAP_MS, RETRY_BASE_MS * 2 ** attempt);
          // Rate-limited: with S3 down, every upload in flight fails every few seconds.
          this.retryLog.write({ err: (err as Error).message, attempt: attempt + 1, retryInMs: Math.round(delay) }, `${what} failed; retrying`);
        }
        await ctx.clock.sleep(delay, ctx.closingSignal);
      }
    }
  }

  /** The store refused an upload for good: say so once, and fail the flushes that wait. */
  private refuse(err: StorageError, what: string): void {
    const first = this.refusal === undefined;
    this.refusal = err;
    this.table.failWaiters(err);
    const fields = { code: LogCodes.uploadsRefused, errno: err.errno, error: err.message, dirtyBytes: this.table.dirtySlots * this.ctx.extentSize };
    const message = `the store refuses uploads (${what}): retrying cannot fix this. Writes are still acknowledged from the journal up `
      + `to --max-dirty, FLUSH and FUA fail with ${err.errno}, and uploads are tried again every ${REFUSED_RETRY_MS / 1000} s. `
      + 'Fix: give the credentials s3:PutObject and s3:DeleteObject on the bucket (or make --store writable), and check that the bucket exists';
    // A new refusal is said at once; while it lasts, again every REFUSED_LOG_INTERVAL_MS.
    if (first) this.refusedLog = this.refusalThrottle();
    this.refusedLog.write(fields, message);
  }

  /** An upload went through: if they were refused, they are not any more. */
  private resumed(): void {
    if (this.refusal === undefined) return;
    this.ctx.log.info({ dirtyBytes: this.table.dirtySlots * this.ctx.extentSize }, 'uploads resumed: the store accepts them again');
    this.refusal = undefined;
  }

  /** Deletes journal segments whose every change is in the store. */
  private trimJournal(): void {
    if (this.ctx.closed) return;
    this.ctx.journal.trim(this.neededSeq()).catch((err: unknown) => this.ctx.log.warn({ err }, 'journal trim failed'));
  }

  /**
   * A sequence number for a change; until the change is applied (or failed) its journal record
   * must not be trimmed, although no entry is dirty with it yet. done(seq) ends that.
   */
  reserve(): number {
    const seq = this.ctx.journal.reserve();
    this.inProgress.add(seq);
    return seq;
  }

  done(seq: number): void {
    this.inProgress.delete(seq);
  }

  /**
   * The oldest journal sequence number a recovery would still need: a dirty extent needs its
   * changes after its last upload, and none before its first change since it was last clean.
   * (The upload generation alone is 0 for an extent never uploaded: during a long sequential
   * write, which always has such an extent dirty, the journal grew until the writes paused.)
   */
  neededSeq(): number {
    let needed = Number.MAX_SAFE_INTEGER;
    for (const seq of this.inProgress) needed = Math.min(needed, seq);
    for (const e of this.table.dirty.values()) {
      // Pieces are read until the extent is clean, even those an upload already covered.
      needed = Math.min(needed, Math.max(e.uploadedGen + 1, e.firstDirtySeq), e.journalPieces[0]?.seq ?? needed);
    }
    return needed;
  }

  /**
   * Waits until the changes to these extents (all dirty ones by default) made so far are
   * uploaded. Resolves false at once when there was nothing to wait for; rejects with the
   * refusal while the store refuses uploads.
   */
  async waitForUploads(indexes?: readonly number[]): Promise<boolean> {
    const dirty = this.table.dirty;
    const candidates = indexes ? indexes.map((i) => dirty.get(i)).filter((e) => e !== undefined) : [...dirty.values()];
    const targets = candidates.filter((e) => e.gen > e.uploadedGen);
    if (targets.length === 0) return false;
    if (this.refusal) throw this.refusal;
    await this.hurry(Promise.all(targets.map((e) => this.table.waitUploaded(e.index, e.gen))).then(() => undefined));
    return true;
  }

  /** Uploads everything dirty, logging progress, for up to `timeoutMs`. Resolves true when all is uploaded. */
  async drain(timeoutMs: number): Promise<boolean> {
    const { log, extentSize } = this.ctx;
    const counts = () => ({
      dirtyBytes: this.table.dirtySlots * extentSize,
      pendingDeletes: [...this.table.dirty.values()].filter((e) => e.zeros).length,
      uploadsInFlight: this.uploadsInFlight,
    });
    const started = Date.now();
    const progress = setInterval(() => log.info(counts(), 'draining dirty data to the store'), 2000);
    let timer: NodeJS.Timeout | undefined;
    try {
      const all = (async () => {
        while (await this.waitForUploads());
      })();
      const timedOut = new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), timeoutMs); });
      let refused = false;
      const done = await Promise.race([all.then(() => true, () => {
        refused = true;
        return false;
      }), timedOut]);
      const outcome = done ? 'all dirty data uploaded' : `${refused ? 'drain stopped: the store refuses uploads' : 'drain timed out'}: the journal keeps the rest for the next start`;
      log.info({ ms: Date.now() - started, complete: done, dirtyBytes: counts().dirtyBytes }, outcome);
      return done;
    } finally {
      clearTimeout(timer);
      clearInterval(progress);
    }
  }

  /** No new uploads from here on; resolves once those in flight have finished or given up. */
  async stop(): Promise<void> {
    this.stopTimer?.();
    // Uploads in flight finish or give up at their next failure; none may touch the journal
    // or the slot file after this returns.
    while (this.uploadsInFlight > 0) await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/**
 * Whether the writer has most likely moved on from the extent: its last change reached the
 * end, or everything changed since the last upload covers it (requests that came out of
 * order). Either way an upload now carries mostly new bytes.
 */
function movedOn(e: Entry, extentSize: number): boolean {
  return e.changedToEnd || e.changedSinceUpload?.covers(0, extentSize) === true;
}
