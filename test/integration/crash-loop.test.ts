// The crash loop (test/helpers/crash-loop.ts) at a size CI can afford: a real gateway process,
// a real NBD client (libnbd's aio API: 4 connections, 16 requests in flight each) writing
// self-describing sectors with FLUSH, FUA, WRITE_ZEROES and TRIM mixed in, `kill -9` at seeded
// random moments (some during the restart itself, some while it drains after a SIGTERM), a
// restart on the same cache directory, and every sector checked against what was
// acknowledged; at the end, after a clean stop, again from the store with an empty cache.
// The seed is printed; set S3NBD_CRASH_SEED to replay a run. bench/soak/crash-loop.ts runs
// the same loop for hours.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { type CrashLoopResult, runCrashLoop } from '../helpers/crash-loop.ts';
import { type S3TestServer, startMinio } from '../helpers/minio.ts';
import { requireTool } from '../helpers/tools.ts';

const seed = process.env.S3NBD_CRASH_SEED ? Number(process.env.S3NBD_CRASH_SEED) : Math.floor(Math.random() * 2 ** 31);
const MiB = 2 ** 20;

function report(store: string, runSeed: number, r: CrashLoopResult): void {
  console.log(`crash loop (${store}, seed ${runSeed}): ${r.kills} kills (${r.killsDuringStart} during start, ${r.killsDuringDrain} during a drain), ${r.sectorsChecked} sectors checked, `
    + `${r.writesAcked} of ${r.writesIssued} requests acknowledged, ${r.readBacks} read-backs, ${r.flushes} flushes, ${r.flushChecks} checks of the store against a FLUSH, `
    + `${r.violations.length} violations, gateway peak RSS ${(r.peakRssBytes / MiB).toFixed(0)} MiB, ${(r.elapsedMs / 1000).toFixed(1)} s`);
}

function assertClean(r: CrashLoopResult, kills: number): void {
  assert.deepEqual(r.violations, [], `seed ${seed}: violations`);
  assert.equal(r.kills, kills);
  // About 15% of kills land during a start; the rest under writes, and the loop must really
  // have been writing (a run lasts 50-1500 ms, hundreds of requests on an idle machine).
  assert.ok(r.kills - r.killsDuringStart >= kills / 3, `only ${r.kills - r.killsDuringStart} kills under writes`);
  assert.ok(r.writesAcked > 20 * (r.kills - r.killsDuringStart), `only ${r.writesAcked} requests acknowledged`);
  assert.ok(r.readBacks > 0, 'no read-back ran');
  // Every round, the final check, the check from the store with an empty cache after a clean
  // stop, and each check of the store against the last FLUSH read the whole 8 MiB device.
  assert.equal(r.sectorsChecked, (r.kills - r.killsDuringStart + 2 + r.flushChecks) * 8 * MiB / 512);
}

describe(`crash loop: kill -9 under concurrent writes (seed ${seed})`, () => {
  let s3: S3TestServer;
  before(async () => {
    requireTool('python3');
    s3 = await startMinio();
  });
  after(async () => { await s3?.stop(); });

  it('directory store: 12 random kills, every acknowledged write survives', { timeout: 150_000 }, async () => {
    const r = await runCrashLoop({ seed, kills: 12 });
    report('directory store', seed, r);
    assertClean(r, 12);
    // On MinIO a FLUSH waits for uploads and a round may end before one is answered; here
    // several always are.
    assert.ok(r.flushChecks > 0, 'no round had an acknowledged FLUSH to check the store against');
  });

  it('the store check has teeth: with --flush-mode local (FLUSH only fsyncs the journal) it reports what FLUSH did not upload', { timeout: 90_000 }, async () => {
    const r = await runCrashLoop({ seed: seed + 2, kills: 3, gatewayArgs: ['--flush-mode', 'local', '--upload-delay', '60000'], keepOnViolation: false });
    assert.ok(r.flushChecks > 0, 'no acknowledged FLUSH');
    assert.ok(r.violations.some((v) => /in the store after an acknowledged FLUSH/.test(v)), r.violations.join('\n'));
  });

  it('MinIO: 10 random kills, every acknowledged write survives', { timeout: 150_000 }, async () => {
    const r = await runCrashLoop({ seed: seed + 1, kills: 10, s3 });
    report('MinIO', seed + 1, r);
    assertClean(r, 10);
  });
});
