// A pass-through ObjectStore that counts calls and fails the ones it is told to, for tests
// of how layers above react to a broken store. It copies on put, like a real remote store.

import type { ObjectStore, TaggedObject } from '../../src/storage/object-store.ts';

export type Operation = 'get' | 'put' | 'putIf' | 'deleteMany' | 'list' | 'flush';

export class FaultyStore implements ObjectStore {
  readonly description: string;
  readonly calls: Record<Operation, number> = { get: 0, put: 0, putIf: 0, deleteMany: 0, list: 0, flush: 0 };
  /** Keys passed to deleteMany, in order. */
  readonly deleted: string[] = [];
  private readonly failing = new Set<Operation>();
  private readonly inner: ObjectStore;

  constructor(inner: ObjectStore) {
    this.inner = inner;
    this.description = `faulty(${inner.description})`;
  }

  failAll(op: Operation, failing = true): void {
    if (failing) this.failing.add(op);
    else this.failing.delete(op);
  }

  private check(op: Operation): void {
    this.calls[op]++;
    if (this.failing.has(op)) throw Object.assign(new Error(`injected ${op} failure`), { code: 'EIO' });
  }

  async get(key: string): Promise<Buffer | undefined> {
    this.check('get');
    return this.inner.get(key);
  }

  async put(key: string, data: Buffer): Promise<void> {
    this.check('put');
    return this.inner.put(key, Buffer.from(data));
  }

  async getTagged(key: string): Promise<TaggedObject | undefined> {
    this.check('get');
    return this.inner.getTagged(key);
  }

  async putIf(key: string, data: Buffer, expectedTag: string | undefined): Promise<string | undefined> {
    this.check('putIf');
    return this.inner.putIf(key, Buffer.from(data), expectedTag);
  }

  async deleteMany(keys: readonly string[]): Promise<void> {
    this.check('deleteMany');
    this.deleted.push(...keys);
    return this.inner.deleteMany(keys);
  }

  async *list(prefix: string): AsyncIterable<string> {
    this.check('list');
    yield* this.inner.list(prefix);
  }

  async flush(): Promise<void> {
    this.check('flush');
    return this.inner.flush();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
