// The crash loop for hours (test/helpers/crash-loop.ts): alternating chunks of kills against
// the directory store and a private MinIO, each chunk on a fresh volume, until the duration
// is up. Prints one summary line per chunk and the totals; exits 1 on any violation.
//
//   node bench/soak/crash-loop.ts [--duration SECONDS] [--seed N] [--stores dir,minio] [--chunk KILLS] [--pause MS]

import { parseArgs } from 'node:util';
import { type CrashLoopResult, runCrashLoop } from '../../test/helpers/crash-loop.ts';
import { type S3TestServer, startMinio } from '../../test/helpers/minio.ts';

// A signal ends the soak through process.exit, whose 'exit' handlers kill the gateway and MinIO.
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => process.exit(130));

const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '3600' },
    seed: { type: 'string' },
    stores: { type: 'string', default: 'dir,minio' },
    chunk: { type: 'string', default: '40' },
    pause: { type: 'string', default: '500' },
  },
});
const durationMs = Number(values.duration) * 1000;
const seed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(values.seed);
const stores = values.stores.split(',');
const started = Date.now();
const stamp = (): string => `[${new Date().toISOString()} +${Math.round((Date.now() - started) / 1000)}s]`;
console.log(`${stamp()} crash-loop soak: seed ${seed}, ${values.duration} s, stores ${stores.join(',')}, ${values.chunk} kills per chunk`);

const totals = { kills: 0, killsDuringStart: 0, killsDuringDrain: 0, sectorsChecked: 0, writesAcked: 0, readBacks: 0, flushChecks: 0, violations: 0, peakRssBytes: 0, chunks: 0 };
let s3: S3TestServer | undefined;
let failed = false;
try {
  if (stores.includes('minio')) s3 = await startMinio();
  for (let chunk = 0; Date.now() - started < durationMs; chunk++) {
    const store = stores[chunk % stores.length]!;
    const chunkSeed = seed + chunk;
    const left = durationMs - (Date.now() - started);
    const r: CrashLoopResult = await runCrashLoop({
      seed: chunkSeed, kills: Number(values.chunk), durationMs: left, pauseMs: Number(values.pause),
      ...(store === 'minio' ? { s3: s3! } : {}),
      log: (line) => { if (line.includes('violation') && !line.includes('violations so far 0')) console.log(`${stamp()} ${store} ${line}`); },
    });
    totals.chunks++;
    totals.kills += r.kills;
    totals.killsDuringStart += r.killsDuringStart;
    totals.killsDuringDrain += r.killsDuringDrain;
    totals.sectorsChecked += r.sectorsChecked;
    totals.writesAcked += r.writesAcked;
    totals.readBacks += r.readBacks;
    totals.flushChecks += r.flushChecks;
    totals.violations += r.violations.length;
    totals.peakRssBytes = Math.max(totals.peakRssBytes, r.peakRssBytes);
    console.log(`${stamp()} chunk ${chunk} (${store}, seed ${chunkSeed}): ${r.kills} kills (${r.killsDuringStart} during start, ${r.killsDuringDrain} during a drain), `
      + `${r.sectorsChecked} sectors checked, ${r.writesAcked} writes acknowledged, ${r.readBacks} read-backs, `
      + `${r.flushChecks} store checks against a FLUSH, ${r.violations.length} violations, gateway peak RSS ${(r.peakRssBytes / 2 ** 20).toFixed(0)} MiB`);
    for (const v of r.violations) console.log(`  VIOLATION ${v}`);
    if (r.violations.length > 0) failed = true;
  }
} catch (err) {
  console.log(`${stamp()} ERROR ${err instanceof Error ? err.stack : String(err)}`);
  failed = true;
} finally {
  await s3?.stop();
}
console.log(`${stamp()} TOTAL crash loop: ${totals.kills} kills (${totals.killsDuringStart} during start, ${totals.killsDuringDrain} during a drain) in ${totals.chunks} chunks, `
  + `${totals.sectorsChecked} sectors checked, ${totals.writesAcked} writes acknowledged, ${totals.readBacks} read-backs, `
  + `${totals.flushChecks} store checks against a FLUSH, ${totals.violations} violations, gateway peak RSS ${(totals.peakRssBytes / 2 ** 20).toFixed(0)} MiB, `
  + `${Math.round((Date.now() - started) / 1000)} s`);
process.exitCode = failed ? 1 : 0;
