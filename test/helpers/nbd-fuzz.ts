// A seeded protocol fuzzer against a running gateway (any process serving a Unix socket):
// several workers each run cases one after another, every case a fresh connection with a
// seed of its own (printed with any failure, so one case can be replayed). A case is a random
// handshake (fuzz-handshake.ts), and most of the time a transmission phase after it
// (fuzz-transmission.ts). Meanwhile a well-behaved probe client writes and reads back its own
// part of the device every few hundred milliseconds: the server must stay alive and correct
// for others whatever the fuzzed connections do. Every read has a deadline (no hang), and the
// server's RSS is sampled from /proc to check a bound.

import { HOSTILE_MEMORY_CASES, type HandshakeState, REPLY_TIMEOUT_MS, Violation, negotiate } from './fuzz-handshake.ts';
import { type Lane, transmission } from './fuzz-transmission.ts';
import { rssOf } from './gateway-process.ts';
import { rng } from './model.ts';
import { RawConn, TimedOut, infoData, option, readOptionReply, request, u32 } from './nbd-raw.ts';

export interface FuzzOptions {
  readonly socket: string;
  /** The server process, for RSS samples. */
  readonly pid: number;
  readonly deviceSize: number;
  readonly seed: number;
  /** Stop after this many cases... */
  readonly cases: number;
  /** The number of the first case (default 0): a second run from where the first stopped runs new cases. */
  readonly firstCase?: number;
  /** ...or after this long. */
  readonly durationMs?: number;
  readonly workers?: number;
  /** Also run HOSTILE_MEMORY_CASES (off until the handshake's memory bound is merged). */
  readonly hostile?: boolean;
  /** The export is read-only (and all zeros): writes must get EPERM. */
  readonly readOnly?: boolean;
  readonly log?: (line: string) => void;
}

export interface FuzzResult {
  cases: number;
  transmissionCases: number;
  requests: number;
  probes: number;
  failures: string[];
  /** Case seeds that took longest, for a look at slow paths. */
  slowestCaseMs: number;
  peakRssBytes: number;
  baselineRssBytes: number;
  elapsedMs: number;
}

const CASE_TIMEOUT_MS = 15_000;
const PROBE_INTERVAL_MS = 250;

/** Lanes: one per worker, one for the probe, one scratch area; all equal. */
function lanes(deviceSize: number, workers: number, readOnly: boolean): { lanes: Lane[]; probe: { start: number; length: number } } {
  const part = Math.floor(deviceSize / (workers + 2) / 4096) * 4096;
  const scratch = { start: (workers + 1) * part, length: part };
  return {
    lanes: Array.from({ length: workers }, (_, i) => ({ start: i * part, model: Buffer.alloc(part), scratch, deviceSize, readOnly })),
    probe: { start: workers * part, length: part },
  };
}

/** Runs one case; resolves with the number of requests sent, throws Violation on a wrong answer. */
export async function runCase(socket: string, caseSeed: number, lane: Lane, hostile: boolean): Promise<{ requests: number; transmission: boolean }> {
  const r = rng(caseSeed);
  const log: string[] = [];
  const conn = await RawConn.connect(socket, REPLY_TIMEOUT_MS);
  const timer = setTimeout(() => conn.destroy(), CASE_TIMEOUT_MS);
  try {
    if (hostile && r() < 0.01) {
      const c = HOSTILE_MEMORY_CASES[Math.floor(r() * HOSTILE_MEMORY_CASES.length)]!;
      await c.run(conn, r);
      return { requests: 0, transmission: false };
    }
    // Now and then every byte trickles in: payloads are small in such cases, so it stays quick.
    conn.trickle = r() < 0.03;
    if (conn.trickle) log.push('trickle');
    const state: HandshakeState = { structured: false, baseAllocation: false, deviceSize: lane.deviceSize, readOnly: lane.readOnly };
    const negotiated = await negotiate(conn, r, state, log, r() < 0.6);
    if (!negotiated) return { requests: 0, transmission: false };
    return { requests: await transmission(conn, r, lane, negotiated.structured, negotiated.baseAllocation, log), transmission: true };
  } catch (err) {
    const what = err instanceof Violation ? 'wrong answer' : err instanceof TimedOut ? 'no answer (hang)' : 'error';
    throw new Violation(`case seed ${caseSeed}: ${what}: ${(err as Error).message}\n    steps: ${log.join(' | ').slice(-2000)}`);
  } finally {
    clearTimeout(timer);
    conn.destroy();
  }
}

/** Opens a well-behaved connection: GO with structured replies. */
async function goStructured(socket: string): Promise<RawConn> {
  const conn = await RawConn.connect(socket, REPLY_TIMEOUT_MS);
  await conn.read(18, REPLY_TIMEOUT_MS);
  conn.write(u32(3));
  conn.write(option(8, Buffer.alloc(0)));
  if ((await readOptionReply(conn, REPLY_TIMEOUT_MS)).type !== 1) throw new Error('probe: STRUCTURED_REPLY refused');
  conn.write(option(7, infoData('', [])));
  for (;;) {
    const rep = await readOptionReply(conn, REPLY_TIMEOUT_MS);
    if (rep.type === 1) return conn;
    if (rep.type !== 3) throw new Error(`probe: GO answered 0x${rep.type.toString(16)}`);
  }
}

/** Zeroes the whole device, so the lane models (all zeros) start true. */
async function zeroDevice(socket: string, size: number): Promise<void> {
  const conn = await goStructured(socket);
  try {
    conn.write(request(0, 6, Buffer.alloc(8), 0n, size));
    const h = await conn.read(20, REPLY_TIMEOUT_MS);
    await conn.read(h.readUInt32BE(16), REPLY_TIMEOUT_MS);
    if (h.readUInt16BE(6) !== 0) throw new Error(`zeroing the device failed (chunk type ${h.readUInt16BE(6)})`);
  } finally {
    conn.destroy();
  }
}

/** A well-behaved client: GO with structured replies, a write (unless read-only) and a read-back of its lane. */
async function probe(socket: string, area: { start: number; length: number }, n: number, readOnly: boolean): Promise<void> {
  const conn = await goStructured(socket);
  try {
    const data = Buffer.alloc(4096, readOnly ? 0 : n & 0xff);
    if (!readOnly) data.writeUInt32BE(n);
    const offset = area.start + (n % (area.length / 4096)) * 4096;
    const handle = Buffer.alloc(8, 1);
    if (!readOnly) {
      conn.write(Buffer.concat([request(0, 1, handle, BigInt(offset), 4096), data]));
      const w = await conn.read(20, REPLY_TIMEOUT_MS);
      if (w.readUInt16BE(6) !== 0) throw new Error(`probe: write failed (chunk type ${w.readUInt16BE(6)})`);
      await conn.read(w.readUInt32BE(16), REPLY_TIMEOUT_MS);
    }
    conn.write(request(4, 0, handle, BigInt(offset), 4096)); // DF: one data chunk
    const h = await conn.read(20, REPLY_TIMEOUT_MS);
    const body = await conn.read(h.readUInt32BE(16), REPLY_TIMEOUT_MS);
    if (h.readUInt16BE(6) !== 1 || !body.subarray(8).equals(data)) throw new Error('probe: read back other bytes than written');
    conn.write(request(0, 2, handle, 0n, 0));
    await conn.closedWithin(REPLY_TIMEOUT_MS);
  } finally {
    conn.destroy();
  }
}

export async function runFuzz(options: FuzzOptions): Promise<FuzzResult> {
  const started = Date.now();
  const workers = options.workers ?? 4;
  const log = options.log ?? ((): void => undefined);
  const { lanes: workerLanes, probe: probeArea } = lanes(options.deviceSize, workers, options.readOnly ?? false);
  const result: FuzzResult = {
    cases: 0, transmissionCases: 0, requests: 0, probes: 0, failures: [], slowestCaseMs: 0,
    peakRssBytes: 0, baselineRssBytes: rssOf(options.pid), elapsedMs: 0,
  };
  if (!options.readOnly) await zeroDevice(options.socket, options.deviceSize);
  const sample = (): void => { result.peakRssBytes = Math.max(result.peakRssBytes, rssOf(options.pid)); };
  const sampler = setInterval(sample, 50);
  let next = 0;
  let stop = false;
  const timeUp = (): boolean => options.durationMs !== undefined && Date.now() - started > options.durationMs;
  const fail = (msg: string): void => {
    if (result.failures.length < 20) result.failures.push(msg);
    log(`FAIL ${msg}`);
  };
  const probing = (async () => {
    for (let n = 0; !stop; n++) {
      try {
        await probe(options.socket, probeArea, n, options.readOnly ?? false);
        result.probes++;
      } catch (err) {
        fail(`probe ${n}: ${(err as Error).message}`);
      }
      await new Promise((resolve) => setTimeout(resolve, PROBE_INTERVAL_MS));
    }
  })();
  await Promise.all(workerLanes.map(async (lane) => {
    while (!stop && result.failures.length === 0) {
      if (next >= options.cases || timeUp()) break;
      const index = (options.firstCase ?? 0) + next++;
      // Seeds of their own, so a failing case replays alone: runCase(socket, seed, lane).
      const caseSeed = (options.seed * 1_000_003 + index) >>> 0;
      const t0 = Date.now();
      try {
        const c = await runCase(options.socket, caseSeed, lane, options.hostile ?? false);
        result.requests += c.requests;
        if (c.transmission) result.transmissionCases++;
      } catch (err) {
        fail((err as Error).message);
      }
      result.slowestCaseMs = Math.max(result.slowestCaseMs, Date.now() - t0);
      result.cases++;
      if (result.cases % 5000 === 0) log(`${result.cases} cases, ${result.requests} requests, ${result.probes} probes, peak RSS ${(result.peakRssBytes / 2 ** 20).toFixed(0)} MiB`);
    }
  }));
  stop = true;
  await probing;
  // One last probe: alive after everything.
  try {
    await probe(options.socket, probeArea, 1 << 20, options.readOnly ?? false);
    result.probes++;
  } catch (err) {
    fail(`final probe: ${(err as Error).message}`);
  }
  clearInterval(sampler);
  sample();
  result.elapsedMs = Date.now() - started;
  return result;
}
