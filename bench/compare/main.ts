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
//   BENCH_MEMORY_CACHE_MIB  s3nbd's --memory-cache (default BENCH_DATA_MIB + 256: the warm read
//                       is of data the cache holds; peak RSS is checked against it + 150 MiB)
//   BENCH_LOCAL         1: the local NBD path too (s3nbd --store memory: against nbdkit memory,
//                       when s3nbd runs); 0: not (default 1)
//   BENCH_LOCAL_MIB     its pre-filled region (default 1024, as bench/protocol.sh; devices are 4 GiB)
//   BENCH_LOCAL_SECONDS its time-based runs (default 10, after 2 s of ramp, as bench/protocol.sh)
//
// s3nbd runs with --max-dirty 1G (its default) spelled out. Its gateway process's CPU time and
// peak RSS are measured around every phase (usage.ts), as is the raw S3 client's CPU time, and
// the whole machine's CPU time around every phase of every contender and limit.
//
// Writes bench/results/compare-latest.json; bench/compare/report.ts turns it into
// docs/benchmarks.md and the chart.

import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startMinio } from '../../test/helpers/minio.ts';
import { REPO, runOk } from '../../test/helpers/tools.ts';
import { type Contender, peer, type Running, type S3Target, s3nbd, startNbdkitMemory } from './contenders.ts';
import { LOCAL_DEVICE, runLocal } from './local.ts';
import { type MachineUsage, setStorePid, type Usage, watchMachine, watchUsage } from './usage.ts';
import { LIMITS, LOCAL_WORKLOADS, PEER_LEAD, RSS_HEADROOM_MIB, TARGETS, type Workload, WORKLOADS } from './workload-table.ts';
import { copyTreeOntoExt4, flushDevice, makeFileSystem, makeTree, MiB, random4k, type Rate, readWholeDevice, sequentialRead, sequentialWrite } from './workloads.ts';

const env = (name: string, fallback: string): string => process.env[name] ?? fallback;
const REPEAT = Number(env('BENCH_REPEAT', '3'));
const DATA = Number(env('BENCH_DATA_MIB', '1024')) * MiB;
const RANDOM_SECONDS = Number(env('BENCH_RANDOM_SECONDS', '15'));
const [TREE_SMALL, TREE_LARGE] = env('BENCH_TREE', '2000,3').split(',').map(Number) as [number, number];
const COUNT = env('BENCH_COUNT', '1') === '1';
const MEMORY_CACHE = Number(env('BENCH_MEMORY_CACHE_MIB', String(DATA / MiB + 256))) * MiB;
const LOCAL = env('BENCH_LOCAL', '1') === '1';
const LOCAL_REGION = Number(env('BENCH_LOCAL_MIB', '1024')) * MiB;
const LOCAL_SECONDS = Number(env('BENCH_LOCAL_SECONDS', '10'));
const LOCAL_RAMP = 2;
const MAX_DIRTY = 1024 * MiB;
/**
 * The region of '4K rand write hot'. s3nbd's flusher (src/storage/cache/flusher.ts pump())
 * uploads every dirty extent at once, whatever its age, as soon as the dirty extents pass half
 * of --max-dirty; below that, an extent is uploaded only once it has had no change for the
 * upload delay, which 4 KiB writes spread over a small region rarely allow. Random writes
 * dirty every 1 MiB extent of their region, so the dirty set is the region: a quarter of
 * --max-dirty keeps it at half of that threshold, the rest of the data (written before) clean.
 * (The journal has a bound of its own, --max-dirty plus two segments of records, which a
 * long fast run can reach: the report shows the IOPS, the run length and this region.)
 */
const HOT_REGION = Math.min(MAX_DIRTY / 4, DATA);
const S3NBD_ARGS = ['--memory-cache', `${MEMORY_CACHE / MiB}M`, '--max-dirty', `${MAX_DIRTY / MiB}M`];
const BIG = 100 * 1024 * MiB;
/** The commit measured, recorded with the results (the report may be written later). */
const REVISION = execFileSync('git', ['-C', REPO, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
const BUCKET = 'bench';

export const CONTENDERS: readonly Contender[] = [
  s3nbd('s3nbd', S3NBD_ARGS),
  // s3backer 1.5.4 answers fsync before the data is uploaded; only its unmount waits for it.
  peer('s3backer', 's3backer', 's3backer 1.5.4 (Debian), FUSE + loop device, 1 MiB blocks; see bench/peers/README.md', '1M', false),
  peer('nbdkit-S3', 'nbdkit-s3', "nbdkit 1.32.5's S3 plugin (Debian, boto3) behind the blocksize filters, 1 MiB objects; see bench/peers/README.md", '1M', true),
  peer('ZeroFS', 'zerofs', 'ZeroFS 1.4.5 (source of 33fd43e, thin LTO) NBD export on a Unix socket, default caches (1 GB memory, 10 GB disk), zstd-3, telemetry off; see bench/peers/README.md', '1M', true),
];

/**
 * One measurement: a value in the workload's unit, and the S3 requests it made if counted;
 * for s3nbd and the raw S3 client, the bytes the phase moved and the CPU seconds it took, and
 * for s3nbd its peak RSS in the phase; for every phase the machine's CPU (usage.ts).
 */
export interface Sample extends Partial<MachineUsage> { value: number; requests?: Record<string, number>; bytes?: number; cpuSeconds?: number; peakRssMiB?: number }
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
async function settled(fn: () => Promise<Sample>): Promise<Sample> {
  settle();
  return fn();
}

/**
 * A phase of a running contender: its value from `fn`, with the bytes moved (`bytes` of the
 * value) and, for s3nbd, the CPU and peak RSS of its process in the phase.
 */
function gauged(running: Running, bytes: (value: number) => number, fn: () => Promise<number>): () => Promise<Sample> {
  return async () => {
    const usage = watchUsage(running.pid);
    const value = await fn();
    return { value, bytes: bytes(value), ...usage() };
  };
}

/** The same for a phase that measures its own bytes (fio's random and time-based runs). */
function gaugedRate(running: Running, fn: () => Promise<Rate>): () => Promise<Sample> {
  return async () => {
    const usage = watchUsage(running.pid);
    const rate = await fn();
    return { ...rate, ...usage() };
  };
}

const failures: string[] = [];
function record(workload: Workload | keyof typeof LOCAL_WORKLOADS, contender: string, sample: Sample): void {
  ((results[workload] ??= {})[contender] ??= []).push(sample);
  const unit = workload in WORKLOADS ? WORKLOADS[workload as Workload] : LOCAL_WORKLOADS[workload as keyof typeof LOCAL_WORKLOADS].unit;
  const usage = sample.cpuSeconds === undefined ? '' : ` (${sample.cpuSeconds.toFixed(2)} CPU-s${sample.peakRssMiB === undefined ? '' : `, peak RSS ${sample.peakRssMiB.toFixed(0)} MiB`})`;
  const machine = sample.machineBusy === undefined ? '' : ` [machine ${(100 * sample.machineBusy).toFixed(0)}% busy]`;
  console.error(`[bench] ${contender} ${workload}: ${sample.value.toFixed(1)} ${unit}${usage}${machine}${sample.requests ? ` ${JSON.stringify(sample.requests)}` : ''}`);
}

async function main(): Promise<void> {
  const work = join(tmpdir(), `s3nbd-compare-${process.pid}`);
  mkdirSync(work, { recursive: true });
  const minio = await startMinio();
  setStorePid(minio.pid);
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
      const measure = async (fn: () => Promise<Sample>): Promise<Sample> => {
        if (!counting) return settled(fn);
        settle();
        await new Promise((r) => setTimeout(r, 11_000));
        const before = await requestCounts();
        const sample = await fn();
        await new Promise((r) => setTimeout(r, 11_000));
        const after = await requestCounts();
        const requests: Record<string, number> = {};
        for (const [api, n] of Object.entries(after)) if (n !== (before[api] ?? 0)) requests[api] = n - (before[api] ?? 0);
        return { ...sample, requests };
      };
      const order = rep % 2 === 1 ? contenders : [...contenders].reverse();
      for (const contender of order) {
        try {
          await runContender(contender, s3, rep, join(work, `${contender.name}-${rep}`), tree, treeBytes, measure);
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
      if (LOCAL && contenders.some((c) => c.name === 's3nbd')) {
        try {
          settle();
          await runLocal({ region: LOCAL_REGION, seconds: LOCAL_SECONDS, ramp: LOCAL_RAMP, s3nbdArgs: S3NBD_ARGS }, join(work, `local-${rep}`), rep % 2 === 1,
            (workload, name, sample) => record(workload, name, sample));
        } catch (err) {
          failures.push(`local path (run ${rep}): ${(err as Error).message.split('\n')[0]}`);
          console.error(`[bench] local path failed: ${(err as Error).message}`);
        }
      }
      // After every run, so that a later failure keeps what was measured.
      const file = join(REPO, 'bench/results/compare-latest.json');
      writeFileSync(file, `${JSON.stringify(resultsFile(rep, treeBytes, contenders), null, 2)}\n`);
      console.error(`[bench] wrote ${file} (${rep} of ${REPEAT} runs)`);
    }
  } finally {
    await minio.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

/** What bench/results/compare-latest.json holds: the results so far, the settings, and the tables report.ts reads. */
function resultsFile(rep: number, treeBytes: number, contenders: readonly Contender[]): object {
  const settings = {
    repeat: rep, dataMiB: DATA / MiB, randomSeconds: RANDOM_SECONDS, tree: { small: TREE_SMALL, large: TREE_LARGE, mib: Math.round(treeBytes / MiB) },
    memoryCacheMiB: MEMORY_CACHE / MiB, maxDirtyMiB: MAX_DIRTY / MiB, hotRegionMiB: HOT_REGION / MiB, rssHeadroomMiB: RSS_HEADROOM_MIB,
    local: LOCAL ? { regionMiB: LOCAL_REGION / MiB, deviceMiB: LOCAL_DEVICE / MiB, seconds: LOCAL_SECONDS, ramp: LOCAL_RAMP } : null,
  };
  return {
    date: new Date().toISOString(), settings, revision: REVISION, node: process.versions.node,
    units: WORKLOADS, limits: LIMITS, localUnits: Object.fromEntries(Object.entries(LOCAL_WORKLOADS).map(([w, l]) => [w, l.unit])),
    targets: TARGETS, peerLead: PEER_LEAD,
    contenders: contenders.map((c) => ({ name: c.name, settings: c.settings })), results, failures,
  };
}

async function runContender(c: Contender, s3: S3Target, rep: number, dir: string, tree: string, treeBytes: number, measure: (fn: () => Promise<Sample>) => Promise<Sample>): Promise<void> {
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
  // s3nbd's CPU and peak RSS are read before it stops (its flush is durable).
  const untilDurable = async (running: Running, work: () => Promise<number>): Promise<{ seconds: number; usage: MachineUsage & Partial<Usage> }> => {
    const read = watchUsage(running.pid);
    const started = await work().catch(async (err: unknown) => {
      await running.stop().catch(() => undefined);
      throw err;
    });
    if (!c.flushIsDurable) await running.stop();
    const seconds = (performance.now() - started) / 1000;
    const usage = read();
    if (c.flushIsDurable) await running.stop();
    return { seconds, usage };
  };
  const written = await measure(async () => {
    const r = await c.start(s3, volume('data', 2 * DATA, 'write'));
    const { seconds, usage } = await untilDurable(r, async () => {
      const started = performance.now();
      await sequentialWrite(r.device, DATA);
      return started;
    });
    return { value: DATA / MiB / seconds, bytes: DATA, ...usage };
  });
  record('write+flush', c.name, written);

  // Restarted with empty local caches: cold, then warm, then random I/O on the same data.
  const cold = await c.start(s3, volume('data', 2 * DATA, 'read'));
  await stopAfter(cold, async () => {
    const readAll = gauged(cold, () => DATA, async () => DATA / MiB / await sequentialRead(cold.device, DATA));
    record('cold read', c.name, await measure(readAll));
    record('warm read', c.name, await settled(readAll));
    record('4K rand write hot', c.name, await settled(gaugedRate(cold, () => random4k(cold.device, 'randwrite', HOT_REGION, RANDOM_SECONDS))));
    // Untimed: what the hot run left dirty goes to S3 now, not during the next run.
    await flushDevice(cold.device);
    record('4K rand write', c.name, await settled(gaugedRate(cold, () => random4k(cold.device, 'randwrite', DATA, RANDOM_SECONDS))));
    record('4K rand read', c.name, await settled(gaugedRate(cold, () => random4k(cold.device, 'randread', DATA, RANDOM_SECONDS))));
  });

  // Room for the tree and ext4's own blocks even when BENCH_DATA_MIB is small.
  const ext4Size = Math.max(2 * DATA, Math.ceil((2 * treeBytes) / MiB) * MiB + 64 * MiB);
  // CPU per GiB of the tree copied (the ext4 metadata and the untimed mkfs are in the CPU time too).
  record('ext4 copy+sync', c.name, await measure(async () => {
    const fs = await c.start(s3, volume('ext4', ext4Size, 'copy'));
    const { seconds, usage } = await untilDurable(fs, () => copyTreeOntoExt4(fs.device, join(dir, 'ext4-copy'), tree));
    return { value: seconds, bytes: treeBytes, ...usage };
  }));
  // nbdcopy reads what is not a hole: about the tree (CPU per GiB of the tree, again).
  const restore = await c.start(s3, volume('ext4', ext4Size, 'restore'));
  record('restore', c.name, await stopAfter(restore, () => measure(gauged(restore, () => treeBytes, () => readWholeDevice(restore.device)))));

  // No data moves (0 bytes): the report shows its CPU seconds, not per GiB.
  const big = await c.start(s3, volume('big', BIG, 'mkfs'));
  record('mkfs.ext4 100G', c.name, await stopAfter(big, () => measure(gauged(big, () => 0, () => makeFileSystem(big.device, join(dir, 'big-mkfs'))))));
}

/** nbdkit memory (the local NBD path) and raw PutObject / GetObject (the S3 path). */
async function runLimits(rep: number, raw: (args: string[]) => Promise<string>, source: string, measure: (fn: () => Promise<Sample>) => Promise<Sample>): Promise<void> {
  // A socket of its own per run.
  const nbdkit = await startNbdkitMemory(join(tmpdir(), `s3nbd-compare-nbdkit-${process.pid}-${rep}.sock`), 2 * DATA);
  try {
    const { device } = nbdkit;
    record('write+flush', 'nbdkit memory', await settled(gauged(nbdkit, () => DATA, async () => DATA / MiB / await sequentialWrite(device, DATA))));
    record('warm read', 'nbdkit memory', await settled(gauged(nbdkit, () => DATA, async () => DATA / MiB / await sequentialRead(device, DATA))));
    record('4K rand write hot', 'nbdkit memory', await settled(gaugedRate(nbdkit, () => random4k(device, 'randwrite', HOT_REGION, RANDOM_SECONDS))));
    record('4K rand write', 'nbdkit memory', await settled(gaugedRate(nbdkit, () => random4k(device, 'randwrite', DATA, RANDOM_SECONDS))));
    record('4K rand read', 'nbdkit memory', await settled(gaugedRate(nbdkit, () => random4k(device, 'randread', DATA, RANDOM_SECONDS))));
  } finally {
    await nbdkit.stop();
  }
  const count = String(DATA / MiB);
  const prefix = `raw/run${rep}`;
  // s3-raw.ts prints its own CPU time and the machine's (from its first request to its last
  // response); MinIO's is read around the whole client process (the client's start and, for
  // put, its read of the file cost MinIO nothing).
  const rawSample = async (args: string[]): Promise<Sample> => {
    const store = watchMachine();
    const r = JSON.parse(await raw(args)) as { mibps: number; bytes: number; cpuSeconds: number; machineCpuSeconds: number; machineBusy: number };
    const { storeCpuSeconds } = store();
    return {
      value: r.mibps, bytes: r.bytes, cpuSeconds: r.cpuSeconds, machineCpuSeconds: r.machineCpuSeconds, machineBusy: r.machineBusy,
      ...(storeCpuSeconds === undefined ? {} : { storeCpuSeconds }),
    };
  };
  record('write+flush', 'raw S3', await measure(() => rawSample(['put', '--bucket', BUCKET, '--prefix', prefix, '--file', source, '--count', count])));
  record('cold read', 'raw S3', await measure(() => rawSample(['get', '--bucket', BUCKET, '--prefix', prefix, '--count', count])));
}

await main();
if (failures.length > 0) {
  console.error(`[bench] failures:\n${failures.join('\n')}`);
}
