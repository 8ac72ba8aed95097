import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readlinkSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { FileObjectStore } from '../../src/storage/objects/file-object-store.ts';
import { StorageError } from '../../src/storage/storage-error.ts';
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

  // The store translates its own failures: nothing above it needs to know how a directory fails.
  it('rejects with a StorageError naming the operation, the key and the directory, the errno error as its cause', async () => {
    // A file where a directory should be: ENOTDIR, even for root.
    writeFileSync(join(dir.path, 'plain-file'), '');
    const root = join(dir.path, 'plain-file/store');
    const store = new FileObjectStore(root);
    const failures: Array<[string, Promise<unknown>]> = [
      ['get', store.get('extents/00/1')],
      ['get', store.getTagged('volume.json')],
      ['put', store.put('extents/00/1', Buffer.from('x'))],
      ['conditional put', store.putIf('lease.json', Buffer.from('x'), undefined)],
      ['delete', store.deleteMany(['extents/00/1'])],
      ['list', (async () => { for await (const key of store.list('extents/')) assert.fail(key); })()],
    ];
    // Each outcome is caught as the call is made: a rejection left unhandled while an earlier
    // one is awaited fails the test file.
    const outcomes = failures.map(([operation, failing]) => [operation, failing.then(() => new Error(`${operation} succeeded`), (e: unknown) => e)] as const);
    for (const [operation, outcome] of outcomes) {
      const err = await outcome;
      assert.ok(err instanceof StorageError, `${operation}: ${String(err)}`);
      assert.equal(err.errno, 'EIO');
      assert.equal((err.cause as NodeJS.ErrnoException).code, 'ENOTDIR', operation);
      assert.equal(err.permanent, true, `${operation}: no retry helps until the file is moved away`);
      assert.ok(err.message.startsWith(`${operation} `), err.message);
      assert.ok(err.message.includes(`failed in directory ${root}: ENOTDIR`), err.message);
    }
    const put = await store.put('extents/00/1', Buffer.from('x')).catch((e: unknown) => e as Error);
    assert.match(put!.message, /^put extents\/00\/1 failed in directory /);
    const list = await store.list('')[Symbol.asyncIterator]().next().catch((e: unknown) => e as Error);
    assert.match((list as Error).message, /^list keys under "" failed/);
    await assert.rejects(store.put('../evil', Buffer.from('no')), (e) => e instanceof StorageError && e.errno === 'EIO' && /invalid object key/.test(e.message));
  });

  it('reports a full disk as ENOSPC', async () => {
    const store = new FileObjectStore(join(dir.path, 'full'));
    await store.put('k', Buffer.from('first'));
    // The next temporary file is a link to /dev/full, where every write fails with ENOSPC.
    const next = `.tmp-${(store as unknown as { tempTag: string }).tempTag}-1`;
    symlinkSync('/dev/full', join(dir.path, 'full', next));
    const err = await store.put('k', Buffer.from('second')).catch((e: unknown) => e);
    assert.ok(err instanceof StorageError);
    assert.equal(err.errno, 'ENOSPC');
    assert.equal((err.cause as NodeJS.ErrnoException).code, 'ENOSPC');
    assert.equal(err.permanent, false, 'a full disk passes as space is freed');
    assert.equal((await store.get('k'))?.toString(), 'first');
  });

  // Root passes every permission check, so the refusal is met by a child running as uid 1000.
  const setpriv = process.getuid?.() === 0 && spawnSync('setpriv', ['--version']).status === 0;
  it('reports a refused permission as EPERM', { skip: !setpriv && 'needs root and setpriv' }, () => {
    const owned = join(dir.path, 'root-owned');
    mkdirSync(owned, { mode: 0o755 });
    const script = `
      import { FileObjectStore } from ${JSON.stringify(join(import.meta.dirname, '../../src/storage/objects/file-object-store.ts'))};
      const err = await new FileObjectStore(${JSON.stringify(join(owned, 'store'))}).put('k', Buffer.from('x')).catch((e) => e);
      process.stdout.write(JSON.stringify({ name: err?.name, errno: err?.errno, code: err?.cause?.code, message: err?.message }));`;
    const child = spawnSync('setpriv', ['--reuid', '1000', '--regid', '1000', '--clear-groups',
      '--inh-caps', '+dac_read_search', '--ambient-caps', '+dac_read_search',
      process.execPath, '--input-type=module', '-e', script], { encoding: 'utf8' });
    assert.equal(child.status, 0, child.stderr);
    const seen = JSON.parse(child.stdout) as { name: string; errno: string; code: string; message: string };
    assert.deepEqual({ name: seen.name, errno: seen.errno, code: seen.code }, { name: 'StorageError', errno: 'EPERM', code: 'EACCES' });
    assert.match(seen.message, /^put k failed in directory .*root-owned\/store: EACCES/);
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
