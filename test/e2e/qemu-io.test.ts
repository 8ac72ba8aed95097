// qemu-io patterns: unaligned writes across extent edges, zeroes, discards, verified reads.
// qemu-io exits 1 on "Pattern verification failed".

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type Gateway, startGateway, tempDir } from '../helpers/gateway.ts';
import { requireTool, run } from '../helpers/tools.ts';

describe('qemu-io', () => {
  const dir = tempDir('qemu-io');
  let gw: Gateway;
  before(async () => {
    requireTool('qemu-io');
    gw = await startGateway(['--store', join(dir.path, 'store'), '--size', '64M', '--extent-size', '64K'], { socket: join(dir.path, 'sock') });
  });
  after(async () => {
    await gw.stop();
    dir.remove();
  });

  const qemuIo = async (...commands: string[]) => {
    const args = ['-f', 'raw', `nbd+unix:///?socket=${gw.socket}`];
    for (const c of commands) args.push('-c', c);
    return run('qemu-io', args);
  };

  it('reads back what it wrote, at any alignment, and zeros where it zeroed or discarded', async () => {
    const r = await qemuIo(
      'write -P 0xa1 0 1M',
      'write -P 0xb2 65000 70000', // straddles two extent edges
      'write -P 0xc3 512 512',
      'write -z 300000 131072', // zeroes across an edge
      'discard 1048576 1048576',
      'write -P 0xd4 2097151 3',
      'aio_write -P 0xe5 4194304 65536',
      'aio_write -P 0xe6 4259840 65536',
      'aio_flush',
      'read -P 0xa1 0 512',
      'read -P 0xc3 512 512',
      'read -P 0xa1 1024 63976',
      'read -P 0xb2 65000 70000',
      'read -P 0xa1 135000 165000',
      'read -P 0 300000 131072',
      'read -P 0xa1 431072 617504',
      'read -P 0 1048576 1048575',
      'read -P 0xd4 2097151 3',
      'read -P 0 2097154 100',
      'read -P 0xe5 4194304 65536',
      'read -P 0xe6 4259840 65536',
      'flush',
    );
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.doesNotMatch(r.stdout + r.stderr, /verification failed|error/i);
    const bad = await qemuIo('read -P 0xa1 300000 10');
    assert.equal(bad.code, 1, 'a wrong pattern is detected, so the checks above can fail');
  });
});
