// Turns bench/results/compare-latest.json (written by main.ts) into docs/benchmarks.md: the
// targets of issue 19 met or missed, the medians side by side with s3nbd's CPU seconds per
// GiB and peak RSS, the ratios of s3nbd to the best peer and to the limits, the local NBD
// path, the S3 requests per phase, the machine and the versions. Two more sections come from
// files written elsewhere, when present: the kernel-client figures
// (bench/results/kernel-client-latest.json, from bench/kernel-client.ts) and the hand-written
// bench/results/compare-analysis.md (what limits the missed targets), included verbatim.
// The chart (docs/benchmarks.png) is drawn by chart.py from the same results file.
//
//   node bench/compare/report.ts [RESULTS.json]

import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { REPO } from '../../test/helpers/tools.ts';

interface Sample {
  value: number; requests?: Record<string, number>; bytes?: number; cpuSeconds?: number; peakRssMiB?: number;
  /** The whole machine's busy CPU seconds in the phase and their share of all cores (results since 2026-12-07). */
  machineCpuSeconds?: number; machineBusy?: number; storeCpuSeconds?: number;
}
interface Run {
  date: string;
  /** The s3nbd commit measured, and the Node.js that ran it. */
  revision: string;
  node: string;
  settings: {
    repeat: number; dataMiB: number; randomSeconds: number; tree: { small: number; large: number; mib: number };
    // Since issue 19 (older results files have none of these).
    memoryCacheMiB?: number; maxDirtyMiB?: number; hotRegionMiB?: number; rssHeadroomMiB?: number;
    local?: { regionMiB: number; deviceMiB: number; seconds: number; ramp: number } | null;
  };
  contenders: { name: string; settings: string }[];
  /** Workload → unit, and workload → the limit it is compared with (workload-table.ts). */
  units: Record<string, string>;
  limits: Record<string, string>;
  localUnits?: Record<string, string>;
  targets?: { workload: string; limit: string; ratio?: number }[];
  peerLead?: Record<string, number>;
  results: Record<string, Record<string, Sample[]>>;
  failures: string[];
}

const GiB = 2 ** 30;


export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

const fmt = (v: number): string => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));
/** The first line a shell command prints (on stdout or stderr). */
const version = (command: string): string => {
  try {
    const out = execFileSync('bash', ['-c', `${command} 2>&1`], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    return out.split('\n').map((l) => l.trim()).find((l) => l !== '') ?? 'unknown';
  } catch {
    return 'not installed';
  }
};

function report(run: Run): string {
  const { units: UNITS, limits: LIMITS } = run;
  const localUnits = run.localUnits ?? {};
  const allUnits: Record<string, string> = { ...UNITS, ...localUnits };
  const higherIsBetter = (workload: string): boolean => allUnits[workload] !== 's';
  const peers = run.contenders.map((c) => c.name).filter((n) => n !== 's3nbd');
  const columns = ['s3nbd', ...peers, 'limit'];
  const samplesOf = (workload: string, name: string): Sample[] => run.results[workload]?.[name] ?? [];
  const medianOf = (samples: readonly Sample[], pick: (s: Sample) => number | undefined): number | undefined => {
    const values = samples.map(pick).filter((v): v is number => v !== undefined);
    return values.length ? median(values) : undefined;
  };
  const med = (workload: string, name: string): number | undefined => medianOf(samplesOf(workload, name), (x) => x.value);
  /** Median CPU seconds per GiB moved, or CPU seconds where the phase moves no data (mkfs). */
  const cpu = (workload: string, name: string): string => {
    const samples = samplesOf(workload, name).filter((x) => x.cpuSeconds !== undefined);
    if (!samples.length) return '—';
    if (samples.every((x) => !x.bytes)) return `${fmt(medianOf(samples, (x) => x.cpuSeconds)!)} s`;
    return fmt(medianOf(samples, (x) => (x.bytes ? x.cpuSeconds! / (x.bytes / GiB) : undefined))!);
  };
  /** The highest peak RSS of the runs (the target is on every one), MiB. */
  const peakRss = (workload: string, name: string): number | undefined => {
    const values = samplesOf(workload, name).map((x) => x.peakRssMiB).filter((v): v is number => v !== undefined);
    return values.length ? Math.max(...values) : undefined;
  };
  const memoryCache = run.settings.memoryCacheMiB;
  const headroom = run.settings.rssHeadroomMiB ?? 150;
  const localRegion = run.settings.local?.regionMiB ?? 0;
  /** Peak RSS allowed: --memory-cache + 150 MiB, plus, on the local path, the memory: store's data. */
  const rssLimit = (workload: string): number | undefined =>
    memoryCache === undefined ? undefined : memoryCache + headroom + (workload in localUnits ? localRegion : 0);
  const rssCell = (workload: string): string => {
    const peak = peakRss(workload, 's3nbd');
    const limit = rssLimit(workload);
    if (peak === undefined) return '—';
    return limit === undefined ? peak.toFixed(0) : `${peak.toFixed(0)} ${peak <= limit ? '✓' : `✗ (> ${limit.toFixed(0)})`}`;
  };
  const metMissed = (ok: boolean | undefined): string => (ok === undefined ? '—' : ok ? '**met**' : '**missed**');

  // Targets of issue 19.
  const targets: string[] = [
    '| target | s3nbd | limit | s3nbd / limit | target | | s3nbd CPU-s/GiB | limit CPU-s/GiB | s3nbd peak RSS MiB |',
    '|---|---:|---:|---:|---:|---|---:|---:|---:|',
  ];
  for (const t of run.targets ?? []) {
    const ours = med(t.workload, 's3nbd');
    const limit = med(t.workload, t.limit);
    const ratio = ours !== undefined && limit !== undefined ? ours / limit : undefined;
    const unit = allUnits[t.workload] ?? '';
    targets.push(`| ${t.workload} (${unit}) | ${ours === undefined ? '—' : fmt(ours)} | ${limit === undefined ? '—' : `${fmt(limit)} (${t.limit})`} | ${ratio === undefined ? '—' : ratio.toFixed(2)} | ${t.ratio === undefined ? 'measured, explained' : `≥ ${t.ratio}`} | ${t.ratio === undefined ? '—' : metMissed(ratio === undefined ? undefined : ratio >= t.ratio)} | ${cpu(t.workload, 's3nbd')} | ${cpu(t.workload, t.limit)} | ${rssCell(t.workload)} |`);
  }
  const everyWorkload = Object.keys(allUnits).filter((w) => peakRss(w, 's3nbd') !== undefined);
  const overRss = everyWorkload.filter((w) => peakRss(w, 's3nbd')! > rssLimit(w)!);
  if (memoryCache !== undefined) {
    // The workload closest to (or furthest over) its allowance.
    const tightest = [...everyWorkload].sort((a, b) => (peakRss(b, 's3nbd')! - rssLimit(b)!) - (peakRss(a, 's3nbd')! - rssLimit(a)!))[0];
    const closest = tightest === undefined ? '—' : `${peakRss(tightest, 's3nbd')!.toFixed(0)} of ${rssLimit(tightest)!.toFixed(0)} MiB (${tightest})`;
    targets.push(`| peak RSS ≤ --memory-cache (${memoryCache} MiB) + ${headroom} MiB, every workload | ${closest} | | | | ${everyWorkload.length ? metMissed(overRss.length === 0) : '—'}${overRss.length ? ` (over in: ${overRss.join(', ')})` : ''} | | | |`);
  }
  const lead = run.peerLead ?? {};
  const leadOk: boolean[] = [];
  const peerRatio = (workload: string): number | undefined => {
    const better = higherIsBetter(workload);
    const ours = med(workload, 's3nbd');
    const peerValues = peers.map((p) => med(workload, p)).filter((v): v is number => v !== undefined);
    if (ours === undefined || !peerValues.length) return undefined;
    const best = better ? Math.max(...peerValues) : Math.min(...peerValues);
    return better ? ours / best : best / ours;
  };
  for (const workload of Object.keys(UNITS)) {
    const r = peerRatio(workload);
    if (r !== undefined) leadOk.push(r >= (lead[workload] ?? 1));
  }
  if (peers.length) {
    targets.push(`| s3nbd ahead of every peer on every workload, ≥ 1.5× on ${Object.keys(lead).join(', ')} | see the next table | | | | ${leadOk.length ? metMissed(leadOk.every(Boolean)) : '—'}${leadOk.length ? ` (${leadOk.filter(Boolean).length} of ${leadOk.length})` : ''} | | | |`);
  }

  const lines: string[] = [];
  lines.push(`| workload | unit | ${columns.join(' | ')} | s3nbd CPU-s/GiB | s3nbd peak RSS MiB | s3nbd vs best peer | lead target | s3nbd / limit |`);
  lines.push(`|---|---|${columns.map(() => '---:').join('|')}|---:|---:|---:|---|---:|`);
  for (const workload of Object.keys(UNITS)) {
    const better = higherIsBetter(workload);
    const limitName = LIMITS[workload];
    const ours = med(workload, 's3nbd');
    const limit = limitName ? med(workload, limitName) : undefined;
    const cells = [ours, ...peers.map((p) => med(workload, p))].map((v) => (v === undefined ? '—' : fmt(v)));
    const r = peerRatio(workload);
    const vsBest = r === undefined ? '—' : `${r.toFixed(2)}×`;
    const need = lead[workload] ?? 1;
    const leadCell = r === undefined ? (need > 1 ? `≥ ${need}×` : '> 1×') : `${need > 1 ? `**≥ ${need}×**` : '> 1×'} ${r >= need ? 'met' : 'missed'}`;
    const vsLimit = ours !== undefined && limit !== undefined ? (better ? ours / limit : limit / ours).toFixed(2) : '—';
    lines.push(`| ${workload} | ${UNITS[workload]}${better ? ' ↑' : ' ↓'} | ${cells.join(' | ')} | ${limit === undefined ? '—' : `${fmt(limit)} (${limitName})`} | ${cpu(workload, 's3nbd')} | ${rssCell(workload)} | ${vsBest} | ${leadCell} | ${vsLimit} |`);
  }

  // What the machine's CPU allows: every process's CPU per GiB on each side of a target, split
  // into the server (the gateway, or the raw client), MinIO and the rest (the NBD client, the
  // kernel's share nobody is charged for, anything else running).
  const perGiB = (workload: string, name: string, pick: (x: Sample) => number | undefined): number | undefined =>
    medianOf(samplesOf(workload, name), (x) => { const v = pick(x); return v !== undefined && x.bytes ? v / (x.bytes / GiB) : undefined; });
  const split = (workload: string, name: string): { total: number; cell: string } | undefined => {
    const total = perGiB(workload, name, (x) => x.machineCpuSeconds);
    if (total === undefined) return undefined;
    const server = perGiB(workload, name, (x) => x.cpuSeconds);
    const store = perGiB(workload, name, (x) => x.storeCpuSeconds);
    const rest = total - (server ?? 0) - (store ?? 0);
    const busy = medianOf(samplesOf(workload, name), (x) => x.machineBusy);
    const part = (v: number | undefined): string => (v === undefined ? '—' : fmt(v));
    return { total, cell: `${part(server)} | ${part(store)} | ${fmt(rest)} | **${fmt(total)}** (${busy === undefined ? '—' : `${(100 * busy).toFixed(0)}%`})` };
  };
  const machine: string[] = [];
  for (const t of run.targets ?? []) {
    const [ours, theirs] = [split(t.workload, 's3nbd'), split(t.workload, t.limit)];
    if (!ours || !theirs) continue;
    const measured = (med(t.workload, 's3nbd') ?? NaN) / (med(t.workload, t.limit) ?? NaN);
    machine.push(`| ${t.workload} | ${ours.cell} | ${theirs.cell} | ${(theirs.total / ours.total).toFixed(2)} | ${Number.isFinite(measured) ? measured.toFixed(2) : '—'} |`);
  }
  if (machine.length) {
    machine.unshift(
      '| target | s3nbd | MinIO | rest | machine (busy) | limit\'s server | MinIO | rest | machine (busy) | limit / s3nbd, machine CPU per GiB | s3nbd / limit, measured |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    );
  }

  const local: string[] = [];
  if (Object.keys(localUnits).some((w) => run.results[w])) {
    local.push('| workload | unit | s3nbd (memory:) | nbdkit memory | s3nbd / nbdkit | target | s3nbd CPU-s/GiB | s3nbd peak RSS MiB |');
    local.push('|---|---|---:|---:|---:|---|---:|---:|');
    for (const [workload, unit] of Object.entries(localUnits)) {
      const ours = med(workload, 's3nbd');
      const theirs = med(workload, 'nbdkit memory');
      const ratio = ours !== undefined && theirs !== undefined ? ours / theirs : undefined;
      local.push(`| ${workload.replace(/^local /, '')} | ${unit} ↑ | ${ours === undefined ? '—' : fmt(ours)} | ${theirs === undefined ? '—' : fmt(theirs)} | ${ratio === undefined ? '—' : ratio.toFixed(2)} | ≥ 0.9 ${ratio === undefined ? '' : ratio >= 0.9 ? 'met' : 'missed'} | ${cpu(workload, 's3nbd')} | ${rssCell(workload)} |`);
    }
  }

  const requests: string[] = ['| workload | ' + run.contenders.map((c) => c.name).join(' | ') + ' | raw S3 |', `|---|${run.contenders.map(() => '---').join('|')}|---|`];
  for (const workload of Object.keys(UNITS)) {
    const cells = [...run.contenders.map((c) => c.name), 'raw S3'].map((name) => {
      const counted = run.results[workload]?.[name]?.find((x) => x.requests)?.requests;
      if (!counted) return '—';
      return Object.entries(counted).sort((a, b) => b[1] - a[1]).map(([api, n]) => `${api} ${n}`).join(', ') || 'none';
    });
    if (cells.some((c) => c !== '—')) requests.push(`| ${workload} | ${cells.join(' | ')} |`);
  }

  const s = run.settings;
  return `# Benchmarks: s3nbd against its peers and the limits

Generated by \`bash bench/compare.sh\` (which installs what it needs, runs every contender
side by side against one MinIO on 127.0.0.1, and writes this page and the chart). Medians of
${s.repeat} runs; contenders alternate order between runs. ↑: higher is better, ↓: lower is
better. "s3nbd vs best peer" above 1× means s3nbd leads. The limits are \`nbdkit memory\`
(the local NBD path, no storage) and raw PutObject / GetObject of the same 1 MiB objects
with 16 in flight (the S3 path; \`bench/s3-raw.ts\`), sent by the leanest client we have:
the requests s3nbd itself sends (\`src/storage/objects/s3/s3-direct.ts\` over \`src/storage/objects/s3/http1.ts\`,
without the AWS SDK or node:http; to 127.0.0.1 a PUT carries a CRC-32 instead of a signed
payload, for the raw client and the gateway alike), so the ratio is what the gateway adds to
the requests themselves. Peers send theirs through their own clients (boto3, libcurl, Rust).

${run.failures.length ? `**Failures in this run:**\n\n${run.failures.map((f) => `- ${f}`).join('\n')}\n` : ''}
## Targets (issue 19)

Each target is a ratio of medians from this one run. CPU-s/GiB: user + system CPU seconds
of the gateway's process (or of the raw S3 client) during the phase, per GiB it moved. Peak
RSS: the gateway's VmHWM in the phase (reset before it), the highest of the runs; ✓ where it
is at most \`--memory-cache\` (${s.memoryCacheMiB ?? '?'} MiB) + ${headroom} MiB, plus, on the local path, the
${localRegion} MiB the \`memory:\` store itself holds.

${targets.join('\n')}
${machine.length ? `
### What the machine's CPU allows

CPU seconds per GiB moved on each side of a target, for the whole machine (\`/proc/stat\`
around each phase, with the share of its ${cpus().length} cores that was busy) and split into the server
(s3nbd's gateway; the raw S3 client; nbdkit is not measured on its own), MinIO, and the rest
(the NBD client, kernel work charged to no process, anything else running). Where both sides
keep the machine busy, their rates go as the inverse of the machine CPU each needs per byte,
so the gap to the limit is the CPU the s3nbd path spends beyond the limit's, and the columns
say where it goes. (The s3nbd write+flush phase includes its flush; the raw client's phases,
its requests only.)

${machine.join('\n')}
` : ''}
## s3nbd and its peers on S3

![chart](benchmarks.png)

${lines.join('\n')}

"lead target": s3nbd is to be ahead of every peer everywhere, and by at least 1.5× (bold)
where that is the design's strength. s3nbd's CPU and RSS for mkfs are its CPU seconds (no
data moves), for ext4 copy+sync and restore per GiB of the tree.

## The local NBD path

${local.length ? `s3nbd with \`--store memory:\` (no S3, no disk; the same \`--memory-cache\`) against \`nbdkit memory\`,
the workloads of \`bench/protocol.sh\`: ${s.local?.deviceMiB ?? 4096} MiB devices, a ${localRegion} MiB region written once
(untimed) before the runs, fio's nbd engine, numjobs 1, queue depth 16, ${s.local?.seconds ?? '?'} s runs after
${s.local?.ramp ?? '?'} s of ramp, the two servers alternating. CPU-s/GiB counts the ramp's bytes too.

${local.join('\n')}` : '_Not measured in this run (BENCH_LOCAL=0, or s3nbd not among the contenders)._'}

## The kernel client

<!-- From bench/results/kernel-client-latest.json (bench/kernel-client.ts), when present. -->
${kernelClient()}

## What limits the missed targets

<!-- Hand-written: bench/results/compare-analysis.md, included verbatim when present. -->
${analysis()}

## Workloads

- **write+flush**: ${s.dataMiB} MiB of sequential 1 MiB writes (fio, queue depth 16) and
  its fsync/FLUSH, timed until the data is in S3: for s3backer, whose fsync returns before
  its uploads (bench/peers/README.md), until its clean stop (unmount) returns.
- **cold read**: the contender restarted with empty local caches; ${s.dataMiB} MiB read
  sequentially, 1 MiB requests, queue depth 16. **warm read**: the same again (s3nbd's
  \`--memory-cache\` of ${s.memoryCacheMiB ?? '?'} MiB holds it).
- **4K rand write hot**: fio, 4 KiB random writes, queue depth 16, ${s.randomSeconds} s over the
  first ${s.hotRegionMiB ?? '?'} MiB of that data (a quarter of s3nbd's \`--max-dirty\` of ${s.maxDirtyMiB ?? '?'} MiB, or the
  data if smaller). s3nbd's flusher uploads every dirty extent at once when the dirty extents
  pass half of \`--max-dirty\`; random writes dirty every 1 MiB extent of their region, so
  the dirty set is the region, and stays under that threshold. (Its journal has a bound of
  its own, \`--max-dirty\` plus two segments of records, that a long enough fast run reaches
  too.) Then one untimed 4 KiB write and FLUSH, so that the next run does not upload this
  one's data.
- **4K rand write / read**: fio, 4 KiB, queue depth 16, ${s.randomSeconds} s over the first
  ${s.dataMiB} MiB (already written; for the write, a region as large as \`--max-dirty\` by default).
- **ext4 copy+sync**: a fresh volume, mkfs.ext4 (not timed), mount, then timed: \`cp -a\` of
  a tree of ${s.tree.small} files of 1–16 KiB in 40 directories and ${s.tree.large} files of
  32 MiB (${s.tree.mib} MiB), \`sync\` and umount (for s3backer, also its clean stop, so
  that the data is in S3 for every contender).
- **restore**: that ext4 volume read whole through a restarted contender with empty caches
  (\`nbdcopy URI null:\`, which skips holes the server reports, or \`dd\` for a block device).
- **mkfs.ext4 100G**: a fresh 100 GiB volume; \`mkfs.ext4\` with its default whole-device discard.

Every timed phase starts after a \`sync\`, so that none pays for the page-cache writeback of
what ran before it (the kernel writes dirty pages back about 30 s later, which used to land
on the first contender of each run). Before the first run, MinIO is warmed up with one
unrecorded PUT and GET pass of the raw client over the data, so that the first contender does
not find it freshly started while every later one finds it warm.

NBD contenders are driven by fio's nbd engine and nbdcopy; the file-system workloads reach
them through \`nbdfuse\` and a loop device. s3backer is a FUSE file behind a loop device
(\`--direct-io=on\`), driven by fio's libaio engine with O_DIRECT.

## S3 requests per phase (first run, MinIO's own counters)

The ext4 row includes the untimed mkfs of its volume.

${requests.join('\n')}

## Contenders and settings

${run.contenders.map((c) => `- **${c.name}**: ${c.settings}`).join('\n')}
- **limits**: \`nbdkit memory\`; raw S3 = \`bench/s3-raw.ts --client direct\` (\`src/storage/objects/s3/s3-direct.ts\` over \`src/storage/objects/s3/http1.ts\`, the client s3nbd uses for GETs and PUTs against an explicit endpoint; \`--client sdk\` measures @aws-sdk/client-s3 instead, as \`bench/s3.sh\` does).

## Machine and versions

- measured: ${run.date}
- ${cpus().length} × ${cpus()[0]?.model ?? 'unknown CPU'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB; everything (MinIO, contenders, clients) on this one machine
- kernel: ${version('uname -r')}
- s3nbd: ${run.revision} on Node ${run.node}
- s3backer: ${version('s3backer --version 2>&1 | head -1')}
- nbdkit: ${version('nbdkit --version')}
- ZeroFS: ${version('"$HOME"/.cache/s3nbd/zerofs-*/bin/zerofs --version')}
- MinIO: ${version('"$HOME"/.cache/s3nbd/minio-*/minio --version | head -1')}
- fio: ${version('fio --version')}, libnbd: ${version('nbdcopy --version')}

## Rerun

\`\`\`sh
bash bench/compare.sh                                   # everything, 3 runs (about an hour)
BENCH_REPEAT=1 BENCH_DATA_MIB=256 bash bench/compare.sh # a quick look
BENCH_ONLY=s3nbd,s3backer bash bench/compare.sh         # some contenders (the limits always run)
\`\`\`

The raw samples are in \`bench/results/compare-latest.json\`.
`;
}

/** The kernel-client table, from whatever shape of kernel-client-latest.json it finds: medians of each contender. */
function kernelClient(): string {
  const file = join(REPO, 'bench/results/kernel-client-latest.json');
  if (!existsSync(file)) return '_Not measured yet: no bench/results/kernel-client-latest.json._';
  try {
    const data = JSON.parse(readFileSync(file, 'utf8')) as {
      date?: string; contenders?: unknown; units?: Record<string, string>; results?: Record<string, Record<string, unknown>>;
      /** bench/kernel-client.ts's shape: contender → workload → median MiB/s. */
      medians?: Record<string, Record<string, number>>;
      settings?: { repeat?: number; dataMiB?: number; data4kMiB?: number };
    };
    const results: Record<string, Record<string, unknown>> = data.results ?? {};
    for (const [name, byWorkload] of Object.entries(data.medians ?? {})) {
      for (const [workload, v] of Object.entries(byWorkload)) (results[workload] ??= {})[name] = v;
    }
    const names = Array.isArray(data.contenders)
      ? data.contenders.map((c) => (typeof c === 'string' ? c : String((c as { name?: unknown }).name)))
      : [...new Set(Object.values(results).flatMap((r) => Object.keys(r)))];
    const value = (v: unknown): number | undefined => {
      const values = (Array.isArray(v) ? v : [v])
        .map((x) => (typeof x === 'number' ? x : typeof (x as { value?: unknown })?.value === 'number' ? (x as { value: number }).value : undefined))
        .filter((x): x is number => x !== undefined);
      return values.length ? median(values) : undefined;
    };
    const [ours, theirs] = [names.find((n) => n.startsWith('s3nbd')), names.find((n) => n.includes('nbdkit'))];
    const rows = [`| workload | ${names.join(' | ')} |${ours && theirs ? ` ${ours} / ${theirs} |` : ''}`, `|---|${names.map(() => '---:').join('|')}|${ours && theirs ? '---:|' : ''}`];
    for (const [workload, byName] of Object.entries(results)) {
      const cells = names.map((n) => value(byName[n]));
      const a = ours ? value(byName[ours]) : undefined;
      const b = theirs ? value(byName[theirs]) : undefined;
      rows.push(`| ${workload}${data.units?.[workload] ? ` (${data.units[workload]})` : ''} | ${cells.map((v) => (v === undefined ? '—' : fmt(v))).join(' | ')} |${ours && theirs ? ` ${a !== undefined && b ? (a / b).toFixed(2) : '—'} |` : ''}`);
    }
    const s = data.settings;
    const how = s ? ` dd of ${s.dataMiB} MiB (bs=1M) and ${s.data4kMiB ?? s.dataMiB} MiB (bs=4k) from the guest's /dev/nbd0, MiB/s, ${s.repeat} boot(s) per server;` : '';
    return `Medians from bench/results/kernel-client-latest.json${data.date ? ` (${data.date})` : ''}:${how} the ratio is what counts (the VM runs under TCG). How it was measured: bench/results/kernel-client-latest.md.\n\n${rows.join('\n')}`;
  } catch (err) {
    return `_bench/results/kernel-client-latest.json could not be read: ${(err as Error).message}_`;
  }
}

/** The hand-written analysis of the missed targets, verbatim. */
function analysis(): string {
  const file = join(REPO, 'bench/results/compare-analysis.md');
  return existsSync(file) ? readFileSync(file, 'utf8').trim() : '_Not written yet: bench/results/compare-analysis.md._';
}

const file = process.argv[2] ?? join(REPO, 'bench/results/compare-latest.json');
const run = JSON.parse(readFileSync(file, 'utf8')) as Run;
writeFileSync(join(REPO, 'docs/benchmarks.md'), report(run));
console.error('[bench] wrote docs/benchmarks.md');
