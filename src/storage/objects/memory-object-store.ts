// Objects in a Map: for unit tests and protocol benchmarks. Volatile by nature, so flush()
// has nothing to do. Buffers are shared, never copied, in both directions (see ObjectStore).

import { joinedBody, type ObjectBody, type ObjectStore, type TaggedObject } from './object-store.ts';

export class MemoryObjectStore implements ObjectStore {
  readonly description = 'memory (volatile)';
  private readonly objects = new Map<string, Buffer>();
  private readonly tags = new Map<string, string>();
  private version = 0;

  get(key: string): Promise<Buffer | undefined> {
    return Promise.resolve(this.objects.get(key));
  }

  put(key: string, data: ObjectBody): Promise<void> {
    this.objects.set(key, joinedBody(data));
    this.tags.set(key, String(++this.version));
    return Promise.resolve();
  }

  getTagged(key: string): Promise<TaggedObject | undefined> {
    const data = this.objects.get(key);
    return Promise.resolve(data && { data, tag: this.tags.get(key)! });
  }

  putIf(key: string, data: Buffer, expectedTag: string | undefined): Promise<string | undefined> {
    if (this.tags.get(key) !== expectedTag) return Promise.resolve(undefined);
    return this.put(key, data).then(() => this.tags.get(key));
  }

  deleteMany(keys: readonly string[]): Promise<void> {
    for (const key of keys) {
      this.objects.delete(key);
      this.tags.delete(key);
    }
    return Promise.resolve();
  }

  async *list(prefix: string): AsyncIterable<string> {
    await Promise.resolve();
    for (const key of [...this.objects.keys()]) if (key.startsWith(prefix)) yield key;
  }

  async *listPrefixes(prefix: string): AsyncIterable<string> {
    await Promise.resolve();
    const names = new Set<string>();
    for (const key of this.objects.keys()) {
      const slash = key.indexOf('/', prefix.length);
      if (key.startsWith(prefix) && slash > prefix.length) names.add(key.slice(prefix.length, slash));
    }
    yield* names;
  }

  /** Number of objects held (for tests). */
  get size(): number {
    return this.objects.size;
  }

  flush(): Promise<void> {
    return Promise.resolve();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
