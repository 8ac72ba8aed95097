// bench/random-writes: 4 KiB random writes over a region as large as --max-dirty (issue 19),
// under upload policies and extent sizes side by side in one run on one MinIO. Run it through
// bench/random-writes.sh, which installs what it needs and builds BENCH_BASE if set.
//
// Each variant, in each run (variants alternate order between runs): a fresh volume of 2 GiB;
// 1 GiB written sequentially and flushed; the gateway restarted with empty local caches; the
// 1 GiB read twice (as bench/compare does before its random writes: the memory cache then
// holds it); then fio's 4 KiB random writes at queue depth 16 over that 1 GiB for
// BENCH_RANDOM_SECONDS. Reported: IOPS, and from the gateway's /metrics over the random
// phase the bytes uploaded and fetched per byte written (the write amplification), its CPU
// seconds and peak RSS (/proc).
//
// Why the variants: the flusher (src/storage/cache/flusher.ts pump()) uploads every dirty
// extent at once, whatever its age, once dirty extents pass half of --max-dirty. With random
// writes spread evenly over R extents and D of them dirty, a write lands on a clean extent
// with probability (R - D) / R, and at the steady state each upload removes one dirty extent,
// so an upload carries about R / (R - D) writes. --max-dirty moves where D settles (half of
// it); a smaller --extent-size makes each upload carry less that did not change.
//
// BENCH_REGION_MIB=256 keeps the random writes in the first 256 MiB instead (a quarter of the
// default --max-dirty: bench/compare's "4K rand write hot", where nothing is uploaded during
// the run and the cost is the write path itself).
//
// Settings (environment): BENCH_REPEAT (default 3), BENCH_RANDOM_SECONDS (default 10),
// BENCH_REGION_MIB (default 1024, all that was written),
// BENCH_VARIANTS (indexes of the variants below to run, default all), BENCH_OUT (the results'
// name in bench/results, default random-writes-latest),
// BENCH_BASES ("name|main.js,...", set by random-writes.sh from BENCH_BASE: the default
// variant on other builds, without /metrics, which older ones lack).

import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { adminGet, parseMetrics } from '../test/helpers/admin.ts';
import { startMinio } from '../test/helpers/minio.ts';
import { freePort, REPO } from '../test/helpers/tools.ts';
import { startS3nbd } from './compare/contenders.ts';
import { watchUsage } from './compare/usage.ts';
import { MiB, random4k, sequentialRead, sequentialWrite } from './compare/workloads.ts';

const REPEAT = Number(process.env.BENCH_REPEAT ?? '3');
const SECONDS = Number(process.env.BENCH_RANDOM_SECONDS ?? '10');
const DATA = 1024 * MiB;
const REGION = Number(process.env.BENCH_REGION_MIB ?? '1024') * MiB;
const MEMORY_CACHE = '1280M';
const BUCKET = 'bench-random';

interface Variant { name: string; extentSize: string; maxDirty: string; main?: string; metrics: boolean }

const VARIANTS: Variant[] = [
  { name: '1M extents, --max-dirty 1G (default)', extentSize: '1M', maxDirty: '1G', metrics: true },
  { name: '1M extents, --max-dirty 1536M', extentSize: '1M', maxDirty: '1536M', metrics: true },
  { name: '1M extents, --max-dirty 2G', extentSize: '1M', maxDirty: '2G', metrics: true },
  { name: '256K extents, --max-dirty 1G', extentSize: '256K', maxDirty: '1G', metrics: true },
  { name: '64K extents, --max-dirty 1G', extentSize: '64K', maxDirty: '1G', metrics: true },
];
// BENCH_VARIANTS: indexes into the list above to run (default all), e.g. "0" for the default only.
const only = process.env.BENCH_VARIANTS?.split(',').map(Number);
if (only) VARIANTS.splice(0, VARIANTS.length, ...VARIANTS.filter((_, i) => only.includes(i)));
for (const base of (process.env.BENCH_BASES ?? '').split(',').filter(Boolean)) {
  const [name, main] = base.split('|') as [string, string];
  VARIANTS.push({ name: `${name}, 1M extents, --max-dirty 1G`, extentSize: '1M', maxDirty: '1G', main, metrics: false });
}

interface Sample { iops: number; cpuSeconds: number; peakRssMiB: number; uploadedPerWritten?: number; fetchedPerWritten?: number }
const samples = new Map<string, Sample[]>(VARIANTS.map((v) => [v.name, []]));

/** Sum of every sample of `name` (all volumes). */
function total(metrics: Map<string, number>, name: string): number {
  let sum = 0;
  for (const [key, value] of metrics) if (key === name || key.startsWith(`${name}{`)) sum += value;
  return sum;
}

async function runVariant(v: Variant, rep: number, s3: { endpoint: string; env: NodeJS.ProcessEnv }, work: string): Promise<Sample> {
  const dir = join(work, `${rep}-${VARIANTS.indexOf(v)}`);
  mkdirSync(dir, { recursive: true });
  const adminPort = await freePort();
  const args = (cache: string): string[] => ['--store', `s3://${BUCKET}/r${rep}-v${VARIANTS.indexOf(v)}`, '--s3-endpoint', s3.endpoint, '--size', String(2 * DATA),
    '--extent-size', v.extentSize, '--memory-cache', MEMORY_CACHE, '--max-dirty', v.maxDirty, '--cache-dir', join(dir, cache),
    ...(v.metrics ? ['--admin-listen', `127.0.0.1:${adminPort}`] : [])];
  const writer = await startS3nbd(args('cache-write'), dir, s3.env, v.main);
  await sequentialWrite(writer.device, DATA);
  await writer.stop();

  const gw = await startS3nbd(args('cache-random'), dir, s3.env, v.main);
  try {
    await sequentialRead(gw.device, DATA);
    await sequentialRead(gw.device, DATA);
    const metrics = async (): Promise<Map<string, number>> => parseMetrics((await adminGet(`http://127.0.0.1:${adminPort}/`, '/metrics')).text);
    const before = v.metrics ? await metrics() : undefined;
    const usage = watchUsage(gw.pid!);
    const rate = await random4k(gw.device, 'randwrite', REGION, SECONDS);
    const used = usage();
    const sample: Sample = { iops: rate.value, cpuSeconds: used.cpuSeconds, peakRssMiB: used.peakRssMiB };
    if (before) {
      const after = await metrics();
      const delta = (name: string): number => total(after, name) - total(before, name);
      const written = delta('s3nbd_nbd_written_bytes_total');
      sample.uploadedPerWritten = delta('s3nbd_uploaded_bytes_total') / written;
      sample.fetchedPerWritten = delta('s3nbd_fetched_bytes_total') / written;
    }
    return sample;
  } finally {
    await gw.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

async function main(): Promise<void> {
  const work = join(tmpdir(), `s3nbd-random-writes-${process.pid}`);
  const minio = await startMinio();
  try {
    await minio.createBucket(BUCKET);
    const s3 = { endpoint: minio.endpoint, env: { AWS_ACCESS_KEY_ID: minio.accessKeyId, AWS_SECRET_ACCESS_KEY: minio.secretAccessKey, AWS_REGION: 'us-east-1' } };
    for (let rep = 0; rep < REPEAT; rep++) {
      const order = rep % 2 === 0 ? VARIANTS : [...VARIANTS].reverse();
      for (const v of order) {
        const s = await runVariant(v, rep, s3, work);
        samples.get(v.name)!.push(s);
        console.error(`[bench] run ${rep + 1}/${REPEAT} ${v.name}: ${s.iops.toFixed(0)} IOPS, uploaded/written ${s.uploadedPerWritten?.toFixed(1) ?? '-'}, CPU ${s.cpuSeconds.toFixed(1)} s, peak RSS ${s.peakRssMiB.toFixed(0)} MiB`);
      }
    }
  } finally {
    await minio.stop();
    rmSync(work, { recursive: true, force: true });
  }
  report();
}

function report(): void {
  const base = median(samples.get(VARIANTS[0]!.name)!.map((s) => s.iops));
  const fmt = (values: (number | undefined)[], digits: number): string => {
    const known = values.filter((x) => x !== undefined);
    return known.length === values.length ? median(known).toFixed(digits) : '—';
  };
  const rows = VARIANTS.map((v) => {
    const s = samples.get(v.name)!;
    const iops = median(s.map((x) => x.iops));
    return `| ${v.name} | ${iops.toFixed(0)} | ${(iops / base).toFixed(2)} | ${fmt(s.map((x) => x.uploadedPerWritten), 1)} | ${fmt(s.map((x) => x.fetchedPerWritten), 1)} | ${fmt(s.map((x) => x.cpuSeconds), 1)} | ${fmt(s.map((x) => x.peakRssMiB), 0)} | ${s.map((x) => x.iops.toFixed(0)).join(', ')} |`;
  });
  const commit = process.env.BENCH_COMMIT ?? '';
  const region = REGION === DATA ? '1 GiB already written and read twice' : `the first ${REGION / MiB} MiB of 1 GiB already written and read twice`;
  const md = `# 4 KiB random writes over ${REGION === DATA ? 'a region as large as --max-dirty' : `${REGION / MiB} MiB`}

Generated by \`bash bench/random-writes.sh\`${commit ? ` at ${commit}` : ''} on ${new Date().toISOString().slice(0, 10)}: medians of ${REPEAT} runs, variants
alternating order; fio, 4 KiB random writes, queue depth 16, ${SECONDS} s over ${region}
(\`--memory-cache ${MEMORY_CACHE}\`), one local MinIO. "uploaded / written": bytes uploaded per
byte the client wrote during the run (write amplification); "fetched / written" likewise for
GETs. CPU: the gateway's user + system seconds over the run; peak RSS: its VmHWM over the run.
See the top of bench/random-writes.ts for why the variants.

| variant | IOPS | vs default | uploaded / written | fetched / written | CPU s | peak RSS MiB | runs (IOPS) |
|---|---:|---:|---:|---:|---:|---:|---|
${rows.join('\n')}
`;
  const out = join(REPO, 'bench/results', process.env.BENCH_OUT ?? 'random-writes-latest');
  writeFileSync(`${out}.md`, md);
  writeFileSync(`${out}.json`, `${JSON.stringify({ commit, seconds: SECONDS, repeat: REPEAT, regionMiB: REGION / MiB, samples: Object.fromEntries(samples) }, null, 2)}\n`);
  console.log(md);
}

await main();
