// bench/kernel-client: the Linux kernel's own NBD client (nbd-client + /dev/nbd0 in a QEMU
// VM, TCG) against three servers, side by side in one run: s3nbd with --store memory: (the
// local NBD path), s3nbd on an S3 volume in a local MinIO with default settings (the product
// path: a FLUSH returns once the data is in S3), and `nbdkit memory`. One VM boot per
// contender and repeat; in it, dd writes and reads BENCH_KERNEL_MIB of random data with bs=4k
// and bs=1M (through the page cache, as dd figures usually are; the writes end with fsync,
// so the time includes the FLUSH, and the caches are dropped before each run, so reads reach
// the server), each timed in the guest. Under TCG the guest's CPU
// is the limit, so the ratios s3nbd/nbdkit say more than the MiB/s. The guest reaches the
// servers (TCP on 127.0.0.1) through QEMU's user networking as 10.0.2.2:PORT.
// Run it through bench/kernel-client.sh, which checks and installs the prerequisites.
// Settings (environment):
//
//   BENCH_REPEAT          boots per contender (default 3); the order alternates each repeat
//   BENCH_KERNEL_MIB      MiB written and read by each 1M dd (default 512)
//   BENCH_KERNEL_4K_MIB   MiB written and read by each 4K dd (default BENCH_KERNEL_MIB)
//   BENCH_KERNEL_ONLY     comma-separated contender names to run (default all)
//   BENCH_KERNEL_VERBOSE  1: the guest's console on stderr
//
// Writes bench/results/kernel-client-latest.json (the samples) and kernel-client-latest.md.
// bench/compare can call runKernelClientBench() with its own MinIO.

import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startMinio } from '../test/helpers/minio.ts';
import type { S3Target } from './compare/contenders.ts';
import { freePort, REPO, run, TOOL_ENV } from '../test/helpers/tools.ts';
import { bootVm, type VmImage, vmImage } from '../test/helpers/vm.ts';

const MiB = 1024 * 1024;

/** The dd runs, in the order the guest runs them; the values are MiB/s. */
export const WORKLOADS = ['write 1M', 'write 4K', 'read 1M', 'read 4K'] as const;
export type Workload = (typeof WORKLOADS)[number];

export interface KernelClientOptions {
  /** MinIO (or any S3) for the s3nbd-S3 contender; its bucket must exist. */
  readonly s3: S3Target;
  readonly repeat: number;
  /** MiB of each 1M dd. */
  readonly dataMiB: number;
  /** MiB of each 4K dd (default dataMiB). */
  readonly data4kMiB?: number;
  /** Contender names to run (default all). */
  readonly only?: readonly string[];
  readonly workDir: string;
}

export interface BootSample {
  readonly contender: string;
  readonly repeat: number;
  /** MiB/s of each dd, timed in the guest (MiB written or read / seconds). */
  readonly mibps: Record<Workload, number>;
  /** Seconds of each dd, timed in the guest (/proc/uptime, 10 ms resolution). */
  readonly seconds: Record<Workload, number>;
  /** Host seconds from starting QEMU until it exited (boot, data generation, checks included). */
  readonly bootSeconds: number;
  /** Guest seconds making the random source in tmpfs (untimed overhead of each boot). */
  readonly makeDataSeconds: number;
}

export interface KernelClientResults {
  readonly date: string;
  readonly settings: { readonly repeat: number; readonly dataMiB: number; readonly data4kMiB: number; readonly vmMemoryMiB: number };
  readonly contenders: readonly { readonly name: string; readonly settings: string }[];
  readonly samples: BootSample[];
  /** Medians per contender and workload, MiB/s. */
  readonly medians: Record<string, Record<Workload, number>>;
  readonly versions: Record<string, string>;
}

interface Server {
  readonly port: number;
  stop(): Promise<void>;
}

interface Contender {
  readonly name: string;
  readonly settings: string;
  start(dir: string, size: number, prefix: string): Promise<Server>;
}

function s3nbdContender(name: string, settings: string, storeArgs: (dir: string, prefix: string) => string[], env: NodeJS.ProcessEnv): Contender {
  return {
    name,
    settings,
    async start(dir, size, prefix) {
      const port = await freePort();
      const child = spawn(process.execPath, [join(REPO, 'dist/cli/main.js'), 'serve', ...storeArgs(dir, prefix), '--size', String(size),
        '--listen', `127.0.0.1:${port}`, '--log-level', 'warn'], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'inherit'] });
      return serving(child, port, name);
    },
  };
}

function contenders(s3: S3Target): Contender[] {
  const creds = { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: 'us-east-1' };
  return [
    s3nbdContender('s3nbd memory', 's3nbd serve --store memory: (TCP 127.0.0.1)', () => ['--store', 'memory:'], {}),
    s3nbdContender('s3nbd S3', 's3nbd serve --store s3://… on the local MinIO, default cache settings, an empty cache dir and a fresh key prefix per boot (TCP 127.0.0.1)',
      (dir, prefix) => ['--store', `s3://${s3.bucket}/${prefix}`, '--s3-endpoint', s3.endpoint, '--cache-dir', join(dir, 'cache')], creds),
    {
      name: 'nbdkit memory',
      settings: 'nbdkit memory SIZE (sparse allocator, TCP 127.0.0.1)',
      async start(_dir, size) {
        const port = await freePort();
        const child = spawn('nbdkit', ['-f', '-i', '127.0.0.1', '-p', String(port), 'memory', String(size)], { env: TOOL_ENV, stdio: ['ignore', 'ignore', 'inherit'] });
        return serving(child, port, 'nbdkit');
      },
    },
  ];
}

/** Waits until the server answers on the port; stop() SIGTERMs it and fails if it did not exit cleanly. */
async function serving(child: ChildProcess, port: number, name: string): Promise<Server> {
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`${name} exited while starting (status ${child.exitCode})`);
    if ((await run('nbdinfo', ['--size', `nbd://127.0.0.1:${port}`], { timeoutMs: 5000 })).code === 0) break;
    if (i === 300) {
      child.kill('SIGKILL');
      throw new Error(`${name}: no NBD server on 127.0.0.1:${port} after 30 s`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    port,
    async stop() {
      if (child.exitCode !== null) throw new Error(`${name} had already exited (status ${child.exitCode})`);
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 600_000);
      const code = await exited;
      clearTimeout(timer);
      if (code !== 0) throw new Error(`${name} exited with status ${code} when stopped`);
    },
  };
}

/**
 * The guest script. The data is random (s3nbd skips all-zero blocks), made in the guest's
 * tmpfs before anything is timed. dd goes through the page cache, as `dd bs=4k` figures
 * usually do (cl-nbd's 200 MB/s among them): the kernel turns the small blocks into larger
 * requests (max_sectors_kb 1024 lets 1 MiB through whole), so bs=4k measures the guest's
 * syscall path as much as the server. conv=fsync ends each write with a FLUSH, timed (until
 * the data is in the store for the S3 contender), and the caches are dropped before each run,
 * so every read reaches the server. The 1M and 4K writes go to separate halves of the
 * device so both are first writes. After the timed runs, both halves are compared with the
 * source, untimed: the server stored what it acknowledged.
 */
function guestScript(dataMiB: number, data4kMiB: number, port: number, verify: boolean): string {
  const half = Math.max(dataMiB, data4kMiB);
  const blocks4k = data4kMiB * 256;
  return `
GATEWAY=10.0.2.2
step() { echo "S3NBD-STEP $1"; }
now() { cut -d' ' -f1 /proc/uptime; }
timed() {
  name=$1; shift
  sync; echo 3 > /proc/sys/vm/drop_caches
  t0=$(now)
  "$@" 2> /tmp/dd.err || { cat /tmp/dd.err; exit 1; }
  t1=$(now)
  echo "S3NBD-TIME $name $t0 $t1"
}
step modprobe
modprobe nbd
step connect
nbd-client -b 4096 $GATEWAY ${port} /dev/nbd0
echo 1024 > /sys/block/nbd0/queue/max_sectors_kb
step make-data
t0=$(now)
head -c ${SEED_MIB * MiB} /dev/urandom > /tmp/seed
i=0
while [ $i -lt ${Math.ceil(half / SEED_MIB)} ]; do cat /tmp/seed; i=$((i + 1)); done | head -c ${half * MiB} > /tmp/src
rm /tmp/seed
echo "S3NBD-INFO make-data $t0 $(now)"
step dd
timed 'write 1M' dd if=/tmp/src of=/dev/nbd0 bs=1M count=${dataMiB} conv=fsync
timed 'write 4K' dd if=/tmp/src of=/dev/nbd0 bs=4k count=${blocks4k} seek=${half * 256} conv=fsync
timed 'read 1M' dd if=/dev/nbd0 of=/dev/null bs=1M count=${dataMiB}
timed 'read 4K' dd if=/dev/nbd0 of=/dev/null bs=4k count=${blocks4k} skip=${half * 256}
step verify
${verify ? `sync; echo 3 > /proc/sys/vm/drop_caches
dd if=/dev/nbd0 bs=1M count=${dataMiB} 2>/dev/null | cmp - /tmp/src
dd if=/tmp/src bs=1M count=${data4kMiB} 2>/dev/null > /tmp/src4k
dd if=/dev/nbd0 bs=1M count=${data4kMiB} skip=${half} 2>/dev/null | cmp - /tmp/src4k
echo "S3NBD-INFO verified"` : 'echo "S3NBD-INFO not verified (first repeat only)"'}
step disconnect
nbd-client -d /dev/nbd0
`;
}

/**
 * The guest's /dev/urandom makes about 4 MiB/s under TCG: the source repeats a random block of
 * this size (no all-zero blocks, incompressible within each 1 MiB extent, and s3nbd does not
 * deduplicate).
 */
const SEED_MIB = 8;

const STEPS = ['modprobe', 'connect', 'make-data', 'dd', 'verify', 'disconnect'];

/** Guest memory: the random source (twice, for the check) lives in tmpfs, which gets half the RAM at most. */
export function vmMemoryMiB(dataMiB: number, data4kMiB: number): number {
  return Math.max(512, 2 * (Math.max(dataMiB, data4kMiB) + data4kMiB) + 384);
}

async function bootOnce(image: VmImage, contender: Contender, options: KernelClientOptions, rep: number): Promise<BootSample> {
  const dir = join(options.workDir, `${contender.name.replaceAll(' ', '-')}-${rep}`);
  mkdirSync(dir, { recursive: true });
  const data4kMiB = options.data4kMiB ?? options.dataMiB;
  const half = Math.max(options.dataMiB, data4kMiB);
  const server = await contender.start(dir, 2 * half * MiB, `kernel-client/${Date.now()}-${contender.name.replaceAll(' ', '-')}-${rep}`);
  let vm: { code: number | null; console: string };
  const started = performance.now();
  try {
    // Generous: the boot, then each dd at 0.5 MiB/s (buffered dd under TCG did several MiB/s).
    const timeoutSeconds = 300 + 4 * (options.dataMiB + data4kMiB);
    const guestScriptText = guestScript(options.dataMiB, data4kMiB, server.port, rep === 1);
    vm = await bootVm(image, { guestScript: guestScriptText, port: server.port, network: 'host', workDir: dir, timeoutSeconds, memoryMiB: vmMemoryMiB(options.dataMiB, data4kMiB) }).exited;
  } finally {
    await server.stop();
  }
  const bootSeconds = (performance.now() - started) / 1000;
  const steps = [...vm.console.matchAll(/^S3NBD-STEP (\S+)/gm)].map((m) => m[1]);
  if (vm.code !== 0 || !/^S3NBD-RESULT ok$/m.test(vm.console) || steps.join() !== STEPS.join()) {
    throw new Error(`${contender.name} (repeat ${rep}): the guest failed (QEMU exit ${vm.code}, steps ${steps.join(', ')}); console:\n${vm.console}`);
  }
  const seconds = {} as Record<Workload, number>;
  const mibps = {} as Record<Workload, number>;
  for (const workload of WORKLOADS) {
    const m = new RegExp(`^S3NBD-TIME ${workload} (\\S+) (\\S+)$`, 'm').exec(vm.console);
    if (!m) throw new Error(`${contender.name}: no time for ${workload} on the console:\n${vm.console}`);
    seconds[workload] = Math.max(0.01, Number(m[2]) - Number(m[1]));
    mibps[workload] = (workload.endsWith('4K') ? data4kMiB : options.dataMiB) / seconds[workload];
  }
  const made = /^S3NBD-INFO make-data (\S+) (\S+)$/m.exec(vm.console);
  const makeDataSeconds = made ? Number(made[2]) - Number(made[1]) : Number.NaN;
  rmSync(dir, { recursive: true, force: true });
  return { contender: contender.name, repeat: rep, mibps, seconds, bootSeconds, makeDataSeconds };
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

function version(cmd: string, args: string[], pattern: RegExp): string {
  try {
    const out = execFileSync(cmd, args, { env: TOOL_ENV, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    return pattern.exec(out)?.[1] ?? out.split('\n')[0]!;
  } catch (err) {
    // nbd-client -V exits 1 after printing its version.
    const e = err as { stdout?: string; stderr?: string };
    const out = `${e.stdout ?? ''}${e.stderr ?? ''}`;
    return pattern.exec(out)?.[1] ?? 'unknown';
  }
}

/** Boots the VM once per contender and repeat, contenders alternating order; throws on any failure. */
export async function runKernelClientBench(options: KernelClientOptions): Promise<KernelClientResults> {
  const image = await vmImage();
  const all = contenders(options.s3);
  const chosen = all.filter((c) => !options.only || options.only.includes(c.name));
  if (chosen.length === 0) throw new Error(`no contender among ${options.only?.join(', ')}; known: ${all.map((c) => c.name).join(', ')}`);
  const samples: BootSample[] = [];
  for (let rep = 1; rep <= options.repeat; rep++) {
    const order = rep % 2 === 1 ? chosen : [...chosen].reverse();
    for (const contender of order) {
      execFileSync('sync');
      const sample = await bootOnce(image, contender, options, rep);
      samples.push(sample);
      console.error(`[bench] ${contender.name} (repeat ${rep}): ${WORKLOADS.map((w) => `${w} ${sample.mibps[w].toFixed(1)}`).join(', ')} MiB/s; VM ${sample.bootSeconds.toFixed(0)} s`);
    }
  }
  const medians: Record<string, Record<Workload, number>> = {};
  for (const c of chosen) {
    medians[c.name] = Object.fromEntries(WORKLOADS.map((w) => [w, median(samples.filter((s) => s.contender === c.name).map((s) => s.mibps[w]))])) as Record<Workload, number>;
  }
  const kernel = /vm\/([^/]+)-[0-9a-f]{12}\/vmlinuz$/.exec(image.kernel)?.[1] ?? image.kernel;
  return {
    date: new Date().toISOString(),
    settings: { repeat: options.repeat, dataMiB: options.dataMiB, data4kMiB: options.data4kMiB ?? options.dataMiB, vmMemoryMiB: vmMemoryMiB(options.dataMiB, options.data4kMiB ?? options.dataMiB) },
    contenders: chosen.map((c) => ({ name: c.name, settings: c.settings })),
    samples,
    medians,
    versions: {
      s3nbd: execFileSync('git', ['-C', REPO, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim(),
      node: process.versions.node,
      'guest kernel': kernel,
      qemu: version('qemu-system-x86_64', ['--version'], /version (\S+)/),
      'nbd-client': version('nbd-client', ['-V'], /nbd-client, from nbd (\S+)/),
      nbdkit: version('nbdkit', ['--version'], /nbdkit (\S+)/),
      busybox: version('busybox', [], /BusyBox (v\S+)/),
    },
  };
}

/** The report: medians, ratios s3nbd/nbdkit, the samples, the machine and how it was measured. */
export function kernelClientMarkdown(r: KernelClientResults): string {
  const names = r.contenders.map((c) => c.name);
  const ratioOf = (name: string, w: Workload): string => {
    const base = r.medians['nbdkit memory']?.[w];
    const v = r.medians[name]?.[w];
    return base && v !== undefined ? `${(v / base).toFixed(2)}×` : '–';
  };
  const s3nbds = names.filter((n) => n.startsWith('s3nbd'));
  const head = ['workload', ...names.map((n) => `${n} (MiB/s)`), ...(names.includes('nbdkit memory') ? s3nbds.map((n) => `${n} / nbdkit`) : [])];
  const rows = WORKLOADS.map((w) => [w, ...names.map((n) => r.medians[n]![w].toFixed(1)), ...(names.includes('nbdkit memory') ? s3nbds.map((n) => ratioOf(n, w)) : [])]);
  const table = (cells: string[][]): string => cells.map((c) => `| ${c.join(' | ')} |`).join('\n');
  const sep = head.map((_, i) => (i === 0 ? '---' : '---:'));
  const sampleRows = r.samples.map((s) => [s.contender, String(s.repeat), ...WORKLOADS.map((w) => `${s.mibps[w].toFixed(1)} (${s.seconds[w].toFixed(2)} s)`), s.bootSeconds.toFixed(0)]);
  const cpu = cpus()[0]?.model ?? 'unknown';
  const uname = execFileSync('uname', ['-srm'], { encoding: 'utf8' }).trim();
  return `# Kernel NBD client: s3nbd against nbdkit memory

Medians of ${r.settings.repeat} boot(s) per contender, MiB/s (higher is better); ${r.settings.dataMiB} MiB per 1M dd,
${r.settings.data4kMiB} MiB per 4K dd.
Under QEMU's TCG the guest's CPU is the limit: the ratios s3nbd/nbdkit are the figure, not the MiB/s.

${table([head, sep, ...rows])}

## How it was measured

\`bench/kernel-client.sh\` boots Debian's kernel under QEMU (TCG, 2 vCPUs, ${r.settings.vmMemoryMiB} MiB, q35, virtio-net)
from the initramfs of \`scripts/vm/build-initramfs.sh\`, once per contender and repeat, the
contenders alternating order each repeat. The guest reaches the server (TCP on the host's
127.0.0.1) through QEMU's user networking as 10.0.2.2:PORT (slirp's own socket: the VM tests'
guestfwd through socat adds about 40 ms to every small write), connects with
\`nbd-client -b 4096\` (one connection), sets max_sectors_kb to 1024, fills its tmpfs with
random data (untimed: an ${SEED_MIB} MiB block from /dev/urandom, repeated; s3nbd skips all-zero blocks and
does not deduplicate), then, each timed in the guest with /proc/uptime (10 ms) around busybox
\`dd\`, after \`sync\` and dropping the caches:

- **write 1M / write 4K**: \`dd if=/tmp/src of=/dev/nbd0 bs=1M|4k conv=fsync\`, to
  separate halves of a ${2 * Math.max(r.settings.dataMiB, r.settings.data4kMiB)} MiB device (both first writes), through the
  guest's page cache as dd figures usually are (the kernel merges the blocks into larger NBD
  writes); the final fsync sends a FLUSH, so the time ends when the server says the data is
  durable (for s3nbd S3: in MinIO).
- **read 1M / read 4K**: \`dd if=/dev/nbd0 of=/dev/null bs=1M|4k\` of the halves just written,
  the guest's caches dropped first, so every byte is read from the server (with the kernel's
  readahead). s3nbd S3 serves them from its local cache (warm, as a client reading back what
  it wrote would see).

In the first repeat only, untimed, both halves are then read back and compared with the source.
Under TCG every request costs the guest milliseconds of emulated CPU and slirp, and the
machine's other load moves a single boot's figures by 30-50%: compare medians of several repeats.

Contenders:

${r.contenders.map((c) => `- **${c.name}**: ${c.settings}`).join('\n')}

## Samples

MiB/s (dd seconds), and the host seconds of the whole boot.

${table([['contender', 'repeat', ...WORKLOADS, 'VM s'], ['---', '---:', ...WORKLOADS.map(() => '---:'), '---:'], ...sampleRows])}

## Machine and versions

- date: ${r.date}
- host: ${uname}, ${cpus().length} CPUs (${cpu}), ${(totalmem() / 1024 ** 3).toFixed(1)} GiB
${Object.entries(r.versions).map(([k, v]) => `- ${k}: ${v}`).join('\n')}
`;
}

async function main(): Promise<void> {
  const env = (name: string, fallback: string): string => process.env[name] || fallback;
  const repeat = Number(env('BENCH_REPEAT', '3'));
  const dataMiB = Number(env('BENCH_KERNEL_MIB', '512'));
  const data4kMiB = Number(env('BENCH_KERNEL_4K_MIB', String(dataMiB)));
  for (const n of [repeat, dataMiB, data4kMiB]) {
    if (!Number.isInteger(n) || n < 1) throw new Error('BENCH_REPEAT, BENCH_KERNEL_MIB and BENCH_KERNEL_4K_MIB must be positive integers');
  }
  if (process.env.BENCH_KERNEL_VERBOSE === '1') process.env.S3NBD_VM_VERBOSE = '1';
  const workDir = join(tmpdir(), `s3nbd-kernel-client-${process.pid}`);
  mkdirSync(workDir, { recursive: true });
  const minio = await startMinio();
  try {
    const bucket = 'bench';
    await minio.createBucket(bucket);
    const s3 = { endpoint: minio.endpoint, accessKeyId: minio.accessKeyId, secretAccessKey: minio.secretAccessKey, bucket };
    const results = await runKernelClientBench({ s3, repeat, dataMiB, data4kMiB, workDir, only: process.env.BENCH_KERNEL_ONLY?.split(',') });
    const base = join(REPO, 'bench/results/kernel-client-latest');
    writeFileSync(`${base}.json`, `${JSON.stringify(results, null, 2)}\n`);
    const markdown = kernelClientMarkdown(results);
    writeFileSync(`${base}.md`, markdown);
    console.log(markdown.split('\n## How')[0]);
    console.error(`[bench] wrote ${base}.json and ${base}.md`);
  } finally {
    await minio.stop();
    rmSync(workDir, { recursive: true, force: true });
  }
}

// Run as a script, not when bench/compare imports it.
if (process.argv[1] === fileURLToPath(import.meta.url)) await main();
