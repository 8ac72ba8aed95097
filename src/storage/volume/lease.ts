// One writer per volume. A running gateway holds the lease object
//
//   s3nbd-lease.json  {"owner":"<gateway id>","token":"<process token>","lock":"<lock id>","epoch":<n>,
//                      "host":"<hostname>","pid":<pid>,"expiresAt":"<ISO 8601>","renewedAt":"<ISO 8601>"}
//
// and renews it every third of its time to live with a compare-and-swap (ObjectStore.putIf).
// A second gateway finds an unexpired lease of another owner and refuses to start, unless told
// to take over. The gateway id lives in the cache directory, so a gateway restarted on its own
// cache directory after a crash recognises its own lease and resumes at once.
//
// Whoever replaces an unexpired lease starts serving at once, but uploads only once the
// previous writer's lease would have lapsed (80% of its lifetime after its last renewal, what
// that writer's own isValid() allows), so the two never upload at the same time: after a
// --take-over, and for a process with our gateway id on a copy of the cache directory. Not
// after kill -9: the lease names the cache directory lock its writer held (cache-lock.ts), and
// a writer that held the lock we hold now is gone.
//
// The token is random, made by each process when it takes the lease. It tells our own writes
// from everybody else's, including another process with the same gateway id (a copy of the
// cache directory, which no lock can see):
//
//   - A renewal whose PUT reached S3 but whose answer was lost (a timeout, a reset, a stall
//     longer than the request's time limit) leaves the lease with a tag we never saw, so the
//     next compare-and-swap fails. If the lease then holds our token, the write was ours: we
//     adopt its tag and renew on top of it. Without the token, this gateway would fence
//     itself ("another gateway took over", naming its own id) after an S3 stall.
//   - Only a lease with another token is another owner, and only that fences this gateway.
//
// The epoch numbers the writers of the volume: each taking of the lease writes one more than
// the previous lease's, and at least `minEpoch` (above every epoch in the bucket's extent keys,
// for a lease deleted by hand). The writer's uploads carry it in their generations
// (extents/generations.ts), so a later writer's objects always win over an earlier one's.
//
// `lateUntil` is passed on from lease to lease: until then, a request of a holder that died
// without releasing the lease may still be applied by an S3 server (a manifest PUT of a killed
// `snapshot create`: registry.ts). Whoever takes a lease that was not released sets it to that
// lease's expiry plus LATE_WRITE_MS, or keeps the later one it finds; holders that delete
// objects (the snapshot commands) wait for it first. A holder that only deletes garbage
// (`onlyDeletes`: `s3nbd gc`, `snapshot delete`) sets no mark when it dies: a late delete of
// garbage is harmless.
//
// One renewal runs at a time (each schedules the next), so renewals never race each other.
// While no renewal has succeeded for 80% of the lifetime, isValid() is false and nothing may
// be uploaded: the lease may have expired, and another gateway may legitimately own the
// volume by now. Writes are still acknowledged (the journal keeps them) up to --max-dirty.
// However long S3 is away, the renewals go on; once S3 answers, the first one tells whether
// the lease is still ours (nobody changed it, or it holds our token: uploads resume) or not
// (fenced). Validity is measured on a monotonic clock from the moment a renewal's body was
// made, not from when its answer came: the lease's expiry in S3 counts from the former.

import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { Errors } from '../../errors.ts';
import type { ObjectStore } from '../objects/object-store.ts';

export const LEASE_KEY = 's3nbd-lease.json';

/** The share of the lifetime after the last renewal during which the lease counts as ours. */
const VALID_SHARE = 0.8;
/** How long after a dead holder's lease expired its requests may still be applied (as stack.ts's LATE_UPLOAD_MS). */
export const LATE_WRITE_MS = 60_000;
const WARN_EVERY_MS = 30_000;

interface LeaseBody {
  readonly owner: string;
  /** Absent in leases written before tokens existed: never ours then. */
  readonly token?: string;
  /** The cache directory lock its writer held (CacheDirLock.id), if any. */
  readonly lock?: string;
  /** Absent in leases written before epochs existed (format 1): read as 0. */
  readonly epoch?: number;
  /** See the top of the file; absent when nothing may still land. */
  readonly lateUntil?: string;
  /** The holder writes nothing but the lease: its requests landing late are harmless. */
  readonly onlyDeletes?: boolean;
  readonly host: string;
  readonly pid: number;
  readonly expiresAt: string;
  readonly renewedAt: string;
}

export interface LeaseOptions {
  readonly owner: string;
  /** The cache directory lock this process holds (CacheDirLock.id). */
  readonly lockId?: string | undefined;
  readonly ttlMs: number;
  readonly takeOver: boolean;
  /** The least epoch this writer may take (one above every epoch in the bucket). */
  readonly minEpoch?: number;
  /** This holder only deletes garbage (see lateUntil at the top of the file). */
  readonly onlyDeletes?: boolean;
  readonly log: Logger;
  /** Called once if another gateway took the volume: stop writing. */
  readonly onLost: (by: string) => void;
}

export class Lease {
  /** This process's token, in every lease body it writes. */
  readonly token: string;
  /** This writer's epoch, in every lease body it writes. */
  readonly epoch: number;
  /** Wall-clock ms until which a dead holder's requests may still land (0: none); in every body. */
  readonly lateUntil: number;
  /**
   * Who held the lease before us, and whether it let go of it (a clean stop) rather than
   * letting it lapse (a crash, whose gateway may have left dirty data in its journal).
   */
  previousHolder: { readonly owner: string; readonly host: string; readonly pid: number; readonly released: boolean } | undefined;
  /** The tag of the lease as we last wrote it; undefined: the object is gone, create it. */
  private tag: string | undefined;
  /** performance.now() when the body of our last confirmed write was made. */
  private validFrom: number;
  /** performance.now() before which the previous holder may still be uploading (see acquire). */
  private readonly notBefore: number;
  private timer: NodeJS.Timeout | undefined;
  private lost = false;
  private stopped = false;
  /** When the current run of failed renewals began, or undefined. */
  private failingSince: number | undefined;
  /** When a failed renewal was last logged at warn level (once per WARN_EVERY_MS). */
  private warnedAt = -Infinity;
  /** isValid() has said false since the last renewal (logged once: uploads are paused). */
  private paused = false;
  private readonly objects: ObjectStore;
  private readonly options: LeaseOptions;

  private constructor(objects: ObjectStore, options: LeaseOptions, token: string, epoch: number, lateUntil: number, tag: string, validFrom: number, notBefore: number) {
    this.objects = objects;
    this.options = options;
    this.token = token;
    this.epoch = epoch;
    this.lateUntil = lateUntil;
    this.tag = tag;
    this.validFrom = validFrom;
    this.notBefore = notBefore;
  }

  /** Takes the lease, or throws S3NBD_VOLUME_IN_USE while another gateway holds it. */
  static async acquire(objects: ObjectStore, options: LeaseOptions): Promise<Lease> {
    const token = randomUUID();
    for (let attempt = 0; attempt < 5; attempt++) {
      const current = await objects.getTagged(LEASE_KEY);
      if (current) {
        const holder = parse(current.data);
        const mine = holder?.owner === options.owner;
        const expired = !holder || Date.parse(holder.expiresAt) <= Date.now();
        if (!mine && !expired && !options.takeOver) {
          throw Errors.volumeInUse(objects.description, `${holder.owner} on ${holder.host} (pid ${holder.pid})`, holder.expiresAt);
        }
        if (!mine && !expired) options.log.warn({ previous: holder }, 'taking over the volume from another gateway');
      }
      const epoch = Math.max((current ? parse(current.data)?.epoch ?? 0 : 0) + 1, options.minEpoch ?? 1);
      const lateUntil = lateWritesUntil(current && parse(current.data));
      const made = performance.now();
      const tag = await objects.putIf(LEASE_KEY, body(options, token, epoch, lateUntil), current?.tag);
      if (tag !== undefined) {
        const wait = current ? previousHolderMayUploadFor(parse(current.data), options) : 0;
        if (wait > 0) {
          options.log.warn({ previous: parse(current!.data), waitMs: Math.round(wait) },
            'the previous holder of the lease may still be uploading: uploads start once its lease would have lapsed; writes are acknowledged meanwhile');
        }
        const lease = new Lease(objects, options, token, epoch, lateUntil, tag, made, made + wait);
        const previous = current && parse(current.data);
        if (previous) {
          const released = Date.parse(previous.expiresAt) <= Date.parse(previous.renewedAt);
          lease.previousHolder = { owner: previous.owner, host: previous.host, pid: previous.pid, released };
        }
        lease.schedule(lease.renewInterval());
        return lease;
      }
      // Someone else wrote the lease between our read and our write: look again.
    }
    throw Errors.volumeInUse(objects.description, 'another gateway (the lease keeps changing)', 'unknown');
  }

  /** Another gateway took the lease over: this one is fenced off for good. */
  get fenced(): boolean {
    return this.lost;
  }

  /** True while our last renewal is recent enough that nobody else can have taken over. */
  isValid(): boolean {
    if (this.lost || this.stopped) return false;
    const now = performance.now();
    if (now < this.notBefore) return false;
    const age = now - this.validFrom;
    if (age < this.options.ttlMs * VALID_SHARE) return true;
    if (!this.paused) {
      this.paused = true;
      this.options.log.warn({ sinceRenewalMs: Math.round(age) }, 'lease not renewed in time (S3 unreachable or slow): uploads paused until a renewal succeeds; writes are still acknowledged');
    }
    return false;
  }

  private renewInterval(): number {
    return Math.max(this.options.ttlMs / 3, 100);
  }

  private schedule(ms: number): void {
    this.timer = setTimeout(() => void this.renewLoop(), ms);
    this.timer.unref();
  }

  private async renewLoop(): Promise<void> {
    if (this.lost || this.stopped) return;
    let renewed = false;
    const previous = this.validFrom;
    try {
      renewed = await this.renew();
    } catch (err) {
      // S3 is unreachable or failing: keep trying, however long it takes. isValid() turns
      // false before the lease can expire, and uploads wait for the next renewal.
      // Logged at warn level once per WARN_EVERY_MS: an outage of hours is not a flood.
      const now = performance.now();
      this.failingSince ??= now;
      const level = now - this.warnedAt >= WARN_EVERY_MS ? 'warn' : 'debug';
      if (level === 'warn') this.warnedAt = now;
      this.options.log[level]({ err: (err as Error).message, failingForMs: Math.round(now - this.failingSince), uploadsPaused: !this.isValid() },
        'lease renewal failed; retrying');
    }
    if (this.lost || this.stopped) return;
    if (renewed) {
      if (this.paused || this.failingSince !== undefined) {
        this.options.log.info({ sinceLastRenewalMs: Math.round(this.validFrom - previous) }, 'lease renewed again; uploads resume');
      }
      this.failingSince = undefined;
      this.paused = false;
      this.warnedAt = -Infinity;
    }
    // After a failure, try again soon: uploads may be paused until it works.
    this.schedule(renewed ? this.renewInterval() : Math.min(this.renewInterval(), 1000));
  }

  /**
   * One compare-and-swap on the lease, resolving whether it is ours and renewed. A failed
   * condition is resolved by reading the lease: our token (an earlier write of ours whose
   * answer we never got) or no lease at all means write again on top of it; anything else is
   * another owner, and fences this gateway. Throws when S3 does not answer.
   */
  private async renew(): Promise<boolean> {
    for (let round = 0; round < 3; round++) {
      const made = performance.now();
      const tag = await this.objects.putIf(LEASE_KEY, body(this.options, this.token, this.epoch, this.lateUntil), this.tag);
      if (this.stopped) return false;
      if (tag !== undefined) {
        this.tag = tag;
        this.validFrom = made;
        return true;
      }
      const current = await this.objects.getTagged(LEASE_KEY);
      if (this.stopped) return false;
      if (!current) {
        // Deleted by hand: nobody owns it. Create it again (if someone else does first, the
        // next round finds their lease).
        this.options.log.warn('the lease object was deleted; writing it again');
        this.tag = undefined;
        continue;
      }
      const holder = parse(current.data);
      if (holder?.token === this.token) {
        this.options.log.info('lease renewal met an earlier renewal of ours whose answer was lost; carrying on from it');
        this.tag = current.tag;
        continue;
      }
      this.fence(holder);
      return false;
    }
    // The lease changed under us three times in a row, each time to something we could explain:
    // try again at the next round.
    return false;
  }

  private fence(holder: LeaseBody | undefined): void {
    this.lost = true;
    clearTimeout(this.timer);
    const by = !holder ? 'nobody (the lease is unreadable)'
      : holder.owner === this.options.owner
        ? `another process with this gateway's id (${holder.owner} on ${holder.host}, pid ${holder.pid}: a copy of its cache directory?)`
        : `${holder.owner} on ${holder.host}`;
    this.options.log.error({ by, token: this.token, theirs: holder?.token }, 'lease lost: another gateway took over this volume; writes stop');
    this.options.onLost(by);
  }

  /** Gives the lease up, so the next gateway can start without waiting for it to expire. */
  async release(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.lost) return;
    const released = { ...JSON.parse(body(this.options, this.token, this.epoch, this.lateUntil).toString()) as LeaseBody, expiresAt: new Date(0).toISOString() };
    const data = Buffer.from(JSON.stringify(released));
    let tag = this.tag;
    // Twice at most: a renewal still in flight may have moved the tag (to a body of ours).
    for (let round = 0; round < 2; round++) {
      const written = await this.objects.putIf(LEASE_KEY, data, tag).then((t) => t !== undefined, () => true);
      if (written) return; // released, or S3 is away: then the lease simply expires
      const current = await this.objects.getTagged(LEASE_KEY).catch(() => undefined);
      if (!current || parse(current.data)?.token !== this.token) return; // not ours to release
      tag = current.tag;
    }
  }
}

/**
 * How long the writer of an unexpired lease we just replaced may still believe it holds it,
 * in ms: until 80% of its lifetime after its last renewal (what its own isValid() allows).
 * Another process that held our cache directory's lock is gone (we hold the lock now): no
 * wait, so a restart after kill -9 uploads at once. Anyone else (a take-over, a process with
 * our gateway id on a copy of the cache directory) might still be uploading, and our uploads
 * would race its own: wait. Wall clocks are compared, as for the expiry itself.
 */
function previousHolderMayUploadFor(holder: LeaseBody | undefined, options: LeaseOptions): number {
  if (!holder) return 0;
  if (options.lockId !== undefined && holder.lock === options.lockId) return 0;
  const renewedAt = Date.parse(holder.renewedAt);
  const expiresAt = Date.parse(holder.expiresAt);
  if (!Number.isFinite(renewedAt) || !Number.isFinite(expiresAt)) return 0;
  const validUntil = renewedAt + (expiresAt - renewedAt) * VALID_SHARE;
  // Never longer than a lifetime of ours: a clock far ahead must not stop uploads for good.
  return Math.min(Math.max(0, validUntil - Date.now()), options.ttlMs);
}

/** See the top of the file: the later of the mark the previous lease carries and, if it was not released, its expiry plus LATE_WRITE_MS. */
function lateWritesUntil(previous: LeaseBody | undefined): number {
  if (!previous) return 0;
  const carried = Date.parse(previous.lateUntil ?? '') || 0;
  const expiresAt = Date.parse(previous.expiresAt);
  const released = expiresAt <= Date.parse(previous.renewedAt);
  return released || previous.onlyDeletes === true || !Number.isFinite(expiresAt) ? carried : Math.max(carried, expiresAt + LATE_WRITE_MS);
}

function body(options: LeaseOptions, token: string, epoch: number, lateUntil: number): Buffer {
  const now = Date.now();
  const lease: LeaseBody = {
    owner: options.owner,
    token,
    ...options.lockId !== undefined ? { lock: options.lockId } : {},
    epoch,
    ...lateUntil > now ? { lateUntil: new Date(lateUntil).toISOString() } : {},
    ...options.onlyDeletes === true ? { onlyDeletes: true } : {},
    host: hostname(),
    pid: process.pid,
    expiresAt: new Date(now + options.ttlMs).toISOString(),
    renewedAt: new Date(now).toISOString(),
  };
  return Buffer.from(`${JSON.stringify(lease)}\n`);
}

function parse(data: Buffer): LeaseBody | undefined {
  try {
    const v = JSON.parse(data.toString('utf8')) as Partial<LeaseBody>;
    if (typeof v.owner === 'string' && typeof v.expiresAt === 'string') return v as LeaseBody;
  } catch {
    // Unreadable: treated as no lease.
  }
  return undefined;
}

/** Who holds the volume's lease now, if anyone: its holder while unexpired (for `volume list`). */
export async function leaseHolder(objects: ObjectStore): Promise<{ owner: string; host: string; pid: number; expiresAt: string } | undefined> {
  const data = await objects.get(LEASE_KEY);
  const lease = data && parse(data);
  if (!lease || Date.parse(lease.expiresAt) <= Date.now()) return undefined;
  return { owner: lease.owner, host: lease.host, pid: lease.pid, expiresAt: lease.expiresAt };
}
