// A cache disk that fills up (issue 14, scenario 4): the real gateway with --cache-dir on a
// small tmpfs, filled with a file while a real NBD client writes. The write that hits the full
// disk gets ENOSPC (not EIO), one rate-limited line says the cache disk is full (no stack trace
// per request), writes work again once the file is gone, without a restart, and the journal
// stays whole: after kill -9 a restart replays it, and a clean SIGTERM exits 0. Everything
// acknowledged reads back from the store through a gateway with an empty cache. Needs root
// (mount).

import assert from 'node:assert/strict';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type Gateway, startGateway, tempDir } from '../helpers/gateway.ts';
import { ERRNO, type NbdOp, nbdOps } from '../helpers/nbd-ops.ts';
import { requireTool, run, runOk } from '../helpers/tools.ts';

const MIB = 1024 * 1024;

function logLines(gw: Gateway): Array<Record<string, unknown>> {
  return gw.logs().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** Fills the file system of `dir` to the last byte with `dir/filler`. */
async function fill(dir: string): Promise<void> {
  // dd stops at ENOSPC (and says so with a non-zero status): that is the point.
  await run('dd', ['if=/dev/zero', `of=${join(dir, 'filler')}`, 'bs=64K']);
  const df = await runOk('df', ['--output=avail', '-B1', dir]);
  assert.equal(Number(df.trim().split('\n').pop()), 0, `the cache disk is full: ${df}`);
}

describe('a cache disk that fills up and is freed again', () => {
  const dir = tempDir('diskfull');
  const mnt = join(dir.path, 'cache');
  const store = join(dir.path, 'store');
  let mounted = false;
  const args = (): string[] => ['--store', store, '--cache-dir', mnt, '--size', '64M', '--extent-size', '1M',
    '--cache-size', '24M', '--max-dirty', '8M', '--upload-delay', '60000'];
  const whole = (index: number, seed: number): NbdOp => ['write', index * MIB, MIB, seed];
  const check = (index: number, seed: number | null): NbdOp => ['read', index * MIB, MIB, seed];

  before(async () => {
    for (const tool of ['python3', 'dd', 'df', 'mount'] as const) requireTool(tool);
    mkdirSync(mnt);
    await runOk('mount', ['-t', 'tmpfs', '-o', 'size=40m', 'tmpfs', mnt]);
    mounted = true;
  });
  after(async () => {
    if (mounted) await run('umount', ['-l', mnt]);
    dir.remove();
  });

  it('ENOSPC to the client, one line in the log, writes again once freed, a journal that replays; SIGTERM exits 0', { timeout: 120_000 }, async () => {
    const sock = join(dir.path, 'a.sock');
    let gw = await startGateway(args(), { socket: sock });
    // Acknowledged (and dirty: --upload-delay 60 s keeps them in the journal) before the disk fills.
    const before = await nbdOps(gw.uri, [whole(0, 1), whole(1, 2), ['write', 2 * MIB + 4096, 4096, 3]]);
    assert.ok(before.every((r) => r.ok), JSON.stringify(before));

    await fill(mnt);
    const full = await nbdOps(gw.uri, [whole(4, 40), whole(5, 50), ['write', 6 * MIB, 4096, 60], whole(4, 41)]);
    assert.ok(full.every((r) => !r.ok), `writes on a full cache disk failed: ${JSON.stringify(full)}`);
    assert.deepEqual(full.map((r) => r.errno), full.map(() => ERRNO.ENOSPC), 'each failed with ENOSPC, not EIO');
    const lines = logLines(gw);
    const diskFull = lines.filter((l) => /cache disk full/.test(String(l.msg)));
    assert.equal(diskFull.length, 1, `one line about the full disk for ${full.length} failed writes: ${JSON.stringify(diskFull)}`);
    assert.equal(diskFull[0]!.level, 40);
    assert.equal(diskFull[0]!.cacheDir, mnt);
    assert.equal(typeof diskFull[0]!.freeBytes, 'number');
    assert.deepEqual(lines.filter((l) => (l.level as number) >= 50), [], 'no error lines (stack traces) for the failed writes');

    rmSync(join(mnt, 'filler'));
    const freed = await nbdOps(gw.uri, [whole(4, 42), whole(5, 52), ['write', 6 * MIB, 4096, 62], check(4, 42), check(0, 1)]);
    assert.ok(freed.every((r) => r.ok && r.match !== false), `writes work again once space is free, no restart: ${JSON.stringify(freed)}`);

    // kill -9: what was acknowledged is only in the journal (nothing was uploaded yet).
    gw.process.kill('SIGKILL');
    await gw.exited;
    gw = await startGateway(args(), { socket: sock });
    assert.match(gw.logs(), /recovered unuploaded writes from the journal/);
    const replayed = await nbdOps(gw.uri, [check(0, 1), check(1, 2), check(4, 42), check(5, 52)]);
    assert.ok(replayed.every((r) => r.ok && r.match), `the journal replays every acknowledged write: ${JSON.stringify(replayed)}`);

    // The disk fills once more; the clean stop afterwards uploads everything and exits 0.
    await fill(mnt);
    const again = await nbdOps(gw.uri, [whole(8, 80)]);
    assert.equal(again[0]!.errno, ERRNO.ENOSPC);
    rmSync(join(mnt, 'filler'));
    const last = await nbdOps(gw.uri, [whole(8, 81), ['flush']]);
    assert.ok(last.every((r) => r.ok), JSON.stringify(last));
    const code = await gw.stop('SIGTERM');
    assert.match(gw.logs(), /all dirty data uploaded/);
    assert.equal(code, 0, `SIGTERM after a clean drain exits 0:\n${gw.logs().slice(-3000)}`);

    // What the store holds, read through a gateway with an empty cache on another disk.
    const fresh = await startGateway(['--store', store], { socket: join(dir.path, 'fresh.sock') });
    const stored = await nbdOps(fresh.uri, [check(0, 1), check(1, 2), check(4, 42), check(5, 52), check(8, 81), check(3, null)]);
    assert.ok(stored.every((r) => r.ok && r.match), `every acknowledged write is in the store: ${JSON.stringify(stored)}`);
    const partial = await nbdOps(fresh.uri, [['read', 2 * MIB + 4096, 4096, 3], ['read', 6 * MIB, 4096, 62]]);
    assert.ok(partial.every((r) => r.ok && r.match), JSON.stringify(partial));
    assert.equal(await fresh.stop(), 0);
  });
});
