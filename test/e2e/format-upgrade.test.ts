// A volume written by the last build of format 1 (ce574f5) keeps working (docs/format.md):
// this build reads it as it is, upgrades it the first time it writes, on the same store and
// the same cache directory, and from then on the old build refuses the volume rather than
// write keys this format does not read.

import assert from 'node:assert/strict';
import { randomFillSync } from 'node:crypto';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseExtentKey } from '../../src/storage/extents/extent-keys.ts';
import { cli, startGateway, tempDir } from '../helpers/gateway.ts';
import { FORMAT_1_BUILD, oldBuild } from '../helpers/old-build.ts';
import { runOk } from '../helpers/tools.ts';

const MiB = 1024 * 1024;

/** The extent objects in a directory store, by generation (0: format 1). */
function extentObjects(store: string): Array<{ index: number; generation: number }> {
  const root = join(store, 'extents');
  return readdirSync(root, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .flatMap((e) => {
      const name = parseExtentKey(`extents/${join(e.parentPath, e.name).slice(root.length + 1)}`);
      return name ? [name] : [];
    });
}

const versionOf = (store: string): unknown => (JSON.parse(readFileSync(join(store, 's3nbd-volume.json'), 'utf8')) as { version: unknown }).version;

describe(`a volume of format 1, written by ${FORMAT_1_BUILD}`, () => {
  const dir = tempDir('upgrade');
  after(() => dir.remove());
  let old = '';
  before(() => { old = oldBuild(FORMAT_1_BUILD); });

  it('is read, upgraded when written, and refused by the old build afterwards', { timeout: 300_000 }, async () => {
    const store = join(dir.path, 'store');
    const cacheDir = join(dir.path, 'cache');
    const socket = join(dir.path, 'nbd.sock');
    const image = join(dir.path, 'image');
    const data = Buffer.alloc(16 * MiB);
    randomFillSync(data);
    data.fill(0, 4 * MiB, 8 * MiB);
    writeFileSync(image, data);

    const first = await startGateway(['--store', store, '--size', '16M', '--cache-dir', cacheDir], { socket, main: old });
    await runOk('nbdcopy', ['--flush', image, first.uri]);
    assert.equal(await first.stop(), 0, first.logs());
    assert.equal(versionOf(store), 1);
    const written = extentObjects(store);
    assert.equal(written.length, 12);
    assert.ok(written.every((o) => o.generation === 0), 'format 1 keys');

    // Read only: nothing changes.
    const reader = await startGateway(['--store', store, '--read-only'], { socket: `${socket}.ro` });
    await runOk('nbdcopy', [reader.uri, `${image}.ro`]);
    await reader.stop();
    assert.deepEqual(readFileSync(`${image}.ro`), data);
    assert.equal(versionOf(store), 1, 'a reader does not upgrade');

    // The same store and cache directory, served by this build: read, then overwrite 2 MiB.
    const second = await startGateway(['--store', store, '--cache-dir', cacheDir], { socket });
    assert.equal(versionOf(store), 2, 'upgraded before serving');
    await runOk('nbdcopy', [second.uri, `${image}.2`]);
    assert.deepEqual(readFileSync(`${image}.2`), data);
    const patch = Buffer.alloc(2 * MiB, 0x5a);
    writeFileSync(`${image}.patch`, patch);
    await runOk('nbdcopy', ['--flush', `${image}.patch`, `nbd+unix:///?socket=${socket}`]);
    patch.copy(data, 0);
    assert.equal(await second.stop(), 0, second.logs());

    const third = await startGateway(['--store', store, '--cache-dir', cacheDir], { socket });
    await runOk('nbdcopy', [third.uri, `${image}.3`]);
    assert.deepEqual(readFileSync(`${image}.3`), data);
    // The superseded format 1 objects of the patched extents are garbage, deleted in a batch.
    for (let i = 0; i < 200 && extentObjects(store).some((o) => o.index < 2 && o.generation === 0); i++) await new Promise((r) => setTimeout(r, 50));
    const objects = extentObjects(store);
    assert.deepEqual(objects.filter((o) => o.index < 2).map((o) => o.generation > 0), [true, true], 'the patched extents have new generations, and only those');
    assert.equal(objects.filter((o) => o.index >= 2).length, 10, 'the other extents keep their format 1 objects');
    assert.equal(await third.stop(), 0, third.logs());

    const refused = await cli(['serve', '--store', store, '--cache-dir', join(dir.path, 'old-cache'), '--socket', `${socket}.old`], {}, old);
    assert.equal(refused.code, 2, refused.stderr);
    assert.match(refused.stderr, /format version 2 is not supported/);
  });
});
