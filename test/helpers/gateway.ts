// Starts the real s3nbd CLI (the built dist/) as a child process for end-to-end tests.

import { keepOutput } from './log-sweep.ts';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { REPO } from './tools.ts';

export { REPO };
export const CLI = join(REPO, 'dist/cli/main.js');

export interface Gateway {
  readonly process: ChildProcess;
  readonly socket: string;
  /** nbd+unix URI of the default export. */
  readonly uri: string;
  /** Everything the gateway logged so far. */
  logs(): string;
  /** Resolves with the exit code once the process has exited. */
  readonly exited: Promise<number | null>;
  /** Sends a signal and resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

const running = new Set<ChildProcess>();

/** Kills every gateway a test left running, so a failed test cannot hang the run. */
export function killAllGateways(): void {
  for (const child of running) child.kill('SIGKILL');
}
// Registered on the root test of every file that uses this helper.
after(killAllGateways);

export function tempDir(name: string): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), `s3nbd-${name}-`));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** Runs `s3nbd ARGS` to completion. */
/** Runs the CLI (`main`: another build's dist/cli/main.js) to its end. */
export async function cli(args: readonly string[], env: NodeJS.ProcessEnv = {}, main = CLI): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [main, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  const code = await new Promise<number | null>((res) => child.on('close', (c) => res(c)));
  keepOutput(`s3nbd ${args.slice(0, 2).join(' ')}`, stdout + stderr);
  return { code, stdout, stderr };
}

/**
 * Starts `s3nbd serve` on a Unix socket (plus any extra arguments) and waits until it listens.
 * The gateway is killed when the test process exits, whatever happens.
 */
export async function startGateway(args: readonly string[], options: { socket: string; env?: NodeJS.ProcessEnv; timeoutMs?: number; main?: string; readyLine?: RegExp }): Promise<Gateway> {
  // Each socket gets its own cache directory beside it, unless the test names one (or the
  // environment does): a gateway restarted on the same socket finds its own cache again.
  const cacheDir = args.includes('--cache-dir') || options.env?.S3NBD_CACHE_DIR ? [] : ['--cache-dir', `${options.socket}.cache`];
  const child = spawn(process.execPath, [options.main ?? CLI, 'serve', '--socket', options.socket, '--log-level', 'debug', ...cacheDir, ...args], {
    env: { ...process.env, ...options.env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let logs = '';
  const killOnExit = (): void => {
    child.kill('SIGKILL');
    keepOutput('gateway log (still running at exit)', logs);
  };
  process.on('exit', killOnExit);
  running.add(child);
  child.stderr.on('data', (d: Buffer) => { logs += d.toString(); });
  const exited = new Promise<number | null>((res) => child.on('exit', (code, signal) => {
    process.off('exit', killOnExit);
    keepOutput('gateway log', logs);
    running.delete(child);
    res(code ?? (signal ? -1 : null));
  }));

  const deadline = Date.now() + (options.timeoutMs ?? 20_000);
  // Logged once every endpoint listens.
  // serve --volumes: "volumes opened" (readyLine).
  const readyLine = options.readyLine ?? /"msg":"volume (opened|created)"/;
  while (!readyLine.test(logs)) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`gateway exited early:\n${logs}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`gateway did not start listening in time:\n${logs}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    process: child,
    socket: options.socket,
    uri: `nbd+unix:///?socket=${options.socket}`,
    logs: () => logs,
    exited,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}
