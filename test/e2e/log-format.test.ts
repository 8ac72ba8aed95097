// Logs people can read (issue 18): on a terminal the gateway writes readable lines
// (pino-pretty), to a pipe JSON lines as before; --log-format / S3NBD_LOG_FORMAT choose. The
// terminal is a real pseudo-terminal (util-linux's script), and the lines written while the
// process exits are there. User errors stay one line, on a terminal too.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { CLI, cli, tempDir } from '../helpers/gateway.ts';
import { keepOutput } from '../helpers/log-sweep.ts';
import { nbdOps } from '../helpers/nbd-ops.ts';
import { requireTool, TOOL_ENV } from '../helpers/tools.ts';
import { assertUserError } from '../helpers/user-error.ts';

const quote = (word: string): string => `'${word.replace(/'/g, `'\\''`)}'`;

interface Terminal {
  readonly output: () => string;
  /** The command's own pid (script's child, which exec'd it). */
  readonly pid: () => number;
  readonly exited: Promise<number | null>;
}

/** Runs `s3nbd ARGS` on a pseudo-terminal: script(1) gives it one, and copies what it writes to our pipe. */
function onTerminal(args: readonly string[], env: NodeJS.ProcessEnv = {}): Terminal {
  const command = `exec ${[process.execPath, CLI, ...args].map(quote).join(' ')}`;
  const child = spawn('script', ['-qfec', command, '/dev/null'], { env: { ...TOOL_ENV, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d: Buffer) => { output += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { output += d.toString(); });
  const kill = (): void => { child.kill('SIGKILL'); };
  process.on('exit', kill);
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => {
    process.off('exit', kill);
    keepOutput(`s3nbd ${args[0] ?? ''} on a terminal`, output);
    resolve(code);
  }));
  return {
    output: () => output,
    pid: () => {
      const pid = Number(readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim().split(' ')[0]);
      // Never 0: process.kill(0) would signal the test runner's whole process group.
      if (!(pid > 0)) throw new Error(`script has no child process yet:\n${output}`);
      return pid;
    },
    exited,
  };
}

/** The terminal's lines without colours and carriage returns. */
function plainLines(text: string): string[] {
  // eslint-disable-next-line no-control-regex
  return text.replace(/\x1b\[[0-9;]*m/g, '').replace(/\r/g, '').split('\n').filter((l) => l !== '');
}

async function waitFor(condition: () => boolean, output: () => string): Promise<void> {
  for (const deadline = Date.now() + 60_000; !condition();) {
    if (Date.now() > deadline) throw new Error(`timed out:\n${output()}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('log formats', () => {
  const dir = tempDir('log-format');
  after(() => dir.remove());

  it('on a terminal: readable lines (level, message), the connect line, and every line up to the exit', { timeout: 120_000 }, async () => {
    requireTool('script');
    const socket = join(dir.path, 'tty.sock');
    const term = onTerminal(['serve', '--store', join(dir.path, 'tty-store'), '--size', '64M', '--socket', socket, '--cache-dir', join(dir.path, 'tty-cache'), '--export-name', 'disk']);
    await waitFor(() => term.output().includes('connect to'), term.output);
    // Some dirty data, so the drain has something to say.
    const wrote = await nbdOps(`nbd+unix:///disk?socket=${socket}`, [['write', 0, 2 ** 20, 7]]);
    assert.ok(wrote.every((r) => r.ok));
    process.kill(term.pid(), 'SIGTERM');
    assert.equal(await term.exited, 0, term.output());

    const lines = plainLines(term.output());
    assert.ok(lines.length >= 5, term.output());
    for (const line of lines) assert.match(line, /^\[\d\d:\d\d:\d\d\.\d{3}\] (INFO|WARN|ERROR|DEBUG): \S/, `a readable line, not JSON: ${line}`);
    assert.ok(term.output().includes('\x1b['), 'coloured on a terminal');
    const messages = lines.map((l) => l.replace(/^\[[^\]]+\] \w+: /, ''));
    assert.ok(messages.some((m) => m.startsWith('volume created {')), term.output());
    assert.ok(messages.includes(`connect to export "disk": nbd+unix:///disk?socket=${socket}; or: nbd-client -unix ${socket} /dev/nbd0 -N disk`), term.output());
    assert.ok(messages.some((m) => m.startsWith('shutting down')), term.output());
    // The last line, written as the process ends, is there.
    assert.match(lines.at(-1)!, /INFO: stopped \{"exitCode":0,"drained":true\}$/);
  });

  it('to a pipe: JSON lines (auto), readable ones with --log-format pretty, JSON with S3NBD_LOG_FORMAT=json on a terminal', { timeout: 120_000 }, async () => {
    requireTool('script');
    const store = join(dir.path, 'pipe-store');
    const pipe = await serveBriefly(['--store', store, '--size', '64M'], {});
    const records = pipe.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.ok(records.some((r) => r.msg === 'volume created'), pipe);
    assert.ok(records.some((r) => typeof r.msg === 'string' && r.msg.startsWith('connect to the default export: nbd+unix:///?socket=')), pipe);

    const pretty = await serveBriefly(['--store', store, '--log-format', 'pretty'], {});
    assert.ok(!pretty.includes('\x1b['), 'no colours where there is no terminal');
    for (const line of pretty.trim().split('\n')) assert.match(line, /^\[[\d:.]+\] (INFO|WARN): /, pretty);

    const socket = join(dir.path, 'json-tty.sock');
    const term = onTerminal(['serve', '--store', store, '--socket', socket, '--cache-dir', join(dir.path, 'json-tty-cache')], { S3NBD_LOG_FORMAT: 'json' });
    await waitFor(() => term.output().includes('connect to'), term.output);
    process.kill(term.pid(), 'SIGTERM');
    assert.equal(await term.exited, 0, term.output());
    for (const line of plainLines(term.output())) assert.ok(JSON.parse(line), line);
  });

  it('user errors stay one line with their code, on a terminal too; a bad --log-format is one', { timeout: 60_000 }, async () => {
    requireTool('script');
    const bad = ['serve', '--store', join(dir.path, 'err-store'), '--size', '64M', '--listen', 'nowhere'];
    const piped = await cli(bad);
    assertUserError(piped, 'S3NBD_BAD_LISTEN');
    const term = onTerminal(bad);
    const code = await term.exited;
    assert.equal(code, 2);
    assert.deepEqual(plainLines(term.output()), [piped.stderr.trim()], 'the same line on a terminal');
    assertUserError(await cli(['serve', '--store', join(dir.path, 'err-store'), '--log-format', 'colourful']), 'S3NBD_BAD_CHOICE', /--log-format/, /auto, json, pretty/);
  });

  /** Starts serve with its stderr on a pipe, stops it once it says where to connect, and returns what it wrote. */
  async function serveBriefly(args: readonly string[], env: NodeJS.ProcessEnv): Promise<string> {
    const socket = join(dir.path, `brief-${Math.random().toString(36).slice(2)}.sock`);
    const child = spawn(process.execPath, [CLI, 'serve', '--socket', socket, '--cache-dir', `${socket}.cache`, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    await waitFor(() => stderr.includes('connect to'), () => stderr);
    child.kill('SIGTERM');
    assert.equal(await exited, 0, stderr);
    keepOutput('s3nbd serve (piped)', stderr);
    return stderr;
  }
});
