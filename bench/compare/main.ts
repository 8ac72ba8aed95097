// bench/compare: s3nbd against its peers and against the limits, side by side in one run,
// on one MinIO on 127.0.0.1 (one bucket, a fresh key prefix per contender, volume and run).
// Run it through bench/compare.sh, which installs what it needs first. Settings (environment):
//
//   BENCH_REPEAT        runs of everything (default 3); contenders alternate order each run
//   BENCH_DATA_MIB      sequential write / read size (default 1024)
//   BENCH_RANDOM_SECONDS  length of each 4 KiB random I/O run (default 15)
//   BENCH_TREE          small,large files of the ext4 copy (default 2000,3: 1-16 KiB and 32 MiB)
//   BENCH_ONLY          comma-separated contender names to run (default all)
//   BENCH_COUNT         1: count S3 requests per phase in the first run (MinIO's counters, 11 s
//                       wait per reading); 0: don't (default 1)
//
// Writes bench/results/compare-latest.json; bench/compare/report.ts turns it into
// docs/benchmarks.md and the chart.

import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startMinio } from '../../test/helpers/minio.ts';
import { REPO, run, runOk } from '../../test/helpers/tools.ts';
import { type Contender, peer, type Running, type S3Target, s3nbd } from './contenders.ts';
import { LIMITS, type Workload, WORKLOADS } from './workload-table.ts';
import { copyTreeOntoExt4, makeFileSystem, makeTree, MiB, random4k, readWholeDevice, sequentialRead, sequentialWrite } from './workloads.ts';

const env = (name: string, fallback: string): string => process.env[name] ?? fallback;
const REPEAT = Number(env('BENCH_REPEAT', '3'));
const DATA = Number(env('BENCH_DATA_MIB', '1024')) * MiB;
const RANDOM_SECONDS = Number(env('BENCH_RANDOM_SECONDS', '15'));
const [TREE_SMALL, TREE_LARGE] = env('BENCH_TREE', '2000,3').split(',').map(Number) as [number, number];
const COUNT = env('BENCH_COUNT', '1') === '1';
const BIG = 100 * 1024 * MiB;
/** The commit measured, recorded with the results (the report may be written later). */
const REVISION = execFileSync('git', ['-C', REPO, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
const BUCKET = 'bench';

export const CONTENDERS: readonly Contender[] = [
  s3nbd('s3nbd', []),
  // s3backer 1.5.4 answers fsync before the data is uploaded; only its unmount waits for it.
  peer('s3backer', 's3backer', 's3backer 1.5.4 (Debian), FUSE + loop device, 1 MiB blocks; see bench/peers/README.md', '1M', false),
  peer('nbdkit-S3', 'nbdkit-s3', "nbdkit 1.32.5's S3 plugin (Debian, boto3) behind the blocksize filters, 1 MiB objects; see bench/peers/README.md", '1M', true),
  peer('ZeroFS', 'zerofs', 'ZeroFS 0.19.1 (crates.io) NBD export, default caches; see bench/peers/README.md', '1M', true),
];

/** One measurement: a value in the workload's unit, and the S3 requests it made if counted. */
export interface Sample { value: number; requests?: Record<string, number> }
export type Results = Record<string, Record<string, Sample[]>>;


const results: Results = {};

/**
 * Before every timed phase: writes back what earlier phases left dirty in the page cache (the
 * test data, MinIO's objects, a contender's cache files). The kernel does so 30 s after the
 * writes, so otherwise a phase pays for whatever ran half a minute before it: the first
 * contender of each run read 30-50% slower for writing back the previous run's data.
 */
function settle(): void {
  execFileSync('sync');
}

/** A sample of fn, run settled, without request counts. */
async function settled(fn: () => Promise<number>): Promise<Sample> {
  settle();
  return { value: await fn() };
}

const failures: string[] = [];
function record(workload: Workload, contender: string, sample: Sample): void {
  ((results[workload] ??= {})[contender] ??= []).push(sample);
  console.error(`[bench] ${contender} ${workload}: ${sample.value.toFixed(1)} ${WORKLOADS[workload]}${sample.requests ? ` ${JSON.stringify(sample.requests)}` : ''}`);
}

async function main(): Promise<void> {
  const work = join(tmpdir(), `s3nbd-compare-${process.pid}`);
  mkdirSync(work, { recursive: true });
  const minio = await startMinio();
  try {
    await minio.createBucket(BUCKET);
    const s3: S3Target = { endpoint: minio.endpoint, accessKeyId: minio.accessKeyId, secretAccessKey: minio.secretAccessKey, bucket: BUCKET };
    const rawEnv = { ...process.env, AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: 'us-east-1' };
    const raw = (args: string[]): Promise<string> => runOk(process.execPath, [join(REPO, 'bench/s3-raw.ts'), ...args, '--client', 'direct', '--endpoint', s3.endpoint], { env: rawEnv, timeoutMs: 3_600_000 });
    const requestCounts = async (): Promise<Record<string, number>> => JSON.parse(await raw(['requests'])) as Record<string, number>;

    const tree = join(work, 'tree');
    const treeBytes = await makeTree(tree, TREE_SMALL, TREE_LARGE);
    const source = join(work, 'source.bin');
    execFileSync('sh', ['-c', 'head -c "$1" /dev/urandom > "$2"', 'source', String(DATA), source]);
    console.error(`[bench] tree: ${TREE_SMALL} + ${TREE_LARGE} files, ${(treeBytes / MiB).toFixed(0)} MiB; data: ${DATA / MiB} MiB`);

    // MinIO starts empty and cold; warm it up (unrecorded) so that the first contender of the
    // first run does not pay for what every later one finds ready.
    await raw(['put', '--bucket', BUCKET, '--prefix', 'warm-up', '--file', source, '--count', String(DATA / MiB)]);
    await raw(['get', '--bucket', BUCKET, '--prefix', 'warm-up', '--count', String(DATA / MiB)]);
    console.error('[bench] MinIO warmed up: 1 PUT and 1 GET pass over the data, not recorded');

    const only = process.env.BENCH_ONLY?.split(',');
    const contenders = CONTENDERS.filter((c) => !only || only.includes(c.name));
    for (let rep = 1; rep <= REPEAT; rep++) {
      const counting = COUNT && rep === 1;
      /**
       * Runs fn once the page cache has nothing left to write back (see settle()); with
       * counting, adds the S3 requests it caused (MinIO refreshes its counters every 10 s).
       */
      const measure = async (fn: () => Promise<number>): Promise<Sample> => {
        if (!counting) return settled(fn);
        settle();
        await new Promise((r) => setTimeout(r, 11_000));
        const before = await requestCounts();
        const value = await fn();
        await new Promise((r) => setTimeout(r, 11_000));
        const after = await requestCounts();
        const requests: Record<string, number> = {};
        for (const [api, n] of Object.entries(after)) if (n !== (before[api] ?? 0)) requests[api] = n - (before[api] ?? 0);
        return { value, requests };
      };
      const order = rep % 2 === 1 ? contenders : [...contenders].reverse();
      for (const contender of order) {
        try {
          await runContender(contender, s3, rep, join(work, `${contender.name}-${rep}`), tree, measure);
        } catch (err) {
          failures.push(`${contender.name} (run ${rep}): ${(err as Error).message.split('\n')[0]}`);
          console.error(`[bench] ${contender.name} failed: ${(err as Error).message}`);
        }
      }
      try {
        await runLimits(rep, raw, source, measure);
      } catch (err) {
        failures.push(`limits (run ${rep}): ${(err as Error).message.split('\n')[0]}`);
      }
      // After every run, so that a later failure keeps what was measured.
      const file = join(REPO, 'bench/results/compare-latest.json');
      writeFileSync(file, `${JSON.stringify({ date: new Date().toISOString(), settings: { repeat: rep, dataMiB: DATA / MiB, randomSeconds: RANDOM_SECONDS, tree: { small: TREE_SMALL, large: TREE_LARGE, mib: Math.round(treeBytes / MiB) } }, revision: REVISION, node: process.versions.node, units: WORKLOADS, limits: LIMITS, contenders: contenders.map((c) => ({ name: c.name, settings: c.settings })), results, failures }, null, 2)}\n`);
      console.error(`[bench] wrote ${file} (${rep} of ${REPEAT} runs)`);
    }
  } finally {
    await minio.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

async function runContender(c: Contender, s3: S3Target, rep: number, dir: string, tree: string, measure: (fn: () => Promise<number>) => Promise<Sample>): Promise<void> {
  const volume = (name: string, size: number, start: string) => ({ prefix: `${c.name}/run${rep}/${name}`, size, workDir: join(dir, `${name}-${start}`) });
  const stopAfter = async <T>(running: Running, fn: (r: Running) => Promise<T>): Promise<T> => {
    try {
      return await fn(running);
    } finally {
      await running.stop();
    }
  };

  // Timed until the data is in S3: the write and its flush, and, for a contender whose flush
  // does not wait for S3, a clean stop too (which uploads whatever it still holds back).
  const untilDurable = async (running: Running, work: () => Promise<number>): Promise<number> => {
    const started = await work().catch(async (err: unknown) => {
      await running.stop().catch(() => undefined);
      throw err;
    });
    if (!c.flushIsDurable) await running.stop();
    const seconds = (performance.now() - started) / 1000;
    if (c.flushIsDurable) await running.stop();
    return seconds;
  };
  const written = await measure(async () => {
    const r = await c.start(s3, volume('data', 2 * DATA, 'write'));
    return DATA / MiB / await untilDurable(r, async () => {
      const started = performance.now();
      await sequentialWrite(r.device, DATA);
      return started;
    });
  });
  record('write+flush', c.name, written);

  // Restarted with empty local caches: cold, then warm, then random I/O on the same data.
  const cold = await c.start(s3, volume('data', 2 * DATA, 'read'));
  await stopAfter(cold, async () => {
    record('cold read', c.name, await measure(async () => DATA / MiB / await sequentialRead(cold.device, DATA)));
    record('warm read', c.name, await settled(async () => DATA / MiB / await sequentialRead(cold.device, DATA)));
    record('4K rand write', c.name, await settled(() => random4k(cold.device, 'randwrite', DATA, RANDOM_SECONDS)));
    record('4K rand read', c.name, await settled(() => random4k(cold.device, 'randread', DATA, RANDOM_SECONDS)));
  });

  record('ext4 copy+sync', c.name, await measure(async () => {
    const fs = await c.start(s3, volume('ext4', 2 * DATA, 'copy'));
    return untilDurable(fs, () => copyTreeOntoExt4(fs.device, join(dir, 'ext4-copy'), tree));
  }));
  const restore = await c.start(s3, volume('ext4', 2 * DATA, 'restore'));
  record('restore', c.name, await stopAfter(restore, () => measure(() => readWholeDevice(restore.device))));

  const big = await c.start(s3, volume('big', BIG, 'mkfs'));
  record('mkfs.ext4 100G', c.name, await stopAfter(big, () => measure(() => makeFileSystem(big.device, join(dir, 'big-mkfs')))));
}

/** nbdkit memory (the local NBD path) and raw PutObject / GetObject (the S3 path). */
async function runLimits(rep: number, raw: (args: string[]) => Promise<string>, source: string, measure: (fn: () => Promise<number>) => Promise<Sample>): Promise<void> {
  // A socket of its own per run: nbdkit refuses to bind over one left behind.
  const socket = join(tmpdir(), `s3nbd-compare-nbdkit-${process.pid}-${rep}.sock`);
  rmSync(socket, { force: true });
  const nbdkit = spawn('nbdkit', ['-f', '-U', socket, 'memory', String(2 * DATA)], { stdio: 'ignore' });
  try {
    for (let i = 0; (await run('nbdinfo', ['--size', `nbd+unix:///?socket=${socket}`])).code !== 0; i++) {
      if (i === 100 || nbdkit.exitCode !== null) throw new Error(`nbdkit memory did not start on ${socket}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const device = { nbd: `nbd+unix:///?socket=${socket}` };
    record('write+flush', 'nbdkit memory', await settled(async () => DATA / MiB / await sequentialWrite(device, DATA)));
    record('warm read', 'nbdkit memory', await settled(async () => DATA / MiB / await sequentialRead(device, DATA)));
    record('4K rand write', 'nbdkit memory', await settled(() => random4k(device, 'randwrite', DATA, RANDOM_SECONDS)));
    record('4K rand read', 'nbdkit memory', await settled(() => random4k(device, 'randread', DATA, RANDOM_SECONDS)));
  } finally {
    nbdkit.kill('SIGTERM');
  }
  const count = String(DATA / MiB);
  const prefix = `raw/run${rep}`;
  record('write+flush', 'raw S3', await measure(async () => (JSON.parse(await raw(['put', '--bucket', BUCKET, '--prefix', prefix, '--file', source, '--count', count])) as { mibps: number }).mibps));
  record('cold read', 'raw S3', await measure(async () => (JSON.parse(await raw(['get', '--bucket', BUCKET, '--prefix', prefix, '--count', count])) as { mibps: number }).mibps));
}

await main();
if (failures.length > 0) {
  console.error(`[bench] failures:\n${failures.join('\n')}`);
}
