// undelete() (src/storage/objects/undelete.ts) against a store that keeps versions the way a
// versioned S3 bucket does, listed a few entries per page so that one key's versions span
// pages: only the deletions since the given time are undone, a dry run removes nothing, and an
// interrupted run finishes when run again. The S3 store's own listing and deletes of versions
// are tested against MinIO and Ceph RGW (test/integration/object-lock.test.ts).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { UserError } from '../../src/errors.ts';
import type { ObjectStore, ObjectVersion, VersionRef } from '../../src/storage/objects/object-store.ts';
import { undelete, type UndeleteProgress } from '../../src/storage/objects/undelete.ts';

interface Entry { versionId: string; data: Buffer | undefined; at: number }

/** Every key's versions, oldest first; a version without data is a delete marker. */
class VersionedStore implements ObjectStore {
  readonly description = 'a versioned test store';
  readonly keys = new Map<string, Entry[]>();
  /** Throws from deleteVersions() once this many more batches have been removed. */
  failAfterBatches = Infinity;
  batches: number[] = [];
  private next = 0;
  private readonly pageSize: number;

  constructor(pageSize: number) {
    this.pageSize = pageSize;
  }

  write(key: string, data: Buffer | undefined, at: number): void {
    const versions = this.keys.get(key) ?? [];
    versions.push({ versionId: `v${++this.next}`, data, at });
    this.keys.set(key, versions);
  }

  get(key: string): Promise<Buffer | undefined> {
    return Promise.resolve(this.keys.get(key)?.at(-1)?.data);
  }

  async *listVersions(prefix: string, onPage?: (listed: number) => void): AsyncIterable<ObjectVersion> {
    const all: ObjectVersion[] = [];
    for (const key of [...this.keys.keys()].filter((k) => k.startsWith(prefix)).sort()) {
      const versions = this.keys.get(key)!;
      // Newest first, as S3 lists them; S3's answer separates versions from markers, so the
      // order among one key's entries is not to be relied on: list them reversed every other key.
      const ordered = versions.map((v, i) => ({ key, versionId: v.versionId, deleteMarker: v.data === undefined, latest: i === versions.length - 1, lastModified: new Date(v.at) }));
      all.push(...(all.length % 2 === 0 ? ordered.reverse() : ordered));
    }
    for (let start = 0; start < all.length; start += this.pageSize) {
      await Promise.resolve(); // a request per page
      yield* all.slice(start, start + this.pageSize);
      onPage?.(Math.min(all.length, start + this.pageSize));
    }
  }

  deleteVersions(versions: readonly VersionRef[]): Promise<void> {
    if (this.failAfterBatches-- <= 0) return Promise.reject(new Error('S3 went away'));
    this.batches.push(versions.length);
    for (const { key, versionId } of versions) {
      const left = (this.keys.get(key) ?? []).filter((v) => v.versionId !== versionId);
      if (left.length > 0) this.keys.set(key, left);
      else this.keys.delete(key);
    }
    return Promise.resolve();
  }

  put(): Promise<void> { throw new Error('not used'); }
  getTagged(): Promise<undefined> { throw new Error('not used'); }
  putIf(): Promise<undefined> { throw new Error('not used'); }
  deleteMany(): Promise<void> { throw new Error('not used'); }
  list(): AsyncIterable<string> { throw new Error('not used'); }
  flush(): Promise<void> { return Promise.resolve(); }
  close(): Promise<void> { return Promise.resolve(); }
}

const b = (text: string): Buffer => Buffer.from(text);
const SINCE = new Date(1000);

/** A volume's history: written before SINCE, some keys deleted before it, then an attacker deleted everything. */
function history(pageSize: number): VersionedStore {
  const store = new VersionedStore(pageSize);
  store.write('vol/meta', b('meta'), 10);
  store.write('vol/e1', b('e1 old'), 20);
  store.write('vol/e1', b('e1 new'), 30); // overwritten: the newest comes back
  store.write('vol/trimmed', b('stale'), 40);
  store.write('vol/trimmed', undefined, 50); // deleted by the gateway (TRIM) before SINCE: stays deleted
  store.write('vol/again', b('first'), 60);
  store.write('vol/again', undefined, 70);
  store.write('vol/again', b('second'), 80); // deleted, written again, then deleted twice since
  store.write('other/x', b('not ours'), 90);
  // The attack, with the gateway's own credentials: every current object deleted.
  for (const key of ['vol/meta', 'vol/e1', 'vol/again', 'other/x']) store.write(key, undefined, 2000);
  store.write('vol/again', undefined, 2001);
  store.write('vol/trimmed', undefined, 2002); // deleting a deleted key adds a marker too
  store.write('vol/kept', b('written after the attack'), 3000); // untouched
  return store;
}

describe('undelete', () => {
  it('removes the delete markers written since the time given, for the keys under the prefix, so each shows its newest version again', async () => {
    for (const pageSize of [1, 2, 3, 1000]) {
      const store = history(pageSize);
      const progress: UndeleteProgress[] = [];
      const result = await undelete(store, { since: SINCE, prefix: 'vol/', onProgress: (p) => progress.push(p) });
      assert.deepEqual(
        { keys: result.keys, markers: result.markers, removed: result.removed, first: result.first, last: result.last, sample: result.sample },
        { keys: 4, markers: 5, removed: 5, first: new Date(2000), last: new Date(2002), sample: ['vol/again', 'vol/e1', 'vol/meta', 'vol/trimmed'] },
        `page size ${pageSize}`);
      assert.equal((await store.get('vol/meta'))?.toString(), 'meta');
      assert.equal((await store.get('vol/e1'))?.toString(), 'e1 new');
      assert.equal((await store.get('vol/again'))?.toString(), 'second');
      assert.equal(await store.get('vol/trimmed'), undefined, 'deleted before SINCE: still deleted');
      assert.equal((await store.get('vol/kept'))?.toString(), 'written after the attack');
      assert.equal(await store.get('other/x'), undefined, 'outside the prefix: untouched');
      assert.equal(store.keys.get('vol/trimmed')?.length, 2, 'only its marker written since SINCE is gone');
      assert.ok(progress.length > 0 && progress.every((p, i) => i === 0 || (p.listed >= progress[i - 1]!.listed && p.removed >= progress[i - 1]!.removed)));
      assert.deepEqual(progress.at(-1), { listed: 14, keys: 4, removed: 5 }, 'the last report has the final counts');
      assert.equal(result.listed, 14, 'every version under the prefix listed');

      const again = await undelete(store, { since: SINCE, prefix: 'vol/' });
      assert.deepEqual([again.keys, again.removed], [0, 0], 'run again: nothing left to do');
    }
  });

  it('changes nothing in a dry run, and reports what it would do', async () => {
    const store = history(2);
    const before = JSON.stringify([...store.keys]);
    const result = await undelete(store, { since: SINCE, prefix: 'vol/', dryRun: true });
    assert.deepEqual([result.keys, result.markers, result.removed], [4, 5, 0]);
    assert.equal(JSON.stringify([...store.keys]), before);
    assert.deepEqual(store.batches, []);
  });

  it('removes markers in batches of 1000 as the listing goes, and finishes an interrupted run when run again', async () => {
    const store = new VersionedStore(1000);
    for (let i = 0; i < 2500; i++) {
      const key = `e/${String(i).padStart(5, '0')}`;
      store.write(key, b(key), 1);
      store.write(key, undefined, 5000);
    }
    store.failAfterBatches = 1;
    await assert.rejects(undelete(store, { since: SINCE }), /S3 went away/);
    assert.deepEqual(store.batches, [1000]);
    store.failAfterBatches = Infinity;
    const result = await undelete(store, { since: SINCE });
    assert.deepEqual([result.keys, result.removed], [1500, 1500]);
    assert.deepEqual(store.batches, [1000, 1000, 500]);
    for (let i = 0; i < 2500; i += 499) assert.equal((await store.get(`e/${String(i).padStart(5, '0')}`))?.toString(), `e/${String(i).padStart(5, '0')}`);
  });

  it('refuses a store that keeps no versions', async () => {
    const plain = { description: 'a directory' } as ObjectStore; // nothing else is called
    await assert.rejects(undelete(plain, { since: SINCE }), (err: unknown) => err instanceof UserError && err.code === 'S3NBD_NO_VERSIONS' && /^a directory keeps no old versions/.test(err.message));
  });
});
