// The contenders of bench/compare: s3nbd (started here), and the peers, started and stopped
// by the scripts in bench/peers/ (see bench/peers/README.md for their settings and why).
// Each one serves a volume stored under its own key prefix in the same MinIO bucket, either
// as an NBD export on a Unix socket or as a kernel block device (FUSE file + loop device).

import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { REPO, run, TOOL_ENV } from '../../test/helpers/tools.ts';

export interface S3Target {
  readonly endpoint: string;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly bucket: string;
}

export interface VolumeSpec {
  /** Key prefix of the volume: the same prefix is the same volume. */
  readonly prefix: string;
  /** Bytes, a multiple of 1 MiB. */
  readonly size: number;
  /** A directory of its own for this start: a new one means empty local caches. */
  readonly workDir: string;
}

/** Either an NBD URI (fio's nbd engine, nbdcopy) or a kernel block device. */
export type Device = { readonly nbd: string } | { readonly block: string };

export interface Running {
  readonly device: Device;
  /** The server's process, where it is one process of ours (s3nbd): its CPU and memory are measured. */
  readonly pid?: number;
  /** Stops cleanly: whatever the contender holds back is written to S3 first. */
  stop(): Promise<void>;
}

export interface Contender {
  readonly name: string;
  /** What was run, with its settings, for the report. */
  readonly settings: string;
  /** Whether a FLUSH (fsync) returns only once the data is in S3; if not, only a stop ensures it. */
  readonly flushIsDurable: boolean;
  start(s3: S3Target, volume: VolumeSpec): Promise<Running>;
}

const NODE = process.execPath;

/** s3nbd with default settings plus `extraArgs`. */
export function s3nbd(name: string, extraArgs: readonly string[]): Contender {
  return {
    name,
    settings: `s3nbd serve (defaults${extraArgs.length ? `; ${extraArgs.join(' ')}` : ''}), Unix socket`,
    flushIsDurable: true,
    async start(s3, volume) {
      mkdirSync(volume.workDir, { recursive: true });
      return startS3nbd(['--store', `s3://${s3.bucket}/${volume.prefix}`, '--s3-endpoint', s3.endpoint, '--size', String(volume.size),
        '--cache-dir', join(volume.workDir, 'cache'), ...extraArgs], volume.workDir,
      { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: 'us-east-1' });
    },
  };
}

/** `s3nbd serve ARGS` on a Unix socket in `dir`, once it answers; `main`: another build's dist/cli/main.js. */
export async function startS3nbd(args: readonly string[], dir: string, env: NodeJS.ProcessEnv = {}, main = join(REPO, 'dist/cli/main.js')): Promise<Running> {
  const socket = join(dir, 'nbd.sock');
  const child = spawn(NODE, [main, 'serve', ...args, '--socket', socket, '--log-level', 'warn'], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  await waitForNbd(socket, child);
  return {
    device: { nbd: `nbd+unix:///?socket=${socket}` },
    ...(child.pid === undefined ? {} : { pid: child.pid }),
    stop: () => stopChild(child, 900_000),
  };
}

/** `nbdkit memory SIZE` (a limit, not a contender) on `socket`, once it answers. */
export async function startNbdkitMemory(socket: string, size: number): Promise<Running> {
  // nbdkit refuses to bind over a socket left behind.
  rmSync(socket, { force: true });
  const nbdkit = spawn('nbdkit', ['-f', '-U', socket, 'memory', String(size)], { stdio: 'ignore' });
  const uri = `nbd+unix:///?socket=${socket}`;
  for (let i = 0; (await run('nbdinfo', ['--size', uri])).code !== 0; i++) {
    if (i === 100 || nbdkit.exitCode !== null) {
      nbdkit.kill('SIGKILL');
      throw new Error(`nbdkit memory did not start on ${socket}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    device: { nbd: uri },
    // Waits for it to exit, so that its memory is free for what runs next.
    stop: () => new Promise<void>((resolve) => {
      if (nbdkit.exitCode !== null || nbdkit.signalCode !== null) return resolve();
      nbdkit.once('exit', () => resolve());
      nbdkit.kill('SIGTERM');
    }),
  };
}

/** A peer run by bench/peers/start-NAME.sh, which prints `ready <socket or device>`. */
export function peer(name: string, script: string, settings: string, objectSize: string, flushIsDurable: boolean): Contender {
  return {
    name,
    settings,
    flushIsDurable,
    async start(s3, volume) {
      const env = {
        ...TOOL_ENV,
        PEER_ENDPOINT: s3.endpoint, PEER_ACCESS_KEY: s3.accessKeyId, PEER_SECRET_KEY: s3.secretAccessKey,
        PEER_BUCKET: s3.bucket, PEER_PREFIX: volume.prefix, PEER_SIZE: String(volume.size),
        PEER_OBJECT_SIZE: objectSize, PEER_WORKDIR: volume.workDir,
      };
      const started = await run('bash', [join(REPO, `bench/peers/start-${script}.sh`)], { env, timeoutMs: 120_000 });
      // `ready /dev/loopN`, `ready SOCKET` or `ready SOCKET EXPORT`.
      const ready = /^ready (\S+)(?: (\S+))?$/m.exec(started.stdout);
      if (started.code !== 0 || !ready) throw new Error(`start-${script}.sh failed (exit ${started.code}):\n${started.stdout}${started.stderr}`);
      const [, where, exportName = ''] = ready as unknown as [string, string, string | undefined];
      return {
        device: where.startsWith('/dev/') ? { block: where } : { nbd: `nbd+unix:///${exportName}?socket=${where}` },
        async stop() {
          const stopped = await run('bash', [join(REPO, `bench/peers/stop-${script}.sh`)], { env, timeoutMs: 900_000 });
          if (stopped.code !== 0) throw new Error(`stop-${script}.sh failed (exit ${stopped.code}):\n${stopped.stdout}${stopped.stderr}`);
        },
      };
    },
  };
}

async function waitForNbd(socket: string, child: ChildProcess): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if (child.exitCode !== null) throw new Error(`the server exited while starting (status ${child.exitCode})`);
    if ((await run('nbdinfo', ['--size', `nbd+unix:///?socket=${socket}`], { timeoutMs: 5000 })).code === 0) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill('SIGKILL');
  throw new Error(`no NBD server on ${socket} after 60 s`);
}

async function stopChild(child: ChildProcess, timeoutMs: number): Promise<void> {
  if (child.exitCode !== null) throw new Error(`the server had already exited (status ${child.exitCode})`);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const code = await exited;
  clearTimeout(timer);
  if (code !== 0) throw new Error(`the server exited with status ${code} when stopped`);
}
