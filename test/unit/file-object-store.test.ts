import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { FileObjectStore } from '../../src/storage/objects/file-object-store.ts';
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

  // A gateway killed (-9) inside putIf leaves its lock file. The crash-loop soak met one on
  // the lease object: the restarted gateway waited 10 s, then exited 1 with "timed out
  // waiting for lock" (the lock was only taken as stale after 30 s).
  it('putIf takes over at once the lock of a process of this host that is gone', async () => {
    const store = new FileObjectStore(join(dir.path, 'd'));
    mkdirSync(join(dir.path, 'd'), { recursive: true });
    const dead = spawnSync('true').pid;
    writeFileSync(join(dir.path, 'd/.tmp-lock-lease.json'), lockOwnerFor(dead));
    const started = Date.now();
    assert.ok(await store.putIf('lease.json', Buffer.from('mine'), undefined));
    assert.ok(Date.now() - started < 2000, `took ${Date.now() - started} ms`);
  });

  it('putIf waits out a lock of unknown owner until it is stale, rather than failing', { timeout: 30_000 }, async () => {
    const store = new FileObjectStore(join(dir.path, 'e'));
    mkdirSync(join(dir.path, 'e'), { recursive: true });
    const lock = join(dir.path, 'e/.tmp-lock-lease.json');
    // From another host or container (nothing to check), taken 18 s ago: stale in 12 s, after
    // the old 10 s wait gave up.
    writeFileSync(lock, '');
    const then = (Date.now() - 18_000) / 1000;
    utimesSync(lock, then, then);
    assert.ok(await store.putIf('lease.json', Buffer.from('mine'), undefined));
  });
});

/** What a lock file holds when `pid`, in our PID namespace, took it. */
function lockOwnerFor(pid: number): string {
  return `${pid} ${readlinkOrEmpty('/proc/self/ns/pid')}`;
}

function readlinkOrEmpty(path: string): string {
  try {
    return readlinkSync(path);
  } catch {
    return '';
  }
}
