// One process per cache directory (issue 14, scenario 1): a second `s3nbd serve` on a cache
// directory that a running gateway holds is refused at once, with one line and exit 2, and
// touches nothing; so too when the first is stopped (SIGSTOP) and when the second runs in
// another mount namespace and sees the directory at another path (two containers sharing one
// volume). The first keeps serving, and after kill -9 a gateway restarted on the directory
// starts at once and has every acknowledged write. Real gateways (the built CLI), a directory
// store and nbdcopy.

import assert from 'node:assert/strict';
import { createHash, randomFillSync } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CLI, type Gateway, startGateway, tempDir } from '../helpers/gateway.ts';
import { requireTool, run, runOk } from '../helpers/tools.ts';

const MiB = 1 << 20;

/** Runs a command that must end by itself, timed; killed (code null) if still up after 15 s. */
async function runBounded(cmd: string, args: readonly string[]): Promise<{ code: number | null; stderr: string; ms: number }> {
  const started = Date.now();
  const r = await run(cmd, args, { timeoutMs: 15_000 });
  return { code: r.code, stderr: r.stderr, ms: Date.now() - started };
}

/**
 * Every file below `dir` with its size, modification time and (up to 64 MiB, the sparse slot
 * file is larger) a hash of its bytes; not the status file that the running gateway rewrites.
 */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string): void => {
    for (const name of readdirSync(d)) {
      const path = join(d, name);
      const st = statSync(path);
      if (st.isDirectory()) walk(path);
      else if (st.isFile() && name !== 'status.json') { // not the control socket
        const hash = st.size <= 64 * MiB ? createHash('sha256').update(readFileSync(path)).digest('hex') : '';
        out[relative(dir, path)] = `${st.size} ${st.mtimeMs} ${hash}`;
      }
    }
  };
  walk(dir);
  return out;
}

function assertRefused(r: { code: number | null; stderr: string; ms: number }, cacheDir: string): void {
  assert.equal(r.code, 2, `refused with exit 2, got ${r.code} (null: still running after 15 s):\n${r.stderr}`);
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `one line:\n${r.stderr}`);
  assert.match(lines[0]!, new RegExp(`^s3nbd: the cache directory ${cacheDir} is in use by another running gateway .*\\(S3NBD_CACHE_DIR_LOCKED\\)\\. Fix: stop that gateway first`));
  assert.ok(r.ms < 5000, `refused at once, not after ${r.ms} ms`);
}

describe('one gateway per cache directory', () => {
  const dir = tempDir('cachelock');
  let n = 0;
  const fresh = (): { store: string; cache: string; socket: (name: string) => string } => {
    const base = join(dir.path, `case${++n}`);
    mkdirSync(base);
    return { store: join(base, 'data'), cache: join(base, 'cache'), socket: (name) => join(base, `${name}.sock`) };
  };
  const image = (name: string, bytes: number): { path: string; data: Buffer } => {
    const data = Buffer.alloc(bytes);
    randomFillSync(data);
    const path = join(dir.path, name);
    writeFileSync(path, data);
    return { path, data };
  };
  const readBack = async (gw: Gateway, bytes: number): Promise<Buffer> => {
    const out = join(dir.path, `out-${++n}`);
    await runOk('nbdcopy', [gw.uri, out]);
    return readFileSync(out).subarray(0, bytes);
  };

  before(() => {
    for (const tool of ['nbdcopy', 'unshare', 'mount'] as const) requireTool(tool);
  });
  after(() => dir.remove());

  it('refuses a second gateway at once, touching nothing; the first keeps serving and, after kill -9, loses nothing', async () => {
    const c = fresh();
    // A long lease and no uploads: the first gateway changes nothing on disk while idle, so
    // any change is the second one's doing; the writes stay in the journal only.
    const first = await startGateway(['--store', c.store, '--size', '64M', '--cache-dir', c.cache, '--lease-ttl', '3600', '--upload-delay', '600000'],
      { socket: c.socket('a') });
    const one = image('one', 8 * MiB);
    await runOk('nbdcopy', [one.path, first.uri]);
    const storeBefore = snapshot(c.store);
    const cacheBefore = snapshot(c.cache);

    const second = await runBounded(process.execPath, [CLI, 'serve', '--store', c.store, '--cache-dir', c.cache, '--socket', c.socket('b')]);
    assertRefused(second, c.cache);
    assert.equal(existsSync(c.socket('b')), false, 'never listened');
    assert.deepEqual(snapshot(c.store), storeBefore, 'no lease written, nothing uploaded');
    assert.deepEqual(snapshot(c.cache), cacheBefore, 'no journal replayed or written, no cache.json claimed');
    // Nor does a refused start create a volume.
    const otherStore = join(dir.path, 'never-created');
    const third = await runBounded(process.execPath, [CLI, 'serve', '--store', otherStore, '--size', '64M', '--cache-dir', c.cache, '--socket', c.socket('c')]);
    assertRefused(third, c.cache);
    assert.equal(existsSync(otherStore), false, 'no volume created');
    // `s3nbd info` only reads: it runs beside the gateway.
    const info = await runBounded(process.execPath, [CLI, 'info', '--store', c.store, '--cache-dir', c.cache]);
    assert.equal(info.code, 0, info.stderr);

    // The first one still serves; everything it acknowledged survives kill -9.
    const two = image('two', 16 * MiB);
    await runOk('nbdcopy', [two.path, first.uri]);
    await first.stop('SIGKILL');
    const restarted = Date.now();
    const again = await startGateway(['--store', c.store, '--cache-dir', c.cache], { socket: c.socket('d') });
    assert.ok(Date.now() - restarted < 10_000, 'resumes at once');
    assert.ok((await readBack(again, 16 * MiB)).equals(two.data), 'every acknowledged byte back');
    assert.equal(await again.stop(), 0);
  });

  it('refuses a second gateway while the first is stopped (SIGSTOP), which then carries on', async () => {
    const c = fresh();
    const first = await startGateway(['--store', c.store, '--size', '64M', '--cache-dir', c.cache], { socket: c.socket('a') });
    first.process.kill('SIGSTOP');
    try {
      const second = await runBounded(process.execPath, [CLI, 'serve', '--store', c.store, '--cache-dir', c.cache, '--socket', c.socket('b')]);
      assertRefused(second, c.cache);
    } finally {
      first.process.kill('SIGCONT');
    }
    const one = image('three', 4 * MiB);
    await runOk('nbdcopy', ['--flush', one.path, first.uri]);
    assert.ok((await readBack(first, 4 * MiB)).equals(one.data));
    assert.equal(await first.stop(), 0);
  });

  it('lets a gateway start at once after the one before it was killed with kill -9', async () => {
    const c = fresh();
    const first = await startGateway(['--store', c.store, '--size', '64M', '--cache-dir', c.cache, '--upload-delay', '600000'], { socket: c.socket('a') });
    const one = image('four', 4 * MiB);
    await runOk('nbdcopy', [one.path, first.uri]);
    await first.stop('SIGKILL');
    const started = Date.now();
    const second = await startGateway(['--store', c.store, '--cache-dir', c.cache], { socket: c.socket('b') });
    assert.ok(Date.now() - started < 5000, `started in ${Date.now() - started} ms`);
    assert.ok((await readBack(second, 4 * MiB)).equals(one.data), 'the journal replayed');
    assert.equal(await second.stop(), 0);
  });

  it('holds across mount namespaces: a second gateway that sees the directory at another path is refused', async () => {
    const c = fresh();
    const first = await startGateway(['--store', c.store, '--size', '64M', '--cache-dir', c.cache], { socket: c.socket('a') });
    // What a second container with the same volume mounted elsewhere sees.
    const elsewhere = join(dir.path, 'elsewhere');
    mkdirSync(elsewhere);
    const script = `mount --bind "$1" "$2" && exec "$3" "$4" serve --store "$5" --cache-dir "$2" --socket "$6"`;
    const second = await runBounded('unshare', ['--mount', 'sh', '-c', script, 'sh', c.cache, elsewhere, process.execPath, CLI, c.store, c.socket('b')]);
    assertRefused(second, elsewhere);
    assert.equal(readdirSync(elsewhere).length, 0, 'the bind mount stayed in its own namespace');
    const one = image('five', 2 * MiB);
    await runOk('nbdcopy', ['--flush', one.path, first.uri]);
    assert.ok((await readBack(first, 2 * MiB)).equals(one.data));
    assert.equal(await first.stop(), 0);
  });
});
