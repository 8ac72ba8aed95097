// The gateway's memory: what its buffers may add up to, from its options, and a governor that
// keeps garbage from piling up on top of that.
//
// Nearly all of a gateway's memory is Buffers (extents, payloads, S3 bodies), and every one a
// peer can make it allocate is bounded by a term below. But a Buffer nobody uses any more is
// freed only when V8 collects its JS object, and V8 decides when from its own heap, which stays
// small (tens of MB). With --external-memory-accounted-in-global-limit (gc-tuning.ts, which
// saves ~35% of the CPU of cold reads) it lets Buffers grow to a multiple of what is live
// before a full collection. Measured (8 fio jobs, --max-dirty 64M, default 1 GiB memory cache,
// a directory store): 1.2 GiB of Buffers live after a full GC, 3.1 GiB held, RSS 3.5 GB; and
// glibc keeps the freed pages of its heap, so RSS never came down. The governor checks every
// CHECK_MS and, when Buffers pass the budget, runs a full collection (at most one per
// MIN_GAP_MS, and taking at most MAX_GC_SHARE of the CPU, unless Buffers pass the budget by
// half of OVERSHOOT): the garbage is then bounded by the budget.
//
// The budget is what the options allow at worst, each term at its bound at once; the gateway
// also aims lower (elastic memory, below): its whole RSS near --memory-cache + MEMORY_HEADROOM.
// Buffers past that target are collected too (at the same pace), and when a collection shows
// them live, the memory caches give room back (src/storage/extents/extent-memory.ts) so that
// uploads, payloads and fetches in flight fit beside them; the room returns once they are gone.

import { getHeapStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { Logger } from 'pino';
import { MAX_POOLED_BYTES } from './protocol/buffer-pool.ts';
import { MAX_QUEUED_REPLY_BYTES } from './protocol/handshake.ts';
import { DEFAULT_SERVER_IN_FLIGHT_BYTES } from './protocol/session.ts';
import { READER_HIGH_WATER_MARK } from './protocol/socket-reader.ts';
import { READ_BUFFER_BYTES } from './storage/objects/s3/http1.ts';
import { MAX_FETCH_BYTES } from './storage/extents/extent-objects.ts';
import { MAX_FILL_BYTES, streamWindowBytes } from './storage/cache/write-back-cache.ts';

export interface MemoryOptions {
  readonly memoryCacheBytes: number;
  readonly extentSize: number;
  readonly uploadConcurrency: number;
  /** Connections to S3 (0 for a directory store). */
  readonly s3Connections: number;
  /** The server's shared in-flight budget; default DEFAULT_SERVER_IN_FLIGHT_BYTES. */
  readonly inFlightBytes?: number;
}

/**
 * Node, V8's heap and code: what a gateway holds besides its Buffers. 91 MB at start (87 MB
 * before the admin endpoint, many volumes and the status page: issue 18); under load V8's heap
 * alone grew to 150 MB (heapTotal), and glibc keeps what it once held. Issue 18's code also
 * raised the peak under test/e2e/memory.test.ts's fio load by a median of about 10 MiB (seven
 * runs each, 1078-1095 MiB before, 1081-1119 after, where 256 MiB left a margin of 0-3 MiB
 * in two of them): hence 272 MiB.
 */
export const PROCESS_BASE_BYTES = 272 * 1024 * 1024;
/**
 * What one connection may add: its socket reader's high-water mark and one socket read
 * (64 KiB) beyond it, and queued handshake replies. At most DEFAULT_MAX_CONNECTIONS are open.
 */
export const PER_CONNECTION_BYTES = READER_HIGH_WATER_MARK + 64 * 1024 + MAX_QUEUED_REPLY_BYTES;

/** The terms of the buffer budget, in bytes (docs/architecture.md, "Memory"). */
export function bufferBudget(o: MemoryOptions): Record<string, number> {
  const memoryCache = Math.max(o.memoryCacheBytes, o.extentSize);
  const inFlight = Math.max(o.inFlightBytes ?? DEFAULT_SERVER_IN_FLIGHT_BYTES, 32 * 1024 * 1024);
  return {
    memoryCache,
    streamWindow: streamWindowBytes(o.memoryCacheBytes, o.extentSize),
    inFlight,
    // Free payload buffers kept for reuse: never more than were in flight.
    payloadPool: Math.min(MAX_POOLED_BYTES, inFlight),
    // Each fetch and each upload holds the extent and its object's body (format 2: encoded,
    // with a header; the codec copies), so two extents' worth.
    fetches: 2 * Math.max(MAX_FETCH_BYTES, 8 * o.extentSize),
    uploads: 2 * o.uploadConcurrency * o.extentSize,
    diskCacheFills: Math.max(MAX_FILL_BYTES, 2 * o.extentSize),
    s3ReadBuffers: o.s3Connections * READ_BUFFER_BYTES,
  };
}

export function bufferBudgetBytes(o: MemoryOptions): number {
  return Object.values(bufferBudget(o)).reduce((a, b) => a + b, 0);
}

/**
 * The buffer budget of a gateway serving several volumes (serve --volumes): each volume's
 * terms, with the server's (in-flight payloads and their pool, shared by every connection
 * whatever its volume) counted once. With one volume it is bufferBudgetBytes().
 */
export function gatewayBufferBytes(volumes: readonly MemoryOptions[], inFlightBytes?: number): number {
  const shared = (o: Pick<MemoryOptions, 'inFlightBytes'>): number => {
    const terms = bufferBudget({ memoryCacheBytes: 0, extentSize: 0, uploadConcurrency: 0, s3Connections: 0, ...o });
    return terms.inFlight! + terms.payloadPool!;
  };
  const server = shared({ inFlightBytes });
  return volumes.reduce((sum, v) => sum + bufferBudgetBytes({ ...v, inFlightBytes }) - server, server);
}

/**
 * Buffers allocated between two checks of the governor, and glibc's fragmentation, on top of
 * the budget: a tenth of it.
 */
export const OVERSHOOT = 0.1;

/** The bound on the gateway's RSS with `connections` clients connected. */
export function peakMemoryBytes(o: MemoryOptions, connections: number): number {
  return PROCESS_BASE_BYTES + (1 + OVERSHOOT) * bufferBudgetBytes(o) + connections * PER_CONNECTION_BYTES;
}

/**
 * How often the governor looks. What is allocated between two looks is the overshoot: at 20 ms
 * a burst of allocation passed the tenth the formula allows (memory-budget.test.ts failed 3
 * runs in 20 at 20 ms, none in 20 at 5 ms); a look costs about 2.5 µs (0.05% of a core).
 */
const CHECK_MS = 5;
const MIN_GAP_MS = 100;
/** A forced collection may take this share of the CPU at most (a 10 ms GC: one per 100 ms). */
const MAX_GC_SHARE = 0.1;
const WARN_EVERY_MS = 60_000;

/** What the governor reads and does: this process's Buffers and V8's full collection (tests give a simulated one). */
export interface MemoryProbe {
  /** Bytes of Buffers, live or garbage. */
  buffers(): number;
  /** Bytes of V8's heap (what it has taken from the system, used or not). */
  heap(): number;
  /** A full garbage collection. */
  collect(): void;
}

/** What the gateway's RSS aims to stay under, beyond --memory-cache (issue 19's bound). */
export const MEMORY_HEADROOM_BYTES = 150 * 1024 * 1024;
/**
 * RSS that is neither V8's heap nor Buffers: Node's code and data, libraries, glibc's own.
 * Measured: 53 MB idle (RSS 96 MB, heap 36, Buffers 7), 66 MB under 4 KiB random writes; more
 * than twice that, for the freed memory glibc keeps once 1 MiB buffers have churned (200-250
 * MiB more RSS than heap and Buffers after a cold read of 1 GiB: docs/architecture.md,
 * "Memory"). At 128 MiB, 4 KiB random writes over all of --max-dirty (an upload per few
 * writes) peaked at 1440 MiB in one of three runs of the benchmarks page at 04bbd6f, 10 over the bound;
 * at 160, 1347-1355 against 1386-1392 side by side (bench/results/random-writes-rss-19.md), and
 * at most 1419 in the page's run at 8e24afb.
 */
export const NON_HEAP_BYTES = 160 * 1024 * 1024;
/** Room left free under the target when the caches give room back: garbage between two collections. */
export const GARBAGE_ROOM_BYTES = 64 * 1024 * 1024;

/** The memory caches the governor may shrink, and what they may add up to at most. */
export interface ElasticMemory {
  /** Every memory cache's --memory-cache, added up. */
  cacheBytes(): number;
  /** Moves the caches' room by `delta` bytes (negative: takes it back); returns the move made. */
  resize(delta: number): number;
  /** The room taken back so far, in all. */
  takenBack(): number;
}

/** The Buffers the gateway aims to hold at most, with V8's heap at `heapBytes`. */
export function bufferTarget(cacheBytes: number, heapBytes: number): number {
  return cacheBytes + MEMORY_HEADROOM_BYTES - NON_HEAP_BYTES - heapBytes;
}

function v8Probe(): MemoryProbe {
  // Exposes gc() to contexts made from now on; the flag is harmless otherwise.
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  return {
    // V8's external memory: the buffers' backing stores plus a little else (about 2 MiB),
    // read in about 2.5 µs where process.memoryUsage() also reads the RSS from /proc (20 µs,
    // and several percent of the event loop's time under 4 KiB random I/O).
    buffers: () => getHeapStatistics().external_memory,
    heap: () => getHeapStatistics().total_heap_size,
    collect: gc,
  };
}

/**
 * Starts the governor; returns a function that stops it. `budget()` is asked at every check:
 * the buffers of the connections open change it. With `elastic`, it also keeps Buffers near
 * bufferTarget() by collecting and by resizing the memory caches (see the header).
 */
export function governMemory(budget: () => number, log: Logger, probe: MemoryProbe = v8Probe(), elastic?: ElasticMemory): () => void {
  let nextAllowed = 0;
  let lastWarned = -Infinity;
  let checkAfterGc = false;
  /**
   * What the last collection left, when that was over the budget (else 0): live Buffers, or
   * garbage V8's background sweep has not freed yet (a loaded machine delays it). Collecting
   * again is no use until they grow past it; it is forgotten once they are within the budget.
   */
  let liveLevel = 0;
  /** The check after a collection found the buffers over the budget: look once more before warning. */
  let confirmLive = false;
  const timer = setInterval(() => {
    const buffers = probe.buffers();
    const budgetBytes = budget();
    const target = elastic ? Math.min(budgetBytes, bufferTarget(elastic.cacheBytes(), probe.heap())) : budgetBytes;
    // While the caches lack room they gave, a collection is due from GARBAGE_ROOM_BYTES under
    // the target: only a collection tells whether what is there is live or the extents they
    // evicted, and so whether the room can go back.
    const takenBack = elastic ? elastic.takenBack() : 0;
    const threshold = takenBack > 0 ? target - GARBAGE_ROOM_BYTES : target;
    const now = performance.now();
    // Still over at the check after that: the sweep has had its time, the buffers are live.
    if (confirmLive && buffers > budgetBytes && Date.now() - lastWarned >= WARN_EVERY_MS) {
      lastWarned = Date.now();
      log.warn({ buffers, budget: budgetBytes }, 'live buffers exceed the memory budget');
    }
    confirmLive = false;
    const afterGc = checkAfterGc;
    if (checkAfterGc) {
      checkAfterGc = false;
      confirmLive = buffers > budgetBytes;
      liveLevel = buffers > threshold ? buffers : 0;
    }
    // After a collection what is left is live (or about to be swept): the caches make room for
    // it, or get room back, so that live Buffers end GARBAGE_ROOM_BYTES under the target (room
    // for garbage before the next collection). Otherwise, only room back, when even with the
    // garbage counted there is some. What they evict is garbage now: collecting is of use again.
    const room = target - GARBAGE_ROOM_BYTES - buffers;
    if (elastic && (afterGc || (room > 0 && takenBack > 0)) && elastic.resize(room) < 0) liveLevel = 0;
    if (buffers <= threshold) liveLevel = 0;
    // Past half the overshoot the bound itself is at stake: collect now, whatever it costs,
    // unless the last collection left this much and they have not grown by as much since
    // (without that second condition, a reading taken before the sweep held collections back
    // until the next allowed one while garbage piled up: 1.4 times the budget once).
    const slack = budgetBytes * OVERSHOOT / 2;
    const urgent = buffers > budgetBytes + slack && buffers > liveLevel + slack;
    // Over the threshold only: collect at the usual pace, unless the last collection left this
    // much (nothing to gain until they grow by another GARBAGE_ROOM_BYTES).
    const overTarget = buffers > threshold && buffers > liveLevel + GARBAGE_ROOM_BYTES;
    if ((buffers <= budgetBytes && !overTarget) || (now < nextAllowed && !urgent)) return;
    // CPU time, not wall time: on a busy machine waiting for a CPU is not the collection's cost.
    const cpu = process.cpuUsage();
    probe.collect();
    const used = process.cpuUsage(cpu);
    const took = (used.user + used.system) / 1000;
    nextAllowed = now + Math.max(MIN_GAP_MS, took / MAX_GC_SHARE);
    checkAfterGc = true;
    log.trace({ buffers, budget: budgetBytes, ms: Math.round(took) }, 'buffers over the budget: collected garbage');
  }, CHECK_MS);
  timer.unref();
  return () => clearInterval(timer);
}
