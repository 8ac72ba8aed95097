// The command line as users meet it: help, create/info, one-line errors that name the fix,
// environment variables, TCP and Unix sockets, and a clean SIGTERM with requests in flight.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { cli, startGateway, tempDir } from '../helpers/gateway.ts';
import { TOOL_ENV, runOk } from '../helpers/tools.ts';

function assertOneLineError(r: { code: number | null; stdout: string; stderr: string }, code: string, fix: RegExp): void {
  assert.equal(r.code, 2, r.stderr);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0]!, new RegExp(`^s3nbd: .*\\(${code}\\)\\. Fix: `));
  assert.match(lines[0]!, fix);
}

describe('s3nbd command line', () => {
  const dir = tempDir('cli');
  after(() => dir.remove());

  it('prints help for every command', async () => {
    const top = await cli(['--help']);
    assert.equal(top.code, 0);
    for (const cmd of ['serve', 'create', 'info']) assert.match(top.stdout, new RegExp(`\\b${cmd}\\b`));
    const serve = await cli(['serve', '--help']);
    for (const env of ['S3NBD_STORE', 'S3NBD_SIZE', 'S3NBD_LISTEN', 'S3NBD_SOCKET', 'S3NBD_EXPORT_NAME', 'S3NBD_READ_ONLY', 'S3NBD_LOG_LEVEL']) {
      assert.match(serve.stdout, new RegExp(env));
    }
  });

  it('creates a volume, shows it, and refuses to create it twice', async () => {
    const store = join(dir.path, 'created');
    const created = await cli(['create', '--store', store, '--size', '3G', '--extent-size', '256K']);
    assert.equal(created.code, 0, created.stderr);
    assert.match(created.stdout, /created volume [0-9a-f-]{36}: 3 GiB in 256 KiB extents/);
    const info = JSON.parse((await cli(['info', '--store', store, '--json'])).stdout) as Record<string, unknown>;
    assert.equal(info.size, 3 * 2 ** 30);
    assert.equal(info.extentSize, 256 * 1024);
    assert.equal(info.storedExtents, 0);
    const human = await cli(['info', '--store', `file://${store}`]);
    assert.match(human.stdout, /size: +3 GiB \(3221225472 bytes\)/);
    assertOneLineError(await cli(['create', '--store', store, '--size', '3G']), 'S3NBD_VOLUME_EXISTS', /s3nbd serve/);
  });

  it('explains bad input in one line with the fix, and exits 2', async () => {
    const empty = join(dir.path, 'empty');
    assertOneLineError(await cli(['serve', '--store', empty]), 'S3NBD_NO_VOLUME', /--size/);
    assert.equal(existsSync(empty), false, 'a failed serve leaves no directory behind');
    assertOneLineError(await cli(['serve', '--store', empty, '--size', '10Q']), 'S3NBD_BAD_SIZE', /10G/);
    assertOneLineError(await cli(['serve', '--store', empty, '--size', '1000']), 'S3NBD_BAD_DEVICE_SIZE', /10G/);
    assertOneLineError(await cli(['serve', '--store', empty, '--size', '1G', '--extent-size', '3K']), 'S3NBD_BAD_EXTENT_SIZE', /1M/);
    assertOneLineError(await cli(['serve', '--store', empty, '--size', '1G', '--listen', 'nonsense']), 'S3NBD_BAD_LISTEN', /127\.0\.0\.1:10809/);
    assertOneLineError(await cli(['serve', '--store', 'ftp://x/y', '--size', '1G']), 'S3NBD_BAD_STORE', /directory path/);
    assertOneLineError(await cli(['serve', '--store', 's3://Not_A_Bucket!/prefix', '--size', '1G']), 'S3NBD_BAD_S3_URL', /s3:\/\//);
    assertOneLineError(await cli(['serve', '--store', empty, '--size', '1G', '--flush-mode', 'never']), 'S3NBD_BAD_CHOICE', /s3/);
    assertOneLineError(await cli(['serve', '--store', empty, '--size', '1G', '--cache-dir', join(dir.path, 'c0'), '--cache-size', '1G', '--max-dirty', '1G']),
      'S3NBD_BAD_CACHE_SIZE', /--cache-size/);
    assertOneLineError(await cli(['serve', '--store', empty, '--size', '1G', '--log-level', 'loud']), 'S3NBD_BAD_LOG_LEVEL', /debug/);
    const store = join(dir.path, 'sized');
    assert.equal((await cli(['create', '--store', store, '--size', '1G'])).code, 0);
    assertOneLineError(await cli(['serve', '--store', store, '--size', '2G']), 'S3NBD_VOLUME_CONFLICT', /omit --size/);
    assertOneLineError(await cli(['info', '--store', empty]), 'S3NBD_NO_VOLUME', /--size/);
    const unknown = await cli(['serve', '--frobnicate']);
    assert.notEqual(unknown.code, 0);
    assert.match(unknown.stderr, /unknown option '--frobnicate'/);
  });

  it('takes every setting from S3NBD_* variables and serves TCP', async () => {
    const socket = join(dir.path, 'env.sock');
    const gw = await startGateway([], {
      socket,
      env: { S3NBD_STORE: join(dir.path, 'env-store'), S3NBD_SIZE: '128M', S3NBD_EXTENT_SIZE: '64K', S3NBD_EXPORT_NAME: 'envdisk', S3NBD_LISTEN: '127.0.0.1:0', S3NBD_READ_ONLY: '0' },
    });
    const tcp = /"127\.0\.0\.1:(\d+)"/.exec(gw.logs());
    assert.ok(tcp, gw.logs());
    for (const uri of [gw.uri, `nbd://127.0.0.1:${tcp[1]}/envdisk`]) {
      const exp = (JSON.parse(await runOk('nbdinfo', ['--json', uri])) as { exports: Array<Record<string, unknown>> }).exports[0]!;
      assert.equal(exp['export-size'], 128 << 20);
      assert.equal(exp.block_size_preferred, 64 << 10);
      assert.equal(exp.is_read_only, false);
    }
    assert.equal(await gw.stop(), 0);
  });

  it('replaces a stale socket left by a killed server, and refuses one in use', async () => {
    const socket = join(dir.path, 'stale.sock');
    const store = join(dir.path, 'stale-store');
    const killed = await startGateway(['--store', store, '--size', '64M'], { socket });
    await killed.stop('SIGKILL');
    assert.equal(existsSync(socket), true, 'kill -9 leaves the socket file');
    const again = await startGateway(['--store', store], { socket });
    const other = join(dir.path, 'other-store');
    const clash = await cli(['serve', '--store', other, '--size', '64M', '--socket', socket, '--cache-dir', join(dir.path, 'other-cache')]);
    assertOneLineError(clash, 'S3NBD_LISTEN_FAILED', /another/);
    assert.equal(await again.stop(), 0);
  });

  it('refuses a second gateway on the same volume, and lets the first restart at once after a crash', async () => {
    const store = join(dir.path, 'leased');
    const first = await startGateway(['--store', store, '--size', '64M'], { socket: join(dir.path, 'leased.sock') });
    const second = await cli(['serve', '--store', store, '--socket', join(dir.path, 'second.sock'), '--cache-dir', join(dir.path, 'second-cache')]);
    assertOneLineError(second, 'S3NBD_VOLUME_IN_USE', /--take-over/);
    await first.stop('SIGKILL');
    // Same cache directory: the same gateway, which knows the lease is its own.
    const restarted = await startGateway(['--store', store], { socket: join(dir.path, 'leased.sock') });
    assert.equal(await restarted.stop(), 0);
  });

  it('takes a volume over with --take-over, and fences the old gateway off', async () => {
    const store = join(dir.path, 'taken');
    const old = await startGateway(['--store', store, '--size', '64M', '--lease-ttl', '3'], { socket: join(dir.path, 'old.sock') });
    const taker = await startGateway(['--store', store, '--take-over', '--lease-ttl', '3'], { socket: join(dir.path, 'new.sock') });
    // The old gateway's next renewal finds the new owner: it stops, with status 3.
    const code = await Promise.race([old.exited, new Promise((r) => setTimeout(() => r('still running'), 10_000))]);
    assert.equal(code, 3, old.logs());
    assert.match(old.logs(), /lease lost: another gateway took over this volume/);
    assert.equal(await taker.stop(), 0);
  });

  it('finishes requests in flight on SIGTERM, flushes, and exits 0', async () => {
    const socket = join(dir.path, 'term.sock');
    const store = join(dir.path, 'term-store');
    const gw = await startGateway(['--store', store, '--size', '256M'], { socket });
    // 96 writes of 1 MiB sent at once; SIGTERM arrives once the first four are answered.
    const script = String.raw`
import nbd, sys, json
h = nbd.NBD()
h.connect_uri(sys.argv[1])
done = {}
def cb(i):
    return lambda err: done.__setitem__(i, err.value) or 1
for i in range(96):
    h.aio_pwrite(bytes([i + 1]) * 1048576, i * 1048576, completion=cb(i))
# Signal once the first writes are answered: the server has the rest in flight or queued.
while len(done) < 4:
    h.poll(-1)
print('SENT', flush=True)
while len(done) < 96:
    h.poll(-1)
print(json.dumps(done), flush=True)
`;
    const child = spawn('python3', ['-c', script, gw.uri], { env: TOOL_ENV, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    let signalled = false;
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.startsWith('SENT') && !signalled) {
        signalled = true;
        gw.process.kill('SIGTERM');
      }
    });
    await new Promise((r) => child.on('close', r));
    assert.equal(await gw.exited, 0, gw.logs());
    assert.match(gw.logs(), /"drained":true,"msg":"stopped"/);
    const results = JSON.parse(out.split('\n')[1]!) as Record<string, number>;
    const acknowledged = Object.entries(results).filter(([, err]) => err === 0).map(([i]) => Number(i));
    assert.ok(acknowledged.length >= 4, 'the writes answered before the signal');
    for (const [, err] of Object.entries(results)) assert.ok(err === 0 || err === 108, `errno ${err}: only ESHUTDOWN may refuse`);

    const after = await startGateway(['--store', store], { socket });
    const check = String.raw`
import nbd, sys
h = nbd.NBD()
h.connect_uri(sys.argv[1])
for i in map(int, sys.argv[2].split(',')):
    assert h.pread(1048576, i * 1048576) == bytes([i + 1]) * 1048576, i
print('OK')
`;
    assert.equal((await runOk('python3', ['-c', check, after.uri, acknowledged.join(',')])).trim(), 'OK');
    assert.equal(await after.stop(), 0);
  });
});
