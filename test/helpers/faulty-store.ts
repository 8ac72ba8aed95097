// A pass-through ObjectStore that counts calls and fails the ones it is told to, for tests
// of how layers above react to a broken store. It copies on put, like a real remote store.
// Three kinds of failure: every call of an operation (failAll), the next N calls (failNext),
// and the next N calls that take effect but report an error (applyThenFail: the request
// reached S3, its answer was lost), which is what makes retries need to be idempotent.

import { bodyParts, type ObjectBody, type ObjectStore, type TaggedObject } from '../../src/storage/objects/object-store.ts';
import { StorageError } from '../../src/storage/storage-error.ts';

export type Operation = 'get' | 'put' | 'putIf' | 'deleteMany' | 'list' | 'flush';

export class FaultyStore implements ObjectStore {
  readonly description: string;
  readonly calls: Record<Operation, number> = { get: 0, put: 0, putIf: 0, deleteMany: 0, list: 0, flush: 0 };
  /** Keys passed to deleteMany, in order. */
  readonly deleted: string[] = [];
  /** What an injected failure throws; by default a StorageError EIO, as a backend reports a network failure. */
  faultError: (op: Operation) => Error = injected;
  private readonly failing = new Set<Operation>();
  private readonly failNextCount = new Map<Operation, number>();
  private readonly applyThenFailCount = new Map<Operation, number>();
  private readonly inner: ObjectStore;

  constructor(inner: ObjectStore) {
    this.inner = inner;
    this.description = `faulty(${inner.description})`;
  }

  failAll(op: Operation, failing = true): void {
    if (failing) this.failing.add(op);
    else this.failing.delete(op);
  }

  /** The next `times` calls of `op` fail without reaching the store. */
  failNext(op: Operation, times: number): void {
    this.failNextCount.set(op, (this.failNextCount.get(op) ?? 0) + times);
  }

  /** The next `times` calls of `op` reach the store, then report a failure anyway. */
  applyThenFail(op: Operation, times: number): void {
    this.applyThenFailCount.set(op, (this.applyThenFailCount.get(op) ?? 0) + times);
  }

  /** Forgets the pending failNext and applyThenFail failures. */
  clearFaults(): void {
    this.failNextCount.clear();
    this.applyThenFailCount.clear();
  }

  private check(op: Operation): void {
    this.calls[op]++;
    if (this.failing.has(op) || take(this.failNextCount, op)) throw this.faultError(op);
  }

  /** Runs a call that changes the store; with applyThenFail pending, reports failure after it took effect. */
  private async apply<T>(op: Operation, call: () => Promise<T>): Promise<T> {
    this.check(op);
    const result = await call();
    if (take(this.applyThenFailCount, op)) throw this.faultError(op);
    return result;
  }

  async get(key: string): Promise<Buffer | undefined> {
    this.check('get');
    return this.inner.get(key);
  }

  async put(key: string, data: ObjectBody): Promise<void> {
    return this.apply('put', () => this.inner.put(key, Buffer.concat(bodyParts(data))));
  }

  async getTagged(key: string): Promise<TaggedObject | undefined> {
    this.check('get');
    return this.inner.getTagged(key);
  }

  async putIf(key: string, data: Buffer, expectedTag: string | undefined): Promise<string | undefined> {
    return this.apply('putIf', () => this.inner.putIf(key, Buffer.from(data), expectedTag));
  }

  async deleteMany(keys: readonly string[]): Promise<void> {
    return this.apply('deleteMany', () => {
      this.deleted.push(...keys);
      return this.inner.deleteMany(keys);
    });
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

/** Uses up one of `op`'s pending failures, if it has one. */
function take(counts: Map<Operation, number>, op: Operation): boolean {
  const left = counts.get(op) ?? 0;
  if (left > 0) counts.set(op, left - 1);
  return left > 0;
}

/** As a real backend reports a failure that retrying may fix: a StorageError, EIO. */
function injected(op: Operation): Error {
  return new StorageError('EIO', `injected ${op} failure`);
}
