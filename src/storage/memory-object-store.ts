// Objects in a Map: for unit tests and protocol benchmarks. Volatile by nature, so flush()
// has nothing to do. put() keeps a reference to the caller's buffer (see ObjectStore.put).

import type { ObjectStore } from './object-store.ts';

export class MemoryObjectStore implements ObjectStore {
  readonly description = 'memory (volatile)';
  private readonly objects = new Map<string, Buffer>();

  get(key: string): Promise<Buffer | undefined> {
    const data = this.objects.get(key);
    return Promise.resolve(data && Buffer.from(data));
  }

  put(key: string, data: Buffer): Promise<void> {
    this.objects.set(key, data);
    return Promise.resolve();
  }

  putIfAbsent(key: string, data: Buffer): Promise<boolean> {
    if (this.objects.has(key)) return Promise.resolve(false);
    this.objects.set(key, data);
    return Promise.resolve(true);
  }

  deleteMany(keys: readonly string[]): Promise<void> {
    for (const key of keys) this.objects.delete(key);
    return Promise.resolve();
  }

  async *list(prefix: string): AsyncIterable<string> {
    await Promise.resolve();
    for (const key of [...this.objects.keys()]) if (key.startsWith(prefix)) yield key;
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
