// systemd socket activation (issue 18): systemd-socket-activate, systemd's own tool for this,
// listens on a TCP port and a Unix socket and starts the built gateway on the first
// connection, handing it both sockets (LISTEN_FDS). That first connection was made before the
// gateway ran: it must be served. The start lines name the activated addresses.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { CLI, tempDir } from '../helpers/gateway.ts';
import { keepOutput } from '../helpers/log-sweep.ts';
import { freePort, requireTool, run, runOk, TOOL_ENV } from '../helpers/tools.ts';
import { assertUserError } from '../helpers/user-error.ts';

const SIZE = 64 * 2 ** 20;

/** systemd-socket-activate's own lines, not the gateway's. */
const ACTIVATOR_LINE = /^(Listening on|Communication attempt|Execing) /;

function activate(listen: readonly string[], serveArgs: readonly string[]): { pid: number; stderr: () => string; exited: Promise<number | null> } {
  const args = [...listen.flatMap((l) => ['-l', l]), process.execPath, CLI, 'serve', ...serveArgs];
  const child = spawn('systemd-socket-activate', args, { env: TOOL_ENV, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  const kill = (): void => { child.kill('SIGKILL'); };
  process.on('exit', kill);
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => {
    process.off('exit', kill);
    keepOutput('socket-activated gateway', stderr);
    resolve(code);
  }));
  return { pid: child.pid!, stderr: () => stderr, exited };
}

function records(stderr: string): Array<Record<string, unknown>> {
  return stderr.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe('systemd socket activation', () => {
  const dir = tempDir('socket-activation');
  after(() => dir.remove());

  it('serves the inherited TCP and Unix sockets, the first connection included, and names them at start', { timeout: 120_000 }, async () => {
    requireTool('systemd-socket-activate');
    requireTool('nbdinfo');
    const port = await freePort();
    const socket = join(dir.path, 'nbd.sock');
    const gw = activate([`127.0.0.1:${port}`, socket], ['--store', join(dir.path, 'store'), '--size', '64M', '--cache-dir', join(dir.path, 'cache'), '--export-name', 'disk']);
    // The activator listens before anything runs: this connection starts the gateway and waits for it.
    await waitFor(() => gw.stderr().includes(`Listening on ${socket}`), gw.stderr);
    assert.equal((await runOk('nbdinfo', ['--size', `nbd://127.0.0.1:${port}/disk`], { timeoutMs: 60_000 })).trim(), String(SIZE));
    assert.equal((await runOk('nbdinfo', ['--size', `nbd+unix:///disk?socket=${socket}`], { timeoutMs: 60_000 })).trim(), String(SIZE));

    const logged = records(gw.stderr());
    const opened = logged.find((r) => r.msg === 'volume created')!;
    assert.deepEqual(opened.addresses, [`127.0.0.1:${port}`, socket], gw.stderr());
    const connect = logged.find((r) => typeof r.msg === 'string' && r.msg.startsWith('connect to'))!;
    assert.deepEqual((connect.connect as { uris: string[] }).uris, [`nbd://127.0.0.1:${port}/disk`, `nbd+unix:///disk?socket=${socket}`]);

    process.kill(gw.pid, 'SIGTERM');
    assert.equal(await gw.exited, 0, gw.stderr());
    assert.ok(records(gw.stderr()).some((r) => r.msg === 'stopped'));
  });

  it('refuses --listen next to activated sockets: one line, its code, exit 2', { timeout: 120_000 }, async () => {
    requireTool('systemd-socket-activate');
    requireTool('nbdinfo');
    const port = await freePort();
    const gw = activate([`127.0.0.1:${port}`], ['--store', join(dir.path, 'store2'), '--size', '64M', '--cache-dir', join(dir.path, 'cache2'), '--listen', '127.0.0.1:1']);
    await waitFor(() => gw.stderr().includes('Listening on'), gw.stderr);
    const client = await run('nbdinfo', ['--size', `nbd://127.0.0.1:${port}/`], { timeoutMs: 60_000 });
    assert.notEqual(client.code, 0, 'the gateway refused to start: nothing served the connection');
    const code = await gw.exited;
    const own = gw.stderr().split('\n').filter((l) => l !== '' && !ACTIVATOR_LINE.test(l)).join('\n');
    assertUserError({ code, stdout: '', stderr: `${own}\n` }, 'S3NBD_SOCKET_ACTIVATION', /--listen/);
  });
});

async function waitFor(condition: () => boolean, output: () => string): Promise<void> {
  for (const deadline = Date.now() + 30_000; !condition();) {
    if (Date.now() > deadline) throw new Error(`timed out:\n${output()}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
