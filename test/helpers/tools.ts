// Running the real tools the end-to-end tests drive. A missing tool is a failure, never a
// skip: the test command installs them (scripts/install-test-deps.sh).

import { keepOutput } from './log-sweep.ts';
import { execFile, spawnSync } from 'node:child_process';
import { createServer } from 'node:net';
import { resolve } from 'node:path';

/** The repository's root directory. */
export const REPO = resolve(import.meta.dirname, '../..');

/** Debian's python3 first: libnbd's Python bindings (nbdsh) live there, not in pyenv's. */
export const TOOL_ENV = { ...process.env, PATH: `/usr/sbin:/usr/bin:/sbin:/bin:${process.env.PATH ?? ''}` };

/**
 * Every external tool the tests run, with the Debian package that provides it. requireTool()
 * takes only these names, and test/unit/test-deps.test.ts checks that each package is one
 * that every Debian 12 has, or one that scripts/install-test-deps.sh installs before the test
 * runner starts: a tool installed later (or by hand) passes here and fails on a fresh machine.
 */
export const TOOL_PACKAGES = {
  nbdinfo: 'libnbd-bin',
  nbdcopy: 'libnbd-bin',
  nbdfuse: 'libnbd-bin',
  nbdsh: 'python3-libnbd',
  'qemu-io': 'qemu-utils',
  'qemu-img': 'qemu-utils',
  'qemu-system-x86_64': 'qemu-system-x86',
  socat: 'socat',
  fio: 'fio',
  nbdkit: 'nbdkit',
  openssl: 'openssl',
  // TLS credentials for the tests of TLS on the NBD connection (test/helpers/tls-certs.ts).
  certtool: 'gnutls-bin',
  psktool: 'gnutls-bin',
  'mkfs.ext4': 'e2fsprogs',
  e2fsck: 'e2fsprogs',
  debugfs: 'e2fsprogs',
  fstrim: 'util-linux',
  fsfreeze: 'util-linux',
  rsync: 'rsync',
  fusermount3: 'fuse3',
  python3: 'python3',
  losetup: 'mount',
  unshare: 'util-linux',
  setpriv: 'util-linux',
  git: 'git',
  // systemd's tools: socket activation of the gateway, and checking the unit files of docs/systemd.md.
  'systemd-socket-activate': 'systemd',
  'systemd-analyze': 'systemd',
  // A pseudo-terminal for the readable log lines (test/e2e/log-format.test.ts).
  script: 'bsdutils',
  mount: 'mount',
  umount: 'mount',
  timeout: 'coreutils',
  sync: 'coreutils',
  true: 'coreutils',
  dd: 'coreutils',
  df: 'coreutils',
  cp: 'coreutils',
  find: 'findutils',
  sh: 'dash',
  bash: 'bash',
  dpkg: 'dpkg',
  cc: 'gcc',
  // Ceph RGW, the second S3 server of the integration tests (test/helpers/ceph.ts).
  'ceph-mon': 'ceph-mon',
  'ceph-osd': 'ceph-osd',
  radosgw: 'radosgw',
  'radosgw-admin': 'ceph-common',
  monmaptool: 'ceph-base',
  ceph: 'ceph-common',
  // A real Prometheus scraping the admin endpoint (test/integration/monitoring.test.ts).
  prometheus: 'prometheus',
  promtool: 'prometheus',
  // The status page's tests drive it through puppeteer-core (test/helpers/chromium.ts).
  chromium: 'chromium',
} as const;

export type Tool = keyof typeof TOOL_PACKAGES;

export function requireTool(name: Tool): void {
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
      keepOutput(`${cmd} ${args.slice(0, 3).join(' ')}`, `${String(stdout)}${String(stderr)}`);
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
