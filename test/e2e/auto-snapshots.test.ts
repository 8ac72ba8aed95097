// serve --snapshot-every with a keep policy, with the real CLI and a real NBD client on a
// directory store: the gateway takes auto-<UTC time> snapshots on its own (every 2 s here;
// S3NBD_TEST_SHORT_SNAPSHOT_EVERY=1 lifts the one-minute minimum), prunes them to --keep-last 2,
// leaves a hand-made snapshot alone, and the newest reads back as the volume; `snapshot prune
// --prefix auto-` through the running gateway; and the one-line
// errors of a schedule that cannot work.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cli, startGateway, tempDir } from '../helpers/gateway.ts';
import { requireTool, runOk } from '../helpers/tools.ts';
import { assertUserError } from '../helpers/user-error.ts';

const MiB = 1024 * 1024;

describe('serve --snapshot-every', () => {
  const dir = tempDir('auto-snapshots');
  const store = join(dir.path, 'store');
  const socket = join(dir.path, 'sock');
  const data = randomBytes(4 * MiB);

  before(async () => {
    requireTool('nbdcopy');
    const made = await cli(['create', '--store', store, '--size', String(4 * MiB), '--extent-size', String(64 * 1024)]);
    assert.equal(made.code, 0, made.stderr);
    const mine = await cli(['snapshot', 'create', 'mine', '--store', store]);
    assert.equal(mine.code, 0, mine.stderr);
    writeFileSync(join(dir.path, 'data'), data);
  });
  after(() => dir.remove());

  it('takes automatic snapshots and prunes them by the policy, leaving a hand-made one alone', async () => {
    const gw = await startGateway(['--store', store, '--snapshot-every', '2s', '--keep-last', '2'], { socket, env: { S3NBD_TEST_SHORT_SNAPSHOT_EVERY: '1' } });
    try {
      await runOk('nbdcopy', ['--flush', join(dir.path, 'data'), gw.uri]);
      for (let i = 0; i < 600 && (gw.logs().match(/"msg":"automatic snapshot pruned"/g) ?? []).length < 2; i++) {
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      assert.ok((gw.logs().match(/"msg":"automatic snapshot pruned"/g) ?? []).length >= 2, gw.logs().slice(-3000));
      const list = await cli(['snapshot', 'list', '--json', '--store', store]);
      const names = (JSON.parse(list.stdout) as Array<{ name: string }>).map((s) => s.name);
      assert.ok(names.includes('mine'), names.join(' '));
      const autos = names.filter((n) => /^auto-\d{8}T\d{6}Z$/.test(n)).sort();
      // Two, or three when the listing fell between a tick's snapshot and its pruning.
      assert.ok(autos.length === 2 || autos.length === 3, names.join(' '));
      assert.equal(names.length, autos.length + 1, names.join(' '));
      await runOk('nbdcopy', [`nbd+unix:///@${autos.at(-1)}?socket=${socket}`, join(dir.path, 'newest')]);
      assert.ok(readFileSync(join(dir.path, 'newest')).equals(data), 'the newest automatic snapshot reads as the volume');
      // snapshot prune through the running gateway (its control socket), automatic ones only.
      const pruned = await cli(['snapshot', 'prune', '--store', store, '--cache-dir', `${socket}.cache`, '--prefix', 'auto-', '--keep-last', '1', '--keep-daily', '1']);
      assert.equal(pruned.code, 0, pruned.stderr);
      assert.match(pruned.stdout, /^keep +auto-\S+ +\S+ +last 1, daily \d{4}-\d\d-\d\d\n/);
      assert.doesNotMatch(pruned.stdout, /mine/);
      assert.match(pruned.stdout, /pruned: [1-9]\d* snapshots deleted/);
    } finally {
      assert.equal(await gw.stop(), 0, gw.logs());
    }
  });

  it('refuses a schedule that cannot work, in one line', async () => {
    const serve = (...args: string[]) => cli(['serve', '--store', store, '--socket', socket, ...args]);
    assertUserError(await serve('--keep-daily', '7'), 'S3NBD_BAD_SNAPSHOT_SCHEDULE', /without --snapshot-every/);
    assertUserError(await serve('--snapshot-every', '1h', '--read-only'), 'S3NBD_BAD_SNAPSHOT_SCHEDULE', /--read-only/);
    assertUserError(await serve('--snapshot-every', '10s'), 'S3NBD_BAD_DURATION', /at least 1m/);
    assertUserError(await serve('--snapshot-every', 'hourly'), 'S3NBD_BAD_DURATION');
    assertUserError(await cli(['snapshot', 'prune', '--store', store]), 'S3NBD_NO_RETENTION_POLICY');
  });
});
