// Running the real tools the end-to-end tests drive. A missing tool is a failure, never a
// skip: the test command installs them (scripts/install-test-deps.sh).

import { execFile, spawnSync } from 'node:child_process';
import { createServer } from 'node:net';
import { resolve } from 'node:path';

/** The repository's root directory. */
export const REPO = resolve(import.meta.dirname, '../..');

/** Debian's python3 first: libnbd's Python bindings (nbdsh) live there, not in pyenv's. */
export const TOOL_ENV = { ...process.env, PATH: `/usr/sbin:/usr/bin:/sbin:/bin:${process.env.PATH ?? ''}` };

export function requireTool(name: string): void {
  const found = spawnSync('sh', ['-c', `command -v ${name}`], { env: TOOL_ENV }).status === 0;
  if (!found) throw new Error(`${name} is not installed: run scripts/install-test-deps.sh (or npm test, which does)`);
}

export interface RunResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a command with a time limit; resolves with its exit code and output (never rejects on exit code). */
export interface RunOptions {
  timeoutMs?: number;
  input?: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

export function run(cmd: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, {
      env: options.env ?? TOOL_ENV,
      ...(options.cwd ? { cwd: options.cwd } : {}),
      timeout: options.timeoutMs ?? 120_000,
      killSignal: 'SIGKILL',
      maxBuffer: 64 * 1024 * 1024,
    }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
    if (options.input !== undefined) child.stdin?.end(options.input);
  });
}

/** Like run(), but throws with the output when the exit code is not 0. */
export async function runOk(cmd: string, args: readonly string[], options: RunOptions = {}): Promise<string> {
  const r = await run(cmd, args, options);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/** A TCP port on 127.0.0.1 that nothing listens on right now (for servers that cannot pick one). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address();
      probe.close(() => {
        if (address && typeof address === 'object') resolve(address.port);
        else reject(new Error('no port'));
      });
    });
  });
}
