// The seeded protocol fuzzer (test/helpers/nbd-fuzz.ts) against a real gateway process
// (`node src/cli/main.ts serve --store memory:`): 20,000 cases of random and mutated option
// sequences, bad magics, huge lengths, truncated messages, random commands with random
// flags, offsets and lengths, and disconnects anywhere. The gateway must stay up and serve a
// well-behaved probe client throughout, answer every request as the spec says (errno, data
// against a model, chunk structure), never leave a case without an answer (each is bounded),
// and keep what it holds live, and its RSS, under bounds. The seed is printed; S3NBD_FUZZ_SEED replays a run.
// bench/soak/fuzz.ts runs it for hours.
//
// The cases that make the handshake hold memory (options whose replies are never read,
// HOSTILE_MEMORY_CASES) are on: on ce574f5, which queued such replies without end, they took
// the gateway to 522 MiB. S3NBD_FUZZ_HOSTILE=0 leaves them out.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, describe, it } from 'node:test';
import { pino } from 'pino';
import type { BlockDevice } from '../../src/protocol/block-device.ts';
import type { Export } from '../../src/protocol/handshake.ts';
import { NbdServer } from '../../src/protocol/server.ts';
import { openStorage } from '../../src/storage/stack.ts';
import { spawnGateway } from '../helpers/gateway-process.ts';
import { Inspector, inspectorUrlIn } from '../helpers/inspector.ts';
import { type FuzzResult, runFuzz } from '../helpers/nbd-fuzz.ts';

const seed = process.env.S3NBD_FUZZ_SEED ? Number(process.env.S3NBD_FUZZ_SEED) : Math.floor(Math.random() * 2 ** 31);
const hostile = process.env.S3NBD_FUZZ_HOSTILE !== '0';
const MiB = 2 ** 20;
const DEVICE = 4 * MiB;
/**
 * Memory, three ways. Peak RSS alone depended on when V8 chose to collect: with the same seed
 * it peaked at 380 MiB on 1a42d01 and anywhere from 396 to 449 on later builds, with only about
 * 22 MiB live, and one CI run failed its old bound of 448 MiB by 1 MiB without any leak. So the
 * test asks the gateway itself, through its V8 inspector, what is live after a full collection:
 * - once a second while the cases run (MAX_LIVE): what open connections hold. Measured peak
 *   24 MiB (V8's heap 15, Buffers 7-9); the hostile handshake cases (options whose replies are
 *   never read), which took ce574f5 to 522 MiB of RSS, are in the run;
 * - after each half of 10,000 cases (MAX_LIVE_GROWTH): a leak. Measured -0.2 MiB; a planted
 *   leak of 8 KiB per connection grew it by 81 MiB and its peak to 185 MiB, and failed both.
 * The RSS bound stays as it was, for memory outside V8 (glibc's heap, native code). The
 * collections each second keep garbage down: peak RSS 178 MiB in the same run.
 */
const MAX_RSS = 448 * MiB;
const MAX_LIVE = 96 * MiB;
const MAX_LIVE_GROWTH = 24 * MiB;

const work = mkdtempSync(join(tmpdir(), 's3nbd-fuzz-'));
after(() => rmSync(work, { recursive: true, force: true }));

describe(`protocol fuzzer (seed ${seed})`, () => {
  it('a real gateway survives 20,000 cases: alive, correct, bounded in time and memory, no leak', { timeout: 200_000 }, async () => {
    const socket = join(work, 'gw.sock');
    const logPath = join(work, 'gateway.log');
    const gw = spawnGateway(['--store', 'memory:', '--size', String(DEVICE), '--socket', socket, '--log-level', 'info'], process.env, logPath, ['--inspect=127.0.0.1:0']);
    let inspector: Inspector | undefined;
    try {
      await gw.ready;
      const url = inspectorUrlIn(gw.head());
      assert.ok(url, `no inspector address in the gateway's stderr:\n${gw.head()}`);
      inspector = await Inspector.connect(url);
      const ins = inspector;
      // Live memory (after a full collection) once a second while the cases run: what open
      // connections hold, whatever V8's timing. Then two halves of 10,000 cases, the second
      // continuing the first's sequence: what is live after each must not grow between them.
      let peakLive = 0;
      const live = async (): Promise<number> => {
        const m = await ins.liveMemory();
        const bytes = m.heapUsed + m.arrayBuffers;
        peakLive = Math.max(peakLive, bytes);
        return bytes;
      };
      const half = async (firstCase: number): Promise<FuzzResult> => {
        let running = true;
        const sampling = (async () => { while (running) { await live(); await sleep(1000); } })();
        try {
          return await runFuzz({ socket, pid: gw.child.pid!, deviceSize: DEVICE, seed, cases: 10_000, firstCase, workers: 4, hostile });
        } finally {
          running = false;
          await sampling;
        }
      };
      const a = await half(0);
      const liveA = await live();
      const b = await half(10_000);
      const liveB = await live();
      const r = { cases: a.cases + b.cases, transmissionCases: a.transmissionCases + b.transmissionCases, requests: a.requests + b.requests,
        probes: a.probes + b.probes, failures: [...a.failures, ...b.failures], slowestCaseMs: Math.max(a.slowestCaseMs, b.slowestCaseMs),
        peakRssBytes: Math.max(a.peakRssBytes, b.peakRssBytes), elapsedMs: a.elapsedMs + b.elapsedMs };
      const mib = (n: number): string => (n / MiB).toFixed(1);
      console.log(`fuzz (seed ${seed}${hostile ? ', hostile cases on' : ''}): ${r.cases} cases (${r.transmissionCases} into transmission), `
        + `${r.requests} requests, ${r.probes} probes, ${r.failures.length} failures, slowest case ${r.slowestCaseMs} ms, `
        + `gateway RSS ${mib(a.baselineRssBytes)} MiB at start, peak ${mib(r.peakRssBytes)} MiB; live after a collection: peak ${mib(peakLive)} MiB, `
        + `${mib(liveA)} MiB after the first half, ${mib(liveB)} after the second; ${(r.elapsedMs / 1000).toFixed(1)} s`);
      assert.deepEqual(r.failures, []);
      assert.equal(r.cases, 20_000);
      assert.ok(r.transmissionCases > 10_000 && r.requests > 100_000, `only ${r.transmissionCases} cases reached transmission, ${r.requests} requests`);
      assert.ok(r.probes >= 10, `only ${r.probes} probes ran`);
      assert.ok(peakLive < MAX_LIVE, `live memory peaked at ${mib(peakLive)} MiB (bound ${MAX_LIVE / MiB} MiB)`);
      assert.ok(liveB - liveA < MAX_LIVE_GROWTH, `live memory grew by ${mib(liveB - liveA)} MiB over the second 10,000 cases (bound ${MAX_LIVE_GROWTH / MiB} MiB)`);
      assert.ok(r.peakRssBytes < MAX_RSS, `gateway RSS peaked at ${mib(r.peakRssBytes)} MiB (bound ${MAX_RSS / MiB} MiB)`);
      assert.equal(gw.exitedOnItsOwn(), false, gw.tail());
    } finally {
      inspector?.close();
      await gw.kill();
    }
    // A broken peer is the peer's problem: nothing it sent may surface as an internal error.
    const errors = readFileSync(logPath, 'utf8').split('\n').filter((l) => /"level":(50|60)/.test(l));
    assert.deepEqual(errors.slice(0, 5), [], `${errors.length} error lines in the gateway log`);
  });

  it('a read-only export: 2,000 cases, every write refused with EPERM', { timeout: 60_000 }, async () => {
    // In process: the CLI serves read-only only a volume that exists, and memory: starts empty.
    assert.deepEqual(await fuzzMutant('read-only', () => ({ readOnly: true }), 2000), []);
  });

  // The fuzzer itself must be able to fail: against servers with a planted bug it must say so.
  async function fuzzMutant(name: string, mutate: (dev: BlockDevice) => Partial<BlockDevice>, cases = 2000): Promise<string[]> {
    const storage = await openStorage({ log: pino({ level: 'silent' }), store: 'memory:', volume: { mode: 'open-or-create', size: DEVICE, extentSize: 1 << 16 }, readOnly: false, memoryCacheBytes: MiB });
    const device = Object.assign(Object.create(storage.device) as BlockDevice, mutate(storage.device));
    const exp: Export = { name: '', description: 'mutant', device };
    const server = new NbdServer({ exports: { find: (n) => (n === '' ? exp : undefined), list: () => [exp] }, log: pino({ level: 'silent' }) });
    const socket = join(work, `${name}.sock`);
    await server.listen({ path: socket });
    try {
      const readOnly = device.readOnly;
      return (await runFuzz({ socket, pid: process.pid, deviceSize: DEVICE, seed, cases, workers: 4, readOnly })).failures;
    } finally {
      await server.shutdown(100);
      await storage.close();
    }
  }

  it('reports a server whose reads return a flipped byte', { timeout: 60_000 }, async () => {
    const failures = await fuzzMutant('flip', (dev) => ({
      read: async (offset: number, length: number) => {
        const pieces = await dev.read(offset, length);
        const p = pieces.find((x) => x.data && x.length > 64);
        if (p) p.data![p.length >> 1] = (p.data![p.length >> 1]! + 1) & 0xff;
        return pieces;
      },
    }));
    assert.ok(failures.some((f) => /wrong answer: .*model has|probe: read back other bytes/.test(f)), failures.join('\n'));
  });

  it('reports a server that never answers a FLUSH, within the case deadline', { timeout: 60_000 }, async () => {
    const failures = await fuzzMutant('hang', () => ({ flush: () => new Promise<void>(() => undefined) }));
    assert.ok(failures.some((f) => /no answer \(hang\)/.test(f)), failures.join('\n'));
  });
});
