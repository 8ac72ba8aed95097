// Keeps docs/systemd.md true: its unit files pass `systemd-analyze verify`, its ExecStart uses
// options serve has, and its stop timeout and restart policy fit the gateway's shutdown bound
// and exit statuses.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { connectHint } from '../../src/cli/connect-hint.ts';
import { EXIT_FENCED, SHUTDOWN_MARGIN_MS } from '../../src/cli/serve.ts';
import { REPO, requireTool, TOOL_ENV } from '../helpers/tools.ts';

const guide = readFileSync(join(REPO, 'docs/systemd.md'), 'utf8');
const EXECUTABLE = '/usr/local/bin/s3nbd';

/** The guide's unit files: ```ini blocks that start with the path they are installed at. */
const units = new Map([...guide.matchAll(/^```ini\n# \/etc\/systemd\/system\/(\S+)\n([\s\S]*?)^```$/gm)].map((m) => [m[1]!, m[2]!]));

function setting(unit: string, key: string): string {
  const m = new RegExp(`^${key}=(.*)$`, 'm').exec(units.get(unit) ?? '');
  assert.ok(m, `${unit} sets ${key}=`);
  return m[1]!;
}

/** Writes the units (the executable made to exist: verify checks it) and runs systemd-analyze verify on them. */
function verify(dir: string, edit: (text: string) => string = (t) => t): { status: number | null; stderr: string } {
  const program = join(dir, 's3nbd');
  writeFileSync(program, '#!/bin/sh\n');
  chmodSync(program, 0o755);
  const paths = [...units].map(([name, text]) => {
    const path = join(dir, name);
    writeFileSync(path, edit(text.replaceAll(EXECUTABLE, program)));
    return path;
  });
  const r = spawnSync('systemd-analyze', ['verify', ...paths], { env: TOOL_ENV, encoding: 'utf8' });
  return { status: r.status, stderr: r.stderr };
}

describe('the systemd units (docs/systemd.md)', () => {
  const dir = mkdtempSync(join(tmpdir(), 's3nbd-units-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('are a socket and a service that systemd-analyze verify finds nothing wrong with', () => {
    requireTool('systemd-analyze');
    assert.deepEqual([...units.keys()].sort(), ['s3nbd.service', 's3nbd.socket']);
    const r = verify(dir);
    assert.equal(r.stderr, '');
    assert.equal(r.status, 0);
    // The check can fail: a misspelt key and a missing executable are reported.
    const broken = verify(dir, (t) => t.replace('KillSignal=', 'KilSignal=').replace(join(dir, 's3nbd'), '/nonexistent/s3nbd'));
    assert.match(broken.stderr, /Unknown key 'KilSignal'/);
    assert.match(broken.stderr, /\/nonexistent\/s3nbd is not executable/);
  });

  it('run serve with options it has, and none that socket activation refuses', () => {
    const exec = setting('s3nbd.service', 'ExecStart');
    assert.ok(exec.startsWith(`${EXECUTABLE} serve `), exec);
    const help = spawnSync(process.execPath, [join(REPO, 'src/cli/main.ts'), 'serve', '--help'], { encoding: 'utf8' }).stdout;
    const options: string[] = exec.match(/--[a-z-]+/g) ?? [];
    assert.ok(options.length >= 3, exec);
    for (const option of options) assert.ok(help.includes(`${option} `), `serve has ${option}`);
    assert.ok(!options.includes('--listen') && !options.includes('--socket'), 'the .socket unit says where to listen');
    assert.match(setting('s3nbd.service', 'CacheDirectory'), /^s3nbd$/);
    assert.ok(exec.includes('--cache-dir /var/cache/s3nbd'), 'the CacheDirectory= systemd makes');
  });

  it('stop with SIGTERM and wait longer than the drain can take; do not restart after a user error or a fence', () => {
    assert.equal(setting('s3nbd.service', 'KillSignal'), 'SIGTERM');
    const drainTimeout = Number(/--drain-timeout (\d+)/.exec(setting('s3nbd.service', 'ExecStart'))?.[1]);
    assert.ok(Number(setting('s3nbd.service', 'TimeoutStopSec')) > drainTimeout + SHUTDOWN_MARGIN_MS / 1000);
    assert.equal(setting('s3nbd.service', 'Restart'), 'on-failure');
    assert.deepEqual(setting('s3nbd.service', 'RestartPreventExitStatus').split(' '), ['2', String(EXIT_FENCED)]);
    assert.equal(setting('s3nbd.service', 'User'), 's3nbd');
    assert.match(setting('s3nbd.socket', 'ListenStream'), /^10809$/);
  });

  it('quote the connect line as the gateway writes it (systemd listens on [::]:10809 for ListenStream=10809)', () => {
    const quoted = /^```\n(connect to .*)\n```$/m.exec(guide)?.[1];
    assert.equal(quoted, connectHint({ addresses: [{ address: '::', family: 'IPv6', port: 10809 }], exportName: 'vol1', hostname: 'backup-gw' }).message);
  });
});
