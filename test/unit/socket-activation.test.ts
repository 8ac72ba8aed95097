// systemd socket activation's variables (src/cli/socket-activation.ts), as sd_listen_fds(3) reads them.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { activatedEndpoints, activatedSockets, unixSocketPath } from '../../src/cli/socket-activation.ts';
import { UserError } from '../../src/errors.ts';

describe('socket activation', () => {
  it('takes LISTEN_FDS sockets from fd 3 when LISTEN_PID is this process, and unsets the variables', () => {
    const env: NodeJS.ProcessEnv = { LISTEN_PID: '4242', LISTEN_FDS: '2', LISTEN_FDNAMES: 'nbd:nbd-unix', PATH: '/bin' };
    assert.deepEqual(activatedSockets(env, 4242).map((s) => s.fd), [3, 4]);
    assert.deepEqual(env, { PATH: '/bin' }, 'children do not inherit them');
  });

  it('ignores (and unsets) sockets meant for another process, or none at all', () => {
    const env: NodeJS.ProcessEnv = { LISTEN_PID: '1', LISTEN_FDS: '1' };
    assert.deepEqual(activatedSockets(env, 4242), []);
    assert.deepEqual(env, {});
    assert.deepEqual(activatedSockets({}, 4242), []);
  });

  it('refuses a LISTEN_FDS that is not a number of sockets, with its code', () => {
    for (const count of ['0', 'two', '-1', '']) {
      assert.throws(() => activatedSockets({ LISTEN_PID: '7', LISTEN_FDS: count }, 7), (err: unknown) => err instanceof UserError && err.code === 'S3NBD_SOCKET_ACTIVATION');
    }
  });

  it('refuses --listen or --socket next to activated sockets, naming them; without activation they are used', () => {
    assert.throws(() => activatedEndpoints(['--listen', 'S3NBD_SOCKET'], { LISTEN_PID: '7', LISTEN_FDS: '1' }, 7),
      (err: unknown) => err instanceof UserError && err.code === 'S3NBD_SOCKET_ACTIVATION' && /--listen and S3NBD_SOCKET/.test(err.message) && /drop --listen and S3NBD_SOCKET/.test(err.fix));
    assert.deepEqual(activatedEndpoints(['--listen'], {}, 7), []);
  });

  it('finds the path of an inherited Unix socket, which Node does not know', async () => {
    const dir = mkdtempSync(join(tmpdir(), 's3nbd-sa-'));
    const path = join(dir, 'x.sock');
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(path, resolve));
    try {
      const fd = (server as unknown as { _handle: { fd: number } })._handle.fd;
      assert.equal(unixSocketPath(fd), path);
      assert.equal(unixSocketPath(99_999), undefined);
    } finally {
      server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
