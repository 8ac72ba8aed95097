// The gateway's memory bound (src/memory-budget.ts, docs/architecture.md "Memory") held by a
// real gateway process, its RSS sampled from /proc: under a client that floods the handshake
// with options and never reads the replies, and under 8 fio jobs of random reads and writes
// with a small memory cache, so the bound is tight.

import assert from 'node:assert/strict';
import net from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { IHAVEOPT, Opt } from '../../src/protocol/constants.ts';
import { peakMemoryBytes } from '../../src/memory-budget.ts';
import { type Gateway, startGateway, tempDir } from '../helpers/gateway.ts';
import { MiB, mib, sampleRss } from '../helpers/rss.ts';
import { requireTool, runOk } from '../helpers/tools.ts';

describe('gateway memory bound (RSS of a real gateway)', () => {
  const dir = tempDir('memory');
  before(() => {
    requireTool('fio');
    requireTool('nbdinfo');
  });
  after(() => dir.remove());

  it('stays flat under 60 MB of NBD_OPT_INFO whose replies are never read, and serves after', async () => {
    const gw = await startGateway(['--store', join(dir.path, 'store-a'), '--size', '64M'], { socket: join(dir.path, 'a.sock') });
    try {
      const pid = gw.process.pid!;
      const rss = sampleRss(pid, 20);
      const start = rss.now();
      const socket = net.connect(gw.socket);
      await new Promise((resolve, reject) => socket.once('connect', resolve).once('error', reject));
      socket.on('error', () => undefined);
      socket.pause(); // never read: not the greeting, not a reply
      socket.write(Buffer.from([0, 0, 0, 3]));
      const h = Buffer.alloc(22);
      h.writeBigUInt64BE(IHAVEOPT, 0);
      h.writeUInt32BE(Opt.INFO, 8);
      h.writeUInt32BE(6, 12); // an empty name, no info requests
      const chunk = Buffer.concat(Array.from({ length: 1 << 15 }, () => h)); // 704 KiB
      // Up to 60 MB, as fast as the gateway takes them, for at most 8 s.
      const until = Date.now() + 8000;
      for (let sent = 0; sent < 60e6 && Date.now() < until && !socket.destroyed; sent += chunk.length) {
        if (!socket.write(chunk)) {
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, Math.max(0, until - Date.now()));
            socket.once('drain', () => { clearTimeout(timer); resolve(); });
          });
        }
      }
      const peak = rss.peak();
      socket.destroy();
      rss.stop();
      console.log(`hostile handshake: RSS ${mib(start)} at start, peak ${mib(peak)}`);
      // Old code: 87 MB -> 3.15 GB. Now the options stop being read once 64 KiB of replies wait.
      assert.ok(peak - start < 64 * MiB, `RSS grew from ${mib(start)} to ${mib(peak)}`);
      await runOk('nbdinfo', [gw.uri]);
    } finally {
      await gw.stop();
    }
  });

  it('stays under the formula with 8 fio jobs of random I/O, --max-dirty 64M, --memory-cache 128M', async () => {
    const memoryCache = 128 * MiB;
    const gw: Gateway = await startGateway(['--store', join(dir.path, 'store-b'), '--size', '2G', '--max-dirty', '64M',
      '--memory-cache', '128M', '--log-level', 'info'], { socket: join(dir.path, 'b.sock') });
    try {
      const rss = sampleRss(gw.process.pid!, 50);
      const start = rss.now();
      await runOk('fio', ['--ioengine=nbd', `--uri=${gw.uri}`, '--name=mixed', '--rw=randrw', '--bsrange=4k-1M', '--iodepth=32',
        '--numjobs=8', '--size=256M', '--offset_increment=256M', '--time_based', '--runtime=30', '--group_reporting'], { timeoutMs: 120_000 });
      const peak = rss.peak();
      rss.stop();
      const bound = peakMemoryBytes({ memoryCacheBytes: memoryCache, extentSize: MiB, uploadConcurrency: 16, s3Connections: 0 }, 8);
      console.log(`fio, 8 jobs, 30 s: RSS ${mib(start)} at start, peak ${mib(peak)}, bound ${mib(bound)}`);
      assert.ok(peak <= bound, `peak RSS ${mib(peak)} over the bound ${mib(bound)}`);
    } finally {
      await gw.stop();
    }
  });
});
