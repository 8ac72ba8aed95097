// One writer per volume. A running gateway holds the lease object
//
//   s3nbd-lease.json  {"owner":"<gateway id>","host":"<hostname>","pid":<pid>,
//                      "expiresAt":"<ISO 8601>","renewedAt":"<ISO 8601>"}
//
// and renews it every third of its time to live with a compare-and-swap (ObjectStore.putIf).
// A second gateway finds an unexpired lease of another owner and refuses to start, unless told
// to take over. A gateway whose renewal finds someone else's lease has been fenced off: it must
// stop writing. The gateway id lives in the cache directory, so a gateway restarted on its own
// cache directory after a crash recognises its own lease and resumes at once.

import { hostname } from 'node:os';
import type { Logger } from 'pino';
import { Errors } from '../errors.ts';
import type { ObjectStore } from './object-store.ts';

export const LEASE_KEY = 's3nbd-lease.json';

interface LeaseBody {
  readonly owner: string;
  readonly host: string;
  readonly pid: number;
  readonly expiresAt: string;
  readonly renewedAt: string;
}

export interface LeaseOptions {
  readonly owner: string;
  readonly ttlMs: number;
  readonly takeOver: boolean;
  readonly log: Logger;
  /** Called once if another gateway took the volume: stop writing. */
  readonly onLost: (by: string) => void;
}

export class Lease {
  private tag: string;
  private renewedAt: number;
  private timer: NodeJS.Timeout | undefined;
  private lost = false;
  private readonly objects: ObjectStore;
  private readonly options: LeaseOptions;

  private constructor(objects: ObjectStore, options: LeaseOptions, tag: string) {
    this.objects = objects;
    this.options = options;
    this.tag = tag;
    this.renewedAt = Date.now();
  }

  /** Takes the lease, or throws S3NBD_VOLUME_IN_USE while another gateway holds it. */
  static async acquire(objects: ObjectStore, options: LeaseOptions): Promise<Lease> {
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
      const tag = await objects.putIf(LEASE_KEY, body(options), current?.tag);
      if (tag !== undefined) {
        const lease = new Lease(objects, options, tag);
        lease.timer = setInterval(() => void lease.renew(), Math.max(options.ttlMs / 3, 100));
        lease.timer.unref();
        return lease;
      }
      // Someone else wrote the lease between our read and our write: look again.
    }
    throw Errors.volumeInUse(objects.description, 'another gateway (the lease keeps changing)', 'unknown');
  }

  /** True while our last renewal is recent enough that nobody else can have taken over. */
  isValid(): boolean {
    return !this.lost && Date.now() - this.renewedAt < this.options.ttlMs * 0.8;
  }

  private async renew(): Promise<void> {
    if (this.lost) return;
    try {
      const tag = await this.objects.putIf(LEASE_KEY, body(this.options), this.tag);
      if (tag === undefined) {
        this.lost = true;
        clearInterval(this.timer);
        const holder = parse((await this.objects.getTagged(LEASE_KEY))?.data ?? Buffer.alloc(0));
        const by = holder ? `${holder.owner} on ${holder.host}` : 'nobody (the lease was deleted)';
        this.options.log.error({ by }, 'lease lost: another gateway took over this volume; writes stop');
        this.options.onLost(by);
        return;
      }
      this.tag = tag;
      this.renewedAt = Date.now();
    } catch (err) {
      // The store is unreachable: keep trying. isValid() turns false before the lease expires.
      this.options.log.warn({ err: (err as Error).message }, 'lease renewal failed; retrying');
    }
  }

  /** Gives the lease up, so the next gateway can start without waiting for it to expire. */
  async release(): Promise<void> {
    clearInterval(this.timer);
    if (this.lost) return;
    const released = { ...JSON.parse(body(this.options).toString()) as LeaseBody, expiresAt: new Date(0).toISOString() };
    await this.objects.putIf(LEASE_KEY, Buffer.from(JSON.stringify(released)), this.tag).catch(() => undefined);
  }
}

function body(options: LeaseOptions): Buffer {
  const now = Date.now();
  const lease: LeaseBody = {
    owner: options.owner,
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
