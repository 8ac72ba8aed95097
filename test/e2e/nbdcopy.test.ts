// A 256 MiB image copied in with nbdcopy (4 connections, many requests in flight), the
// gateway restarted on the same store, and copied out again: identical bytes.

import assert from 'node:assert/strict';
import { createHash, randomFillSync } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { startGateway, tempDir } from '../helpers/gateway.ts';
import { requireTool, runOk } from '../helpers/tools.ts';

const MiB = 1 << 20;

function sha256(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

function countFiles(dir: string): number {
  return readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).length;
}

describe('nbdcopy round trip across a restart', () => {
  const dir = tempDir('nbdcopy');
  after(() => dir.remove());

  it('copies 256 MiB in and out, identical, and stores no zero extents', async () => {
    requireTool('nbdcopy');
    const image = join(dir.path, 'in.img');
    const data = Buffer.alloc(256 * MiB);
    randomFillSync(data);
    data.fill(0, 100 * MiB, 132 * MiB); // 32 zero extents: a hole nothing should store
    writeFileSync(image, data);
    const store = join(dir.path, 'store');
    const socket = join(dir.path, 'sock');

    const first = await startGateway(['--store', store, '--size', '256M'], { socket });
    await runOk('nbdcopy', ['--flush', image, first.uri], { timeoutMs: 300_000 });
    assert.equal(await first.stop('SIGTERM'), 0);
    assert.equal(countFiles(join(store, 'extents')), 256 - 32);

    const second = await startGateway(['--store', store], { socket });
    const out = join(dir.path, 'out.img');
    await runOk('nbdcopy', [second.uri, out], { timeoutMs: 300_000 });
    // And once more without trusting base:allocation, reading every byte.
    const full = join(dir.path, 'full.img');
    await runOk('nbdcopy', ['--no-extents', second.uri, full], { timeoutMs: 300_000 });
    assert.equal(await second.stop('SIGTERM'), 0);
    const want = sha256(image);
    assert.equal(sha256(out), want);
    assert.equal(sha256(full), want);
  });
});
