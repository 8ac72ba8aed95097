// Deletes the objects nothing needs any more (docs/format.md), in batches of DeleteObjects:
//
//   - an older generation of an extent that no snapshot keeps (RetainedObjects), once the store
//     has made everything put so far durable (ObjectStore.flush): the newer object must
//     survive a crash before the older one is given up;
//   - a tombstone, once nothing older of its extent is left in the bucket and the extent
//     layer knows every object there is (`complete`): deleting it earlier could bring an
//     older generation back.
//
// Deletions wait up to BATCH_DELAY_MS to share a request, so garbage costs about one request
// per 1000 objects, not one per upload. A failed batch stays queued and is tried again
// later: garbage left behind is harmless, and the next start finds it in its listing.

import type { Logger } from 'pino';
import type { ExtentObjectName } from './extent-keys.ts';
import { type ObjectCensus, keyOf } from './object-census.ts';
import type { RetainedObjects } from './retained-objects.ts';
import type { ObjectStore } from '../objects/object-store.ts';

/** DeleteObjects takes at most 1000 keys per request in S3. */
export const DELETE_BATCH = 1000;
const BATCH_DELAY_MS = 2000;
const RETRY_DELAY_MS = 10_000;


export class GarbageCollector {
  private readonly queue = new Map<string, ExtentObjectName>();
  private running: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  /** Objects deleted so far (for tests and `info`). */
  deleted = 0;
  private readonly objects: ObjectStore;
  private readonly census: ObjectCensus;
  private readonly retained: RetainedObjects;
  private readonly complete: () => boolean;

  /** Set while batches fail (said once, and once more when they work again). */
  private failing = false;
  private readonly log: Logger | undefined;

  constructor(objects: ObjectStore, census: ObjectCensus, retained: RetainedObjects, complete: () => boolean, log?: Logger) {
    this.log = log;
    this.objects = objects;
    this.census = census;
    this.retained = retained;
    this.complete = complete;
  }

  /** Objects waiting to be deleted. */
  get pending(): number {
    return this.queue.size;
  }

  /** Queues what of the extent's objects is garbage now, and schedules a batch. */
  consider(index: number): void {
    const others = this.census.others(index);
    for (const other of others) {
      if (!this.retained.has(index, other.generation)) this.queue.set(keyOf(other), other);
    }
    const current = this.census.current(index);
    if (current?.zero && others.length === 0 && this.complete()) this.queue.set(keyOf(current), current);
    this.schedule(this.queue.size >= DELETE_BATCH ? 0 : BATCH_DELAY_MS);
  }

  /** Deletes everything queued now (tests, `s3nbd gc`), and what that makes garbage in turn. */
  async collect(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    while (this.running) await this.running;
    while (this.queue.size > 0 && !this.closed) await this.run();
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    await this.running;
  }

  private schedule(ms: number): void {
    if (this.closed || this.queue.size === 0 || this.running) return;
    if (this.timer && ms > 0) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.run().then(() => {
        if (this.failing) this.log?.info({ pending: this.queue.size }, 'deleting superseded objects works again');
        this.failing = false;
        this.schedule(BATCH_DELAY_MS);
      }, (err: unknown) => {
        if (!this.failing) {
          this.log?.warn({ err: (err as Error).message, pending: this.queue.size },
            `deleting superseded objects failed; retrying every ${RETRY_DELAY_MS / 1000} s (what is left costs storage, not data)`);
        }
        this.failing = true;
        this.schedule(RETRY_DELAY_MS);
      });
    }, ms);
    this.timer.unref();
  }

  /** One batch. Rejects when the store failed (the batch stays queued). */
  private run(): Promise<void> {
    this.running ??= this.deleteBatch().finally(() => { this.running = undefined; });
    return this.running;
  }

  private async deleteBatch(): Promise<void> {
    const batch = [...this.queue].slice(0, DELETE_BATCH);
    if (batch.length === 0) return;
    await this.objects.flush();
    await this.objects.deleteMany(batch.map(([key]) => key));
    const touched = new Set<number>();
    for (const [key, name] of batch) {
      this.queue.delete(key);
      this.census.remove(name);
      touched.add(name.index);
    }
    this.deleted += batch.length;
    // A tombstone whose older generations are now all gone is garbage in its turn.
    for (const index of touched) {
      const current = this.census.current(index);
      if (current?.zero && this.census.others(index).length === 0 && this.complete()) this.queue.set(keyOf(current), current);
    }
  }
}
