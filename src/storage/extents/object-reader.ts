// Reads one extent object and checks it: the GET (from this volume's store, or from a clone's
// origin), the codec's check against the object's identity, and the bound on fetches in
// flight. ObjectExtents decides which object an extent is; this file only reads it.

import type { Logger } from 'pino';
import { LogCodes } from '../../errors.ts';
import type { VolumeTelemetry } from '../../telemetry.ts';
import { type ExtentCodec, rawCodec } from '../format/extent-codec.ts';
import type { ExtentObjectName } from './extent-keys.ts';
import { keyOf } from './object-census.ts';
import type { ObjectStore } from '../objects/object-store.ts';
import { StorageError } from '../storage-error.ts';

/**
 * Whole extents being fetched from the store at once, in bytes (at least 8 extents). A read
 * of one byte fetches a whole extent, so the NBD in-flight budget, which counts the bytes
 * asked for, did not bound them (256 one-byte reads per connection, 256 extents in memory);
 * nor did anything bound the write-back cache's read-ahead. More fetches wait their turn.
 */
export const MAX_FETCH_BYTES = 64 * 1024 * 1024;

/** Another volume whose objects a clone reads: its store, and the id its objects' checksums bind. */
export interface ExtentSource {
  readonly objects: ObjectStore;
  readonly volumeId: string;
  readonly codec?: ExtentCodec;
}

export interface ObjectReaderOptions {
  readonly extentSize: number;
  /** This volume's store, id and codec: source 0. */
  readonly own: ExtentSource;
  /** A clone's origins: source i is sources[i - 1]. */
  readonly sources: readonly ExtentSource[];
  /** Where an object that fails its check twice is reported. */
  readonly log?: Logger | undefined;
  /** Told of every object fetched and decoded (the admin endpoint's metrics). */
  readonly telemetry?: VolumeTelemetry | undefined;
}

export class ObjectReader {
  private readonly options: ObjectReaderOptions;
  private fetching = 0;
  private readonly maxFetches: number;
  private readonly queue: Array<() => void> = [];

  constructor(options: ObjectReaderOptions) {
    this.options = options;
    this.maxFetches = Math.max(8, Math.floor(MAX_FETCH_BYTES / options.extentSize));
  }

  /** True while a read would have to wait for its turn (read-ahead then does not ask). */
  get full(): boolean {
    return this.fetching >= this.maxFetches;
  }

  /** The store and identity an object of `source` has; throws for a source this reader was not given. */
  sourceOf(index: number, source = 0): ExtentSource {
    if (source === 0) return this.options.own;
    const found = this.options.sources[source - 1];
    if (source < 1 || !found) throw new StorageError('EIO', `extent ${index}: its object is in source ${source}, which is not open`);
    return found;
  }

  /** The object's extent, or undefined when the object is not there; waits for its turn (MAX_FETCH_BYTES). */
  async read(name: ExtentObjectName): Promise<Buffer | undefined> {
    while (this.fetching >= this.maxFetches) await new Promise<void>((resolve) => this.queue.push(resolve));
    this.fetching++;
    try {
      const data = await this.getDecoded(name);
      const { extentSize } = this.options;
      if (data !== undefined && data.length !== extentSize) {
        throw new StorageError('EIO', `extent ${name.index} has ${data.length} bytes, expected ${extentSize}`);
      }
      return data;
    } finally {
      this.fetching--;
      this.queue.shift()?.();
    }
  }

  /**
   * The object, decoded. A body that fails the codec's check (damaged in the store or on the
   * way, or another extent's object) is fetched once more, in case it was the way; if the
   * second fails too, the read fails with EIO and one error line names the key.
   */
  private async getDecoded(name: ExtentObjectName): Promise<Buffer | undefined> {
    const key = keyOf(name);
    // A clone's origin object: its store, its codec, and its volume's id bound in its checksum.
    const from = this.sourceOf(name.index, name.source);
    const codec = from.codec ?? rawCodec;
    const id = { volumeId: from.volumeId, index: name.index, generation: name.generation };
    const { log } = this.options;
    for (let attempt = 1; ; attempt++) {
      const started = performance.now();
      const body = await from.objects.get(key, codec.maxBodyBytes(this.options.extentSize));
      if (body === undefined) return undefined;
      // Read now: decode() may hand a fresh body's memory to the hashing thread and back.
      const bytes = body.length;
      try {
        const data = await codec.decode(id, body, from.objects.freshBodies === true);
        this.options.telemetry?.fetch((performance.now() - started) / 1000, bytes);
        return data;
      } catch (err) {
        if (!(err instanceof StorageError) || attempt >= 2) {
          const reason = (err as Error).message;
          log?.error({ code: LogCodes.objectCorrupt, key, extent: name.index, generation: name.generation, bytes, reason },
            'extent object failed its check twice: the read fails with EIO (the object is never served as data)');
          throw new StorageError('EIO', `extent object ${key} failed its check: ${reason}`);
        }
        log?.warn({ key, extent: name.index, reason: err.message }, 'extent object failed its check: fetching it again');
      }
    }
  }
}
