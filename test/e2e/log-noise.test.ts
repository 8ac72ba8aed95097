// A real gateway's stderr under bursts: conditions that repeat many times a second are one
// line per interval (with a count on the next), not one line each, and a failed request is one
// line with its message and errno, its stack only at debug level. Counted at the default level.

import assert from 'node:assert/strict';
import { renameSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { startGateway, tempDir } from '../helpers/gateway.ts';
import { runOk } from '../helpers/tools.ts';

/** The log interval of the throttled lines (server.ts, write-back-cache.ts). */
const INTERVAL_MS = 10_000;

function linesMatching(logs: string, re: RegExp): Array<Record<string, unknown>> {
  return logs.split('\n').filter((l) => re.test(l)).map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** Connects, reads the greeting, answers with client flags nobody knows: a ProtocolError. */
function badConnection(socket: string): Promise<void> {
  return new Promise((resolve) => {
    const c = net.connect(socket);
    let got = 0;
    c.on('data', (d: Buffer) => {
      got += d.length;
      if (got >= 18) c.write(Buffer.from([0xff, 0xff, 0xff, 0xff]));
    });
    c.on('error', () => undefined);
    c.on('close', () => resolve());
    setTimeout(() => c.destroy(), 5_000).unref();
  });
}

describe('log noise', () => {
  const dir = tempDir('log-noise');
  after(() => dir.remove());

  it('logs 200 bad connections in a few lines, and keeps serving', async () => {
    const socket = join(dir.path, 'bad.sock');
    const gw = await startGateway(['--store', join(dir.path, 'bad-store'), '--size', '64M', '--log-level', 'info'], { socket });
    for (let batch = 0; batch < 10; batch++) await Promise.all(Array.from({ length: 20 }, () => badConnection(socket)));
    await new Promise((r) => setTimeout(r, 200));
    const lines = linesMatching(gw.logs(), /client broke the protocol/);
    assert.ok(lines.length >= 1 && lines.length <= 3, `${lines.length} lines for 200 bad connections`);
    assert.match(String(lines[0]!.reason), /unknown client flags/);
    await runOk('nbdinfo', [gw.uri]);
    assert.equal(await gw.stop(), 0);
  });

  it('logs the dirty limit once per interval under a write burst, not once per wait', async () => {
    const socket = join(dir.path, 'dirty.sock');
    // Two extents of dirty data at most: every new extent written waits for an upload.
    const gw = await startGateway(['--store', join(dir.path, 'dirty-store'), '--size', '64M', '--extent-size', '64K', '--max-dirty', '128K',
      '--cache-size', '1M', '--upload-delay', '1000', '--log-level', 'info'], { socket });
    const started = Date.now();
    // 256 half-extent writes in flight at once, out of order (none passes through as part of a
    // sequential run): each new extent beyond the second waits for an upload.
    const script = String.raw`
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
done = []
for i in range(256):
    h.aio_pwrite(bytes([7]) * 32768, ((i * 37) % 256) * 65536, completion=lambda err: done.append(err.value) or 1)
while len(done) < 256:
    h.poll(-1)
print(sum(1 for e in done if e != 0))
`;
    assert.equal((await runOk('python3', ['-c', script, gw.uri], { timeoutMs: 120_000 })).trim(), '0');
    const ms = Date.now() - started;
    const lines = linesMatching(gw.logs(), /dirty limit reached/);
    assert.ok(lines.length >= 1, 'the limit was reached and said so');
    assert.ok(lines.length <= 1 + Math.ceil(ms / INTERVAL_MS), `${lines.length} lines in ${ms} ms`);
    assert.equal(await gw.stop(), 0);
  });

  it('logs requests failing in a burst as one line with message and errno, no stack', async () => {
    const store = join(dir.path, 'failing-store');
    const socket = join(dir.path, 'failing.sock');
    const writer = await startGateway(['--store', store, '--size', '64M', '--extent-size', '64K'], { socket });
    await runOk('qemu-io', ['-f', 'raw', writer.uri, '-c', 'write -P 9 0 1M', '-c', 'flush']);
    assert.equal(await writer.stop(), 0);
    const gw = await startGateway(['--store', store, '--read-only', '--log-level', 'info'], { socket });
    // The extents' directory turns into a file: every read of a stored extent fails (ENOTDIR).
    renameSync(join(store, 'extents'), join(store, 'extents.gone'));
    writeFileSync(join(store, 'extents'), '');
    const script = String.raw`
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
failed = 0
for i in range(100):
    try:
        h.pread(65536, (i % 16) * 65536)
    except nbd.Error:
        failed += 1
print(failed)
`;
    assert.equal((await runOk('python3', ['-c', script, gw.uri])).trim(), '100');
    const lines = linesMatching(gw.logs(), /"msg":"request failed"/);
    assert.ok(lines.length >= 1 && lines.length <= 2, `${lines.length} lines for 100 failed requests`);
    assert.equal(lines[0]!.errno, 'EIO');
    assert.match(String(lines[0]!.error), /ENOTDIR/);
    assert.doesNotMatch(gw.logs(), /"stack"/);
    assert.equal(await gw.stop(), 0);
  });
});
