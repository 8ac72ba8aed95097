// A cache disk whose fsync fails (the kernel lost writes it had accepted): the journal fails
// for good, because nothing appended can be promised durable any more (f7f1d38). The real
// gateway, with --flush-mode local so that FLUSH is an fsync of the journal, and a shim
// (test/helpers/fail-fsync.c, LD_PRELOAD) that makes fsyncs under the cache directory fail on
// cue. The FLUSH gets EIO, one error line says the journal failed, the gateway uploads what
// is dirty and exits by itself with status 4; what was acknowledged is in the store.

import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { EXIT_JOURNAL_FAILED } from '../../src/cli/serve.ts';
import { failFsyncEnv } from '../helpers/fail-fsync.ts';
import { startGateway, tempDir } from '../helpers/gateway.ts';
import { ERRNO, nbdOps } from '../helpers/nbd-ops.ts';
import { requireTool } from '../helpers/tools.ts';

const MIB = 1024 * 1024;

async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([promise, new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms); })]);
  } finally {
    clearTimeout(timer);
  }
}

describe('a cache disk whose fsync fails', () => {
  const dir = tempDir('fsyncfail');
  after(() => dir.remove());

  it(`fails the journal for good, says so in one line, and exits ${EXIT_JOURNAL_FAILED} after uploading what is dirty`, { timeout: 90_000 }, async () => {
    requireTool('python3');
    requireTool('cc');
    const cacheDir = join(dir.path, 'cache');
    const flag = join(dir.path, 'fail-now');
    const env = await failFsyncEnv(dir.path, cacheDir, flag);
    const store = join(dir.path, 'store');
    const gw = await startGateway(['--store', store, '--cache-dir', cacheDir, '--size', '64M', '--extent-size', '1M',
      '--flush-mode', 'local', '--upload-delay', '60000'], { socket: join(dir.path, 'a.sock'), env });
    const before = await nbdOps(gw.uri, [['write', 0, MIB, 1], ['flush'], ['write', MIB, MIB, 2]]);
    assert.ok(before.every((r) => r.ok), JSON.stringify(before));

    writeFileSync(flag, '');
    const failed = await nbdOps(gw.uri, [['flush']]);
    assert.deepEqual([failed[0]!.ok, failed[0]!.errno], [false, ERRNO.EIO], 'the FLUSH whose fsync failed');
    const code = await within(gw.exited, 30_000, 'the gateway to stop by itself');
    const lines = gw.logs().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
    const said = lines.filter((l) => /^the journal failed/.test(String(l.msg)));
    assert.equal(said.length, 1, `one line says the journal failed: ${JSON.stringify(said)}`);
    assert.equal(said[0]!.level, 50);
    assert.equal(code, EXIT_JOURNAL_FAILED, `exit status ${code}:\n${gw.logs().slice(-3000)}`);

    const fresh = await startGateway(['--store', store], { socket: join(dir.path, 'fresh.sock') });
    const back = await nbdOps(fresh.uri, [['read', 0, MIB, 1], ['read', MIB, MIB, 2]]);
    assert.ok(back.every((r) => r.ok && r.match), `the acknowledged writes were uploaded before the exit: ${JSON.stringify(back)}`);
    assert.equal(await fresh.stop(), 0);
  });

  it(`exits ${EXIT_JOURNAL_FAILED}, not 1, when the journal's last fsync at shutdown fails`, { timeout: 60_000 }, async () => {
    const cacheDir = join(dir.path, 'cache2');
    const flag = join(dir.path, 'fail-at-stop');
    const env = await failFsyncEnv(dir.path, cacheDir, flag);
    const store = join(dir.path, 'store2');
    const gw = await startGateway(['--store', store, '--cache-dir', cacheDir, '--size', '64M', '--extent-size', '1M'],
      { socket: join(dir.path, 'b.sock'), env });
    const written = await nbdOps(gw.uri, [['write', 0, MIB, 3]]);
    assert.ok(written[0]!.ok);
    // With --flush-mode s3 the journal is fsynced only when the cache closes.
    writeFileSync(flag, '');
    const code = await within(gw.stop('SIGTERM'), 30_000, 'the gateway to stop');
    assert.match(gw.logs(), /all dirty data uploaded/);
    assert.equal(gw.logs().split('\n').filter((l) => l.includes('"msg":"the journal failed')).length, 1);
    assert.equal(code, EXIT_JOURNAL_FAILED, `exit status ${code}:\n${gw.logs().slice(-3000)}`);
  });
});
