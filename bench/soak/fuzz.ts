// The protocol fuzzer for hours (test/helpers/nbd-fuzz.ts) against a real gateway process:
// rounds of cases, each round with a fresh seed, the gateway's RSS sampled throughout, until
// the duration is up. Prints one line per round and the totals; exits 1 on any failure or if
// the RSS went over --max-rss.
//
//   node bench/soak/fuzz.ts [--duration SECONDS] [--seed N] [--store memory|dir] [--round CASES] [--workers N] [--max-rss MIB] [--hostile]

import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { spawnGateway } from '../../test/helpers/gateway-process.ts';
import { runFuzz } from '../../test/helpers/nbd-fuzz.ts';

// A signal ends the soak through process.exit, whose 'exit' handlers kill the gateway and MinIO.
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => process.exit(130));

const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '3600' },
    seed: { type: 'string' },
    store: { type: 'string', default: 'memory' },
    round: { type: 'string', default: '20000' },
    workers: { type: 'string', default: '4' },
    'max-rss': { type: 'string', default: '512' },
    pause: { type: 'string', default: '0' },
    hostile: { type: 'boolean', default: false },
  },
});
const durationMs = Number(values.duration) * 1000;
const seed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(values.seed);
const deviceSize = 4 * 2 ** 20;
const started = Date.now();
const stamp = (): string => `[${new Date().toISOString()} +${Math.round((Date.now() - started) / 1000)}s]`;
console.log(`${stamp()} fuzz soak: seed ${seed}, ${values.duration} s, store ${values.store}, ${values.round} cases per round, hostile ${values.hostile}`);

const work = mkdtempSync(join(tmpdir(), 's3nbd-fuzz-soak-'));
const socket = join(work, 'nbd.sock');
const store = values.store === 'dir' ? ['--store', join(work, 'store'), '--cache-dir', join(work, 'cache'), '--memory-cache', '64M'] : ['--store', 'memory:'];
if (values.store === 'dir') mkdirSync(join(work, 'store'));
const gw = spawnGateway([...store, '--size', String(deviceSize), '--socket', socket, '--log-level', 'info'], process.env, join(work, 'gateway.log'));
const totals = { cases: 0, requests: 0, probes: 0, failures: 0, peakRssBytes: 0, rounds: 0 };
let failed = false;
try {
  await gw.ready;
  for (let round = 0; Date.now() - started < durationMs; round++) {
    // Each round starts from a fresh model: runFuzz zeroes the device first.
    const r = await runFuzz({
      socket, pid: gw.child.pid!, deviceSize, seed: seed + round, cases: Number(values.round), workers: Number(values.workers),
      durationMs: durationMs - (Date.now() - started), hostile: values.hostile,
    });
    totals.rounds++;
    totals.cases += r.cases;
    totals.requests += r.requests;
    totals.probes += r.probes;
    totals.failures += r.failures.length;
    totals.peakRssBytes = Math.max(totals.peakRssBytes, r.peakRssBytes);
    console.log(`${stamp()} round ${round} (seed ${seed + round}): ${r.cases} cases (${r.transmissionCases} into transmission), ${r.requests} requests, `
      + `${r.probes} probes, ${r.failures.length} failures, slowest case ${r.slowestCaseMs} ms, gateway RSS ${(r.baselineRssBytes / 2 ** 20).toFixed(0)} -> peak ${(r.peakRssBytes / 2 ** 20).toFixed(0)} MiB`);
    for (const f of r.failures) console.log(`  FAILURE ${f}`);
    if (r.failures.length > 0 || gw.exitedOnItsOwn()) failed = true;
    if (gw.exitedOnItsOwn()) { console.log(`  the gateway exited: ${gw.tail()}`); break; }
    if (Number(values.pause) > 0) await new Promise((resolve) => setTimeout(resolve, Number(values.pause)));
  }
} catch (err) {
  console.log(`${stamp()} ERROR ${err instanceof Error ? err.stack : String(err)}`);
  failed = true;
} finally {
  await gw.kill();
  if (!failed) rmSync(work, { recursive: true, force: true });
  else console.log(`logs kept in ${work}`);
}
const overRss = totals.peakRssBytes > Number(values['max-rss']) * 2 ** 20;
console.log(`${stamp()} TOTAL fuzz: ${totals.cases} cases in ${totals.rounds} rounds, ${totals.requests} requests, ${totals.probes} probes, `
  + `${totals.failures} failures, gateway peak RSS ${(totals.peakRssBytes / 2 ** 20).toFixed(0)} MiB (bound ${values['max-rss']} MiB${overRss ? ': EXCEEDED' : ''}), `
  + `${Math.round((Date.now() - started) / 1000)} s`);
process.exitCode = failed || overRss ? 1 : 0;
