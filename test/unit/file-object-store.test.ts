import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readlinkSync, symlinkSync, writeFileSync } from 'node:fs';
import { createRequire, syncBuiltinESMExports } from 'node:module';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
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
    await store.put('parts', [Buffer.from('an extent'), Buffer.alloc(0), Buffer.from("'s parts")]);
    assert.equal((await store.get('parts'))?.toString(), "an extent's parts", 'a body in parts is written whole, in order');
    await store.deleteMany(['parts']);
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
    assert.deepEqual(readdirSync(join(dir.path, 'b')).filter((n) => n.startsWith('.')).sort(), ['.tmp-lock-k', '.tmp-lock-race'], 'no temporary files left, only the lock files, which stay');
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

  // Older versions wrote their pid into a lock file and removed it when done; one killed (-9)
  // inside putIf left it behind (the crash-loop soak met one on the lease object), and others
  // waited it out. Now only a lock held on the file counts, never what it contains.
  it('a lock file that no live process holds a lock on does not hold up putIf, whatever it says', async () => {
    const store = new FileObjectStore(join(dir.path, 'd'));
    mkdirSync(join(dir.path, 'd'), { recursive: true });
    writeFileSync(join(dir.path, 'd/.tmp-lock-lease.json'), lockOwnerFor(process.pid));
    writeFileSync(join(dir.path, 'd/.tmp-lock-volume.json'), 'from another host');
    assert.ok(await store.putIf('lease.json', Buffer.from('mine'), undefined));
    assert.ok(await store.putIf('volume.json', Buffer.from('mine'), undefined));
  });

  // Two waiters that both judged one lock file stale each removed it, the second removing the
  // lock the first had just created, so both compare-and-swaps ran at once and both won: two
  // gateways could both hold the lease. The hooks force that interleaving on a store that
  // removes stale locks: both waiters' removals wait until both have decided to remove, the
  // second is let go once the first is inside (at its rename), and that rename waits for the
  // second's. A store that never removes its lock file never calls them.
  it('two conditional writes never run at once, even when a dead holder left its lock file', { timeout: 20_000 }, async () => {
    const root = join(dir.path, 'stale-race');
    const [a, b] = [new FileObjectStore(root), new FileObjectStore(root)];
    const tag = await a.putIf('lease.json', Buffer.from('v0'), undefined);
    const lock = join(root, '.tmp-lock-lease.json');
    writeFileSync(lock, lockOwnerFor(spawnSync('true').pid));
    const removers: Array<() => void> = [];
    let firstRename: (() => void) | undefined;
    const undo = hookFsPromises({
      async rm(original, path, options) {
        if (path === lock && removers.length < 2) {
          await new Promise<void>((resolve) => {
            removers.push(resolve);
            if (removers.length === 2) removers[0]!();
          });
        }
        return original(path, options);
      },
      async rename(original, from, to) {
        if (removers.length === 2 && to === join(root, 'lease.json')) {
          if (firstRename === undefined) {
            removers[1]!();
            await new Promise<void>((resolve) => { firstRename = resolve; });
          } else {
            firstRename();
          }
        }
        return original(from, to);
      },
    });
    try {
      const won = await Promise.all([a.putIf('lease.json', Buffer.from('a'), tag), b.putIf('lease.json', Buffer.from('b'), tag)]);
      assert.equal(won.filter(Boolean).length, 1, `exactly one swap from the same version wins: ${JSON.stringify(won)}`);
    } finally {
      undo();
    }
  });

  // Another gateway on the same directory: a separate process racing the same swaps.
  it('two processes racing compare-and-swaps on one key: exactly one wins each round', { timeout: 60_000 }, async () => {
    const root = join(dir.path, 'two-processes');
    const store = new FileObjectStore(root);
    const child = spawn(process.execPath, ['--input-type=module', '-e', `
      import { createInterface } from 'node:readline';
      import { FileObjectStore } from ${JSON.stringify(STORE_MODULE)};
      const store = new FileObjectStore(${JSON.stringify(root)});
      for await (const tag of createInterface({ input: process.stdin })) {
        const won = await store.putIf('lease.json', Buffer.from('child'), tag === '' ? undefined : tag);
        process.stdout.write(won === undefined ? '0\\n' : '1\\n');
      }`], { stdio: ['pipe', 'pipe', 'inherit'] });
    const answers = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
    try {
      for (let round = 0; round < 200; round++) {
        const tag = (await store.getTagged('lease.json'))?.tag;
        child.stdin.write(`${tag ?? ''}\n`);
        const ours = await store.putIf('lease.json', Buffer.from('parent'), tag);
        const theirs = (await answers.next()).value;
        assert.equal(Number(ours !== undefined) + Number(theirs), 1, `round ${round}: ours ${ours}, theirs ${theirs}`);
      }
    } finally {
      child.stdin.end();
      child.kill();
    }
  });

  // The kernel drops a lock when its process dies: kill -9 in the middle of a putIf (here
  // held there by a link() that never returns) must not hold up the next gateway.
  it('a process killed inside putIf does not block the next one', { timeout: 30_000 }, async () => {
    const root = join(dir.path, 'killed');
    const child = spawn(process.execPath, ['--input-type=module', '-e', `
      import { createRequire, syncBuiltinESMExports } from 'node:module';
      const fsp = createRequire(import.meta.url)('node:fs/promises');
      fsp.link = () => { process.stdout.write('inside\\n'); return new Promise(() => {}); };
      syncBuiltinESMExports();
      setInterval(() => {}, 60_000);
      const { FileObjectStore } = await import(${JSON.stringify(STORE_MODULE)});
      await new FileObjectStore(${JSON.stringify(root)}).putIf('lease.json', Buffer.from('child'), undefined);`],
    { stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    try {
      const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
      assert.equal((await lines.next()).value, 'inside');
      // While it lives, its lock holds, and a waiter gives up with a StorageError saying why.
      const waiting = await new FileObjectStore(root, { lockWaitMs: 50 }).putIf('lease.json', Buffer.from('early'), undefined).catch((e: unknown) => e);
      assert.ok(waiting instanceof StorageError, String(waiting));
      assert.match(waiting.message, /^conditional put lease\.json failed in directory .*: lock .* still held/);
      assert.equal(waiting.permanent, false);
    } finally {
      child.kill('SIGKILL');
      await exited;
    }
    assert.ok(await new FileObjectStore(root).putIf('lease.json', Buffer.from('mine'), undefined));
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
    symlinkSync('/dev/full', join(dir.path, 'full', next.replace(/-1$/, '-2')));
    const inParts = await store.put('k', [Buffer.from('sec'), Buffer.from('ond')]).catch((e: unknown) => e);
    assert.ok(inParts instanceof StorageError && inParts.errno === 'ENOSPC', 'a body in parts too');
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

const STORE_MODULE = join(import.meta.dirname, '../../src/storage/objects/file-object-store.ts');

type FsPromises = typeof import('node:fs/promises');

/**
 * Wraps functions of node:fs/promises for every module that imported them (a builtin's ES
 * module exports follow its CommonJS ones after syncBuiltinESMExports()); returns the undo.
 */
function hookFsPromises(hooks: {
  rm?: (original: FsPromises['rm'], ...args: Parameters<FsPromises['rm']>) => Promise<void>;
  rename?: (original: FsPromises['rename'], ...args: Parameters<FsPromises['rename']>) => Promise<void>;
}): () => void {
  const fsp = createRequire(import.meta.url)('node:fs/promises') as FsPromises & Record<string, unknown>;
  const saved = { rm: fsp.rm, rename: fsp.rename };
  if (hooks.rm) fsp.rm = (...args) => hooks.rm!(saved.rm, ...args);
  if (hooks.rename) fsp.rename = (...args) => hooks.rename!(saved.rename, ...args);
  syncBuiltinESMExports();
  return () => {
    Object.assign(fsp, saved);
    syncBuiltinESMExports();
  };
}

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
