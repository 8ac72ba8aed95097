import assert from 'node:assert/strict';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { FileObjectStore } from '../../src/storage/file-object-store.ts';
import { tempDir } from '../helpers/gateway.ts';

async function keys(store: FileObjectStore, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for await (const k of store.list(prefix)) out.push(k);
  return out.sort();
}

describe('FileObjectStore', () => {
  const dir = tempDir('files');
  after(() => dir.remove());

  it('puts, gets, replaces, lists by prefix and deletes', async () => {
    const store = new FileObjectStore(join(dir.path, 'a'));
    assert.equal(await store.get('missing'), undefined);
    assert.deepEqual(await keys(store), [], 'listing a store that was never written is empty');
    await store.put('extents/00/1', Buffer.from('one'));
    await store.put('extents/01/2', Buffer.from('two'));
    await store.put('meta.json', Buffer.from('{}'));
    await store.put('extents/00/1', Buffer.from('uno'));
    assert.equal((await store.get('extents/00/1'))?.toString(), 'uno');
    assert.deepEqual(await keys(store, 'extents/'), ['extents/00/1', 'extents/01/2']);
    await store.deleteMany(['extents/00/1', 'never-existed']);
    assert.deepEqual(await keys(store), ['extents/01/2', 'meta.json']);
    await store.flush();
    // No temporary files are left behind by successful puts.
    assert.deepEqual(readdirSync(join(dir.path, 'a/extents/01')), ['2']);
  });

  it('compare-and-swaps: creates only when absent, replaces only the expected version', async () => {
    const store = new FileObjectStore(join(dir.path, 'b'));
    const first = await store.putIf('k', Buffer.from('first'), undefined);
    assert.ok(first);
    assert.equal(await store.putIf('k', Buffer.from('second'), undefined), undefined);
    assert.deepEqual(await store.getTagged('k'), { data: Buffer.from('first'), tag: first });
    const second = await store.putIf('k', Buffer.from('second'), first);
    assert.ok(second && second !== first);
    assert.equal(await store.putIf('k', Buffer.from('stale'), first), undefined, 'an old tag no longer matches');
    assert.equal((await store.get('k'))?.toString(), 'second');
    const racing = await Promise.all([1, 2, 3, 4].map((i) => store.putIf('race', Buffer.from(String(i)), undefined)));
    assert.equal(racing.filter(Boolean).length, 1, 'exactly one concurrent creator wins');
    const tag = (await store.getTagged('race'))!.tag;
    const swaps = await Promise.all([1, 2, 3, 4].map((i) => store.putIf('race', Buffer.from(`swap${i}`), tag)));
    assert.equal(swaps.filter(Boolean).length, 1, 'exactly one concurrent swap from the same version wins');
    assert.deepEqual(readdirSync(join(dir.path, 'b')).filter((n) => n.startsWith('.')), [], 'no lock or temp files left');
  });

  it('skips temporary files a crash left behind, and rejects keys that escape the directory', async () => {
    const store = new FileObjectStore(join(dir.path, 'c'));
    await store.put('x/y', Buffer.from('data'));
    writeFileSync(join(dir.path, 'c/x/.tmp-deadbeef-1'), 'half-written');
    assert.deepEqual(await keys(store), ['x/y']);
    for (const bad of ['../evil', '/abs', 'a/../b', 'a//b', '']) {
      await assert.rejects(store.put(bad, Buffer.from('no')), /invalid object key/);
    }
  });
});
