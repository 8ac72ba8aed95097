// A snapshot of a volume a gateway is writing, asked for with the real CLI through the
// gateway's control socket (--cache-dir): it holds every write acknowledged before it, though
// they are still only in the journal, and none that came after, while writes go on being
// acknowledged; the gateway serves it as @NAME at once, and deletes it on request.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cli, startGateway, tempDir } from '../helpers/gateway.ts';
import { requireTool, runOk } from '../helpers/tools.ts';
import { assertUserError } from '../helpers/user-error.ts';

const MiB = 1024 * 1024;
const SIZE = 32 * MiB;

describe('a snapshot of a volume being written', () => {
  const dir = tempDir('snapshot-live');
  const store = join(dir.path, 'store');
  const socket = join(dir.path, 'nbd.sock');
  const cacheDir = join(dir.path, 'cache');
  const s3nbd = (...args: string[]) => cli([...args, '--store', store, '--cache-dir', cacheDir]);
  const before1 = randomBytes(8 * MiB);
  const after1 = randomBytes(8 * MiB);
  const other = randomBytes(8 * MiB);

  before(() => {
    requireTool('nbdcopy');
    requireTool('nbdinfo');
    requireTool('nbdsh');
    writeFileSync(join(dir.path, 'before'), before1);
    writeFileSync(join(dir.path, 'after'), after1);
    writeFileSync(join(dir.path, 'other'), other);
  });
  after(() => dir.remove());

  it('holds what was acknowledged before it, not what came after, and writes go on meanwhile', { timeout: 180_000 }, async () => {
    // Uploads wait 10 minutes: at the snapshot, everything written is only in the journal.
    const gw = await startGateway(['--store', store, '--size', String(SIZE), '--extent-size', '256K', '--cache-dir', cacheDir, '--upload-delay', '600000'], { socket });
    try {
      await runOk('nbdcopy', [join(dir.path, 'before'), gw.uri]); // no --flush: dirty in the journal
      // The snapshot and a writer into another region run at the same time.
      const [made] = await Promise.all([
        s3nbd('snapshot', 'create', 's1'),
        // 8 MiB at 16 MiB, in 256 KiB writes.
        runOk('nbdsh', ['-u', gw.uri, '-c', `data = open(${JSON.stringify(join(dir.path, 'other'))}, 'rb').read()\nfor i in range(0, len(data), 262144): h.pwrite(data[i:i + 262144], 16 * 1048576 + i)`]),
      ]);
      assert.equal(made.code, 0, made.stderr);
      assert.match(made.stdout, /^created snapshot s1: \d+ extents/);
      assert.match(gw.logs(), /"msg":"snapshot created"/, 'the gateway took it, not the idle path');
      // Overwrite what the snapshot holds.
      await runOk('nbdcopy', [join(dir.path, 'after'), gw.uri]);

      const snap = join(dir.path, 'snap');
      await runOk('nbdcopy', [`nbd+unix:///@s1?socket=${socket}`, snap]);
      assert.deepEqual(readFileSync(snap).subarray(0, before1.length), before1, 'the snapshot holds the writes acknowledged before it');
      const live = join(dir.path, 'live');
      await runOk('nbdcopy', [gw.uri, live]);
      assert.deepEqual(readFileSync(live).subarray(0, after1.length), after1, 'the volume holds the writes after it');
      assert.deepEqual(readFileSync(live).subarray(16 * MiB, 24 * MiB), other, 'and the writes made while it was taken');

      assertUserError(await s3nbd('snapshot', 'create', 's1'), 'S3NBD_SNAPSHOT_EXISTS', /"s1"/);
      const deleted = await s3nbd('snapshot', 'delete', 's1');
      assert.equal(deleted.code, 0, deleted.stderr);
      const listed = await runOk('nbdinfo', ['--list', gw.uri]);
      assert.doesNotMatch(listed, /@s1/);
    } finally {
      assert.equal(await gw.stop(), 0, gw.logs());
    }
  });
});
