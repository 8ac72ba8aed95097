// What nbdinfo, the libnbd inspection tool, sees of a served volume.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cli, type Gateway, startGateway, tempDir } from '../helpers/gateway.ts';
import { requireTool, run, runOk } from '../helpers/tools.ts';

describe('nbdinfo', () => {
  const dir = tempDir('nbdinfo');
  let gw: Gateway;
  before(async () => {
    requireTool('nbdinfo');
    gw = await startGateway(['--store', join(dir.path, 'store'), '--size', '1G', '--export-name', 'backup'], { socket: join(dir.path, 'sock') });
  });
  after(async () => {
    await gw.stop();
    dir.remove();
  });

  it('reports fixed newstyle, structured replies, base:allocation, every capability and a small minimum block size', async () => {
    const text = await runOk('nbdinfo', [gw.uri]);
    assert.match(text, /protocol: newstyle-fixed without TLS, using structured packets/);
    const info = JSON.parse(await runOk('nbdinfo', ['--json', gw.uri])) as {
      exports: Array<Record<string, unknown>>;
    };
    const exp = info.exports[0]!;
    assert.equal(exp['export-size'], 2 ** 30);
    for (const flag of ['can_cache', 'can_df', 'can_fast_zero', 'can_flush', 'can_fua', 'can_multi_conn', 'can_trim', 'can_zero']) {
      assert.equal(exp[flag], true, flag);
    }
    assert.equal(exp.is_read_only, false);
    assert.ok((exp.block_size_minimum as number) <= 4096);
    assert.equal(exp.block_size_preferred, 1 << 20, 'preferred = extent size');
    assert.equal(exp.block_size_maximum, 32 << 20);
    assert.deepEqual(exp.contexts, ['base:allocation']);
  });

  it('serves the default export "" and the named export, and lists the named one', async () => {
    const named = JSON.parse(await runOk('nbdinfo', ['--json', `nbd+unix:///backup?socket=${gw.socket}`])) as { exports: Array<Record<string, unknown>> };
    assert.equal(named.exports[0]!['export-name'], 'backup');
    assert.match(String(named.exports[0]!.description), /^s3nbd volume [0-9a-f-]{36}, 1 GiB$/);
    const listed = await runOk('nbdinfo', ['--list', '--json', gw.uri]);
    assert.deepEqual((JSON.parse(listed) as { exports: Array<{ 'export-name': string }> }).exports.map((e) => e['export-name']), ['backup']);
    const missing = await run('nbdinfo', [`nbd+unix:///nope?socket=${gw.socket}`]);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /no export named "nope"|unknown|nope/i);
  });
});

describe('nbdinfo on a read-only export', () => {
  const dir = tempDir('nbdinfo-ro');
  let gw: Gateway;
  before(async () => {
    // --read-only never creates a volume: make one first.
    const created = await cli(['create', '--store', join(dir.path, 'store'), '--size', '64M']);
    assert.equal(created.code, 0, created.stderr);
    gw = await startGateway(['--store', join(dir.path, 'store'), '--read-only'], { socket: join(dir.path, 'sock') });
  });
  after(async () => {
    await gw.stop();
    dir.remove();
  });

  it('advertises READ_ONLY and no write capabilities', async () => {
    const exp = (JSON.parse(await runOk('nbdinfo', ['--json', gw.uri])) as { exports: Array<Record<string, unknown>> }).exports[0]!;
    assert.equal(exp.is_read_only, true);
    assert.equal(exp.can_trim, false);
    assert.equal(exp.can_zero, false);
    assert.equal(exp.can_flush, true);
  });
});
