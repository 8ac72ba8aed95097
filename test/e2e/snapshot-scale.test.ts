// Taking a snapshot of a volume with 100,000 stored extents, on a directory store: the time is
// reported, not asserted (a shared machine's timings vary too much). The extent objects are
// empty files under their real keys: creating a snapshot lists the objects and reads none.

import assert from 'node:assert/strict';
import { mkdirSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, describe, it } from 'node:test';
import { extentKey } from '../../src/storage/extents/extent-keys.ts';
import { SEQUENCE_SPAN } from '../../src/storage/extents/generations.ts';
import { cli, tempDir } from '../helpers/gateway.ts';

const EXTENTS = 100_000;
const E = 4096;

describe('a snapshot of 100,000 stored extents', () => {
  const dir = tempDir('snapshot-scale');
  after(() => dir.remove());

  it('is created with one manifest PUT, and its time reported', { timeout: 300_000 }, async () => {
    const store = join(dir.path, 'store');
    const made = await cli(['create', '--store', store, '--size', String(EXTENTS * E), '--extent-size', String(E)]);
    assert.equal(made.code, 0, made.stderr);
    for (let i = 0; i < EXTENTS; i++) {
      const path = join(store, extentKey(i, SEQUENCE_SPAN + i + 1));
      if (i < 256 * 2) mkdirSync(dirname(path), { recursive: true });
      writeFileSync(path, '');
    }
    const started = performance.now();
    const created = await cli(['snapshot', 'create', 's1', '--store', store]);
    const ms = performance.now() - started;
    assert.equal(created.code, 0, created.stderr);
    assert.match(created.stdout, /^created snapshot s1: 100000 extents/);
    const listStarted = performance.now();
    const list = await cli(['snapshot', 'list', '--json', '--store', store]);
    const listMs = performance.now() - listStarted;
    assert.equal((JSON.parse(list.stdout) as Array<{ extents: number }>)[0]!.extents, EXTENTS);
    const bytes = statSync(join(store, 'snapshots', 's1')).size;
    console.log(`# snapshot create of ${EXTENTS} stored extents: ${Math.round(ms)} ms (the whole command, Node start included); manifest ${bytes} bytes; snapshot list ${Math.round(listMs)} ms`);
  });
});
