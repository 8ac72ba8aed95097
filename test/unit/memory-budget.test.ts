// The memory governor in this process: garbage Buffers, made while V8 counts Buffers in its
// global limit (as the gateway has it, gc-tuning.ts), must not pile up past the budget; and
// the formula adds up the terms the docs list.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { setFlagsFromString } from 'node:v8';
import { pino } from 'pino';
import { bufferBudget, bufferBudgetBytes, bufferTarget, GARBAGE_ROOM_BYTES, governMemory, peakMemoryBytes } from '../../src/memory-budget.ts';

const MiB = 1024 * 1024;

describe('memory budget', () => {
  it('adds up the terms of the formula', () => {
    const o = { memoryCacheBytes: 1024 * MiB, extentSize: MiB, uploadConcurrency: 16, s3Connections: 48 };
    assert.deepEqual(bufferBudget(o), {
      memoryCache: 1024 * MiB, streamWindow: 64 * MiB, inFlight: 256 * MiB, payloadPool: 128 * MiB,
      fetches: 128 * MiB, uploads: 32 * MiB, diskCacheFills: 16 * MiB, s3ReadBuffers: 6 * MiB,
    });
    assert.equal(bufferBudgetBytes(o), 1654 * MiB);
    // 256 MiB + 1.1 x 1654 MiB + 8 connections of 4.19 MiB: about 2.1 GiB.
    assert.ok(Math.abs(peakMemoryBytes(o, 8) / MiB - (272 + 1.1 * 1654 + 8 * 4.1875)) < 1);
  });

  /** Runs the governor for `ms` with a budget of `budget()`; returns how often it collected and what it warned. */
  async function govern(budget: () => number, ms: number): Promise<{ collections: number; warnings: string[] }> {
    const lines: string[] = [];
    const log = pino({ level: 'trace' }, { write: (line: string) => { lines.push(line); } });
    const stop = governMemory(budget, log);
    await new Promise((resolve) => setTimeout(resolve, ms));
    stop();
    const messages = lines.map((l) => (JSON.parse(l) as { msg: string }).msg);
    return { collections: messages.filter((m) => /collected garbage/.test(m)).length, warnings: messages.filter((m) => /exceed/.test(m)) };
  }

  it('collects nothing while Buffers are within the budget', async () => {
    const { collections, warnings } = await govern(() => process.memoryUsage().arrayBuffers + 512 * MiB, 300);
    assert.equal(collections, 0);
    assert.deepEqual(warnings, []);
  });

  it('collects once Buffers pass the budget, at most once per 100 ms, and says so once when they are live', async () => {
    const live = Array.from({ length: 64 }, (_, i) => Buffer.alloc(MiB, i));
    const { collections, warnings } = await govern(() => 32 * MiB, 1000);
    assert.equal(live.length, 64);
    assert.ok(collections >= 2 && collections <= 11, `${collections} collections in 1 s`);
    assert.deepEqual(warnings, ['live buffers exceed the memory budget']);
  });

  it('keeps collecting when a reading after a collection comes before V8 has freed the garbage', async () => {
    // Simulated: 2 MiB of garbage per check; a collection frees it, but the next reading still
    // counts it (V8 frees the memory of dead Buffers in a background sweep, which a loaded
    // machine delays). A collection takes 40 ms of CPU, as on a loaded machine, so the next
    // one is allowed only 400 ms later: that reading must not pass for live Buffers meanwhile.
    const budget = 128 * MiB;
    const live = 8 * MiB;
    let garbage = 0;
    let unswept = 0;
    let peak = 0;
    const probe = {
      buffers: () => {
        garbage += 2 * MiB;
        const reading = live + garbage + unswept;
        unswept = 0;
        peak = Math.max(peak, reading);
        return reading;
      },
      heap: () => 0,
      collect: () => {
        unswept = garbage;
        garbage = 0;
        const cpu = process.cpuUsage();
        for (let used = process.cpuUsage(cpu); used.user + used.system < 40_000; used = process.cpuUsage(cpu)) { /* busy */ }
      },
    };
    const warnings: string[] = [];
    const stop = governMemory(() => budget, pino({ level: 'warn' }, { write: (line: string) => { warnings.push(line); } }), probe);
    await new Promise((resolve) => setTimeout(resolve, 1200));
    stop();
    assert.deepEqual(warnings, [], 'garbage not yet swept is not called live');
    assert.ok(peak <= budget * 1.1, `Buffers reached ${Math.round(peak / MiB)} MiB with a budget of ${budget / MiB} MiB`);
  });

  it('has the memory caches give room to live Buffers past the target, and get it back once those are gone', async () => {
    // Simulated: a memory cache of 1 GiB, full, and other Buffers (uploads, payloads) that
    // grow to 200 MiB live and then go; V8's heap 100 MiB. The target: 1 GiB + the headroom,
    // less the heap and what is neither (bufferTarget()); evicted extents stay garbage until
    // the governor collects.
    const cacheMax = 1024 * MiB;
    const heap = 100 * MiB;
    const target = bufferTarget(cacheMax, heap);
    let cache = cacheMax;
    let others = 0;
    let garbage = 0;
    const resizes: number[] = [];
    const probe = {
      buffers: () => cache + others + garbage,
      heap: () => heap,
      collect: () => { garbage = 0; },
    };
    const elastic = {
      cacheBytes: () => cacheMax,
      resize: (delta: number) => {
        const before = cache;
        cache = Math.min(cacheMax, Math.max(cacheMax / 2, cache + delta));
        garbage += Math.max(0, before - cache); // evicted extents are garbage until collected
        resizes.push(cache - before);
        return cache - before;
      },
      takenBack: () => cacheMax - cache,
    };
    const stop = governMemory(() => 4096 * MiB, pino({ level: 'silent' }), probe, elastic);
    try {
      const settle = () => new Promise((resolve) => setTimeout(resolve, 300));
      others = 200 * MiB;
      await settle();
      assert.ok(cache + others <= target - GARBAGE_ROOM_BYTES, `live ${(cache + others) / MiB} MiB, target ${target / MiB} MiB less the room for garbage`);
      assert.ok(cache >= cacheMax / 2, 'the cache keeps at least half');
      others = 0;
      await settle();
      // All of it but what keeps RSS under --memory-cache + the headroom: V8's heap, the rest
      // of the process and the room for garbage come out of the cache's budget too.
      assert.equal(cache, target - GARBAGE_ROOM_BYTES, `the room comes back once the other Buffers are gone (resizes: ${resizes.map((d) => d / MiB).join(', ')} MiB)`);
      assert.ok(resizes.some((d) => d < 0) && resizes.some((d) => d > 0));
    } finally {
      stop();
    }
  });

  it('collects garbage Buffers that V8 lets pile up (Buffers counted in its global limit)', async () => {
    setFlagsFromString('--external-memory-accounted-in-global-limit');
    const budget = process.memoryUsage().arrayBuffers + 128 * MiB;
    const stop = governMemory(() => budget, pino({ level: 'silent' }));
    let peak = 0;
    try {
      let keep: Buffer[] = [];
      for (let i = 0; i < 1536; i++) { // 1.5 GiB made, never more than 8 MiB of it in use
        keep.push(Buffer.alloc(MiB, i));
        if (keep.length === 8) {
          keep = [];
          await yieldToLoop();
          peak = Math.max(peak, process.memoryUsage().arrayBuffers);
        }
      }
    } finally {
      stop();
    }
    assert.ok(peak <= budget * 1.1, `Buffers reached ${Math.round(peak / MiB)} MiB with a budget of ${Math.round(budget / MiB)} MiB`);
  });
});
