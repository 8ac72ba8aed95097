// One volume's view of a store that holds many under one prefix (`--volumes s3://bucket/backups`:
// the volume "db" is every key below "db/"). The S3 store of the prefix is shared by all the
// views, so that listing or creating volumes opens one client, not one per volume. Nothing
// is copied: each call is the inner store's with the prefix put before the key.

import type { ObjectBody, ObjectStore, TaggedObject } from './object-store.ts';

export class PrefixedObjectStore implements ObjectStore {
  readonly description: string;
  readonly freshBodies: boolean | undefined;
  readonly checkConditionalWrites?: (key: string, data: Buffer) => Promise<void>;
  private readonly inner: ObjectStore;
  private readonly prefix: string;

  /** `prefix` ends with "/"; `description` names the volume's place (a URL, never credentials). */
  constructor(inner: ObjectStore, prefix: string, description: string) {
    this.inner = inner;
    this.prefix = prefix;
    this.description = description;
    this.freshBodies = inner.freshBodies;
    const check = inner.checkConditionalWrites?.bind(inner);
    if (check) this.checkConditionalWrites = (key, data) => check(prefix + key, data);
  }

  get(key: string, maxBytes?: number): Promise<Buffer | undefined> {
    return this.inner.get(this.prefix + key, maxBytes);
  }

  put(key: string, data: ObjectBody): Promise<void> {
    return this.inner.put(this.prefix + key, data);
  }

  getTagged(key: string, maxBytes?: number): Promise<TaggedObject | undefined> {
    return this.inner.getTagged(this.prefix + key, maxBytes);
  }

  putIf(key: string, data: Buffer, expectedTag: string | undefined): Promise<string | undefined> {
    return this.inner.putIf(this.prefix + key, data, expectedTag);
  }

  deleteMany(keys: readonly string[]): Promise<void> {
    return this.inner.deleteMany(keys.map((key) => this.prefix + key));
  }

  async *list(prefix: string): AsyncIterable<string> {
    for await (const key of this.inner.list(this.prefix + prefix)) yield key.slice(this.prefix.length);
  }

  flush(): Promise<void> {
    return this.inner.flush();
  }

  /** The inner store is its owner's to close. */
  close(): Promise<void> {
    return Promise.resolve();
  }
}
