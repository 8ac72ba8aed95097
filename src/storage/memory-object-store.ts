// Objects in a Map: for unit tests and protocol benchmarks. Volatile by nature, so flush()
// has nothing to do. Buffers are shared, never copied, in both directions (see ObjectStore).

import type { ObjectStore } from './object-store.ts';

export class MemoryObjectStore implements ObjectStore {
  readonly description = 'memory (volatile)';
  private readonly objects = new Map<string, Buffer>();

  get(key: string): Promise<Buffer | undefined> {
    return Promise.resolve(this.objects.get(key));
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
