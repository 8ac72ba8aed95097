// The crash loop: a real gateway process (the CLI), a real NBD client writing self-describing
// sectors over several connections with many requests in flight (test/helpers/crash-writer.py,
// libnbd's aio API), `kill -9` of the gateway at seeded random moments, a restart on the same
// cache directory, and every sector of the device checked against what was acknowledged.
//
// The model, per 512-byte sector: the last acknowledged state (a write's sequence number, or
// zeros: never written, WRITE_ZEROES or TRIM, which s3nbd reads back as zeros) and at most one
// request in flight at the kill (the writer never has two requests on one sector at once, so
// there is no ordering to guess). After a restart a sector must hold exactly its acknowledged
// state or the in-flight request's; anything else is a violation: an older write (a lost
// acknowledged write), a sector whose header names another sector (misplaced bytes), a bad
// checksum (torn), zeros where a write was acknowledged. What a restart shows becomes the
// acknowledged state for the next round: data once read back must never go back in time.
// FLUSH and FUA are mixed in; a kill -9 keeps the page cache, so they change nothing in the
// model, but they run the upload paths while the kill lands; after a kill, a read-only gateway
// reads the store alone, which must hold at least what the last acknowledged FLUSH covered
// (checkFlushed). Some kills land during the
// restart (journal replay, lease), some during a drain after SIGTERM. At the end, after a clean stop
// (SIGTERM, everything uploaded), a gateway with an empty cache directory must read the same
// device from the store alone.

import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { rssOf, spawnGateway } from './gateway-process.ts';
import { rng } from './model.ts';
import type { S3TestServer } from './minio.ts';
import { REPO, TOOL_ENV } from './tools.ts';

export const SECTOR = 512;
const MAGIC = Buffer.from('S3NBDCRL');
const WRITER = join(REPO, 'test/helpers/crash-writer.py');
const WRITER_EXIT_TIMEOUT_MS = 60_000;

export interface CrashLoopOptions {
  readonly seed: number;
  /** Stop after this many kills... */
  readonly kills: number;
  /** ...or once this much time has passed, whichever comes first. */
  readonly durationMs?: number;
  /** A directory store, or a bucket on this S3 server. */
  readonly s3?: S3TestServer;
  readonly deviceBytes?: number;
  readonly connections?: number;
  readonly depth?: number;
  /** Longest run of writes before a kill. */
  readonly maxRunMs?: number;
  /** More arguments for every `serve` of the loop (later ones win). */
  readonly gatewayArgs?: readonly string[];
  /** Keep the volume, cache and logs when a violation was found (default true; false for a planted one). */
  readonly keepOnViolation?: boolean;
  /** A pause between rounds, to leave CPU to others on a long soak. */
  readonly pauseMs?: number;
  readonly log?: (line: string) => void;
}

export interface CrashLoopResult {
  kills: number;
  /** Kills that landed while the gateway was still starting (journal replay, lease). */
  killsDuringStart: number;
  /** Kills that landed while the gateway was draining after a SIGTERM (a `docker stop` timing out). */
  killsDuringDrain: number;
  sectorsChecked: number;
  writesIssued: number;
  writesAcked: number;
  readBacks: number;
  flushes: number;
  /** Rounds in which the store alone (read-only, after the kill) was checked against the last acknowledged FLUSH. */
  flushChecks: number;
  violations: string[];
  peakRssBytes: number;
  elapsedMs: number;
}

interface Op { seq: number; writer: number; kind: 'W' | 'Z' | 'T' }

/** Per sector: the acknowledged state (seq 0 = zeros) and the request in flight at the kill. */
export class SectorModel {
  readonly ackedSeq: Float64Array;
  readonly ackedWriter: Uint32Array;
  readonly inFlight: Array<Op | undefined>;
  constructor(sectors: number) {
    this.ackedSeq = new Float64Array(sectors);
    this.ackedWriter = new Uint32Array(sectors);
    this.inFlight = new Array<Op | undefined>(sectors);
  }
}

/** Decodes one sector: 'zero', 'torn', or its header. */
export function parseSector(b: Buffer): 'zero' | 'torn' | { sector: number; seq: number; writer: number } {
  let zero = true;
  for (let i = 0; i < SECTOR; i += 8) if (b.readBigUInt64LE(i) !== 0n) { zero = false; break; }
  if (zero) return 'zero';
  if (!b.subarray(0, 8).equals(MAGIC) || b.readUInt32LE(508) !== crc32(b.subarray(0, 508))) return 'torn';
  return { sector: Number(b.readBigUInt64LE(8)), seq: Number(b.readBigUInt64LE(16)), writer: b.readUInt32LE(24) };
}

/** A sector as crash-writer.py writes it (for tests of the checker). */
export function sectorBytes(sector: number, seq: number, writer: number): Buffer {
  const b = Buffer.alloc(SECTOR);
  MAGIC.copy(b, 0);
  b.writeBigUInt64LE(BigInt(sector), 8);
  b.writeBigUInt64LE(BigInt(seq), 16);
  b.writeUInt32LE(writer, 24);
  const unit = Buffer.alloc(16);
  unit.writeBigUInt64LE(BigInt(seq) ^ 0x5a5a5a5a5a5a5a5an, 0);
  unit.writeBigUInt64LE(BigInt(sector), 8);
  for (let at = 28; at < 508; at++) b[at] = unit[(at - 28) % 16]!;
  b.writeUInt32LE(crc32(b.subarray(0, 508)), 508);
  return b;
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(b: Buffer): number {
  let c = 0xffffffff;
  for (let i = 0; i < b.length; i++) c = CRC_TABLE[(c ^ b[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/**
 * Checks a dump of the whole device against the model, appending what is wrong to
 * `violations` (the first 50), then makes what it shows the new acknowledged state.
 */
export function checkDump(model: SectorModel, dump: Buffer, round: number, violations: string[]): void {
  const sectors = model.ackedSeq.length;
  for (let s = 0; s < sectors; s++) {
    const got = parseSector(dump.subarray(s * SECTOR, (s + 1) * SECTOR));
    const acked = model.ackedSeq[s]!;
    const flight = model.inFlight[s];
    let problem: string | undefined;
    if (got === 'torn') problem = 'torn or foreign bytes (bad magic or checksum)';
    else if (got === 'zero') {
      if (acked !== 0 && !(flight && flight.kind !== 'W')) problem = `zeros, but write ${acked} was acknowledged`;
    } else if (got.sector !== s) problem = `holds sector ${got.sector}'s bytes (write ${got.seq})`;
    else if (got.seq === acked && got.writer === model.ackedWriter[s]) { /* the acknowledged write */ }
    else if (flight && flight.kind === 'W' && got.seq === flight.seq && got.writer === flight.writer) { /* in flight at the kill */ }
    else problem = `write ${got.seq} (writer ${got.writer}), but the acknowledged state is ${acked === 0 ? 'zeros' : `write ${acked}`}`
      + (flight ? ` and ${flight.kind} ${flight.seq} was in flight` : '');
    if (problem) {
      if (violations.length < 50) violations.push(`round ${round}, sector ${s}: ${problem}`);
      else if (violations.length === 50) violations.push('(more violations not listed)');
    }
    model.inFlight[s] = undefined;
    if (got !== 'torn') {
      model.ackedSeq[s] = got === 'zero' ? 0 : got.seq;
      model.ackedWriter[s] = got === 'zero' ? 0 : got.writer;
    }
  }
}

/** A request of one round, with the event index of its acknowledgement (Infinity: none). */
interface RoundOp extends Op { start: number; count: number; ackAt: number }

interface RoundEvents {
  issued: number; acked: number; readBacks: number; flushes: number;
  ops: RoundOp[];
  /** Event index at which the last acknowledged FLUSH was issued, if one was. */
  flushIssuedAt: number | undefined;
}

/** Reads the writer's event lines into the model; returns counts and the round's requests. */
function applyEvents(model: SectorModel, text: string, round: number, violations: string[]): RoundEvents {
  const ops = new Map<number, RoundOp>();
  const flushIssue = new Map<string, number>();
  const ev: RoundEvents = { issued: 0, acked: 0, readBacks: 0, flushes: 0, ops: [], flushIssuedAt: undefined };
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const f = line.split(' ');
    switch (f[0]) {
      case 'I': {
        const op = { seq: Number(f[1]), writer: Number(f[2]), kind: f[3] as Op['kind'], start: Number(f[4]), count: Number(f[5]), ackAt: Infinity };
        ops.set(op.seq, op);
        ev.ops.push(op);
        ev.issued++;
        for (let s = op.start; s < op.start + op.count; s++) {
          if (model.inFlight[s]) violations.push(`round ${round}: writer overlapped requests on sector ${s} (test bug)`);
          model.inFlight[s] = op;
        }
        break;
      }
      case 'A': {
        const op = ops.get(Number(f[1]));
        if (!op) { violations.push(`round ${round}: ack of unknown request ${f[1]}`); break; }
        ev.acked++;
        op.ackAt = i;
        for (let s = op.start; s < op.start + op.count; s++) {
          model.inFlight[s] = undefined;
          model.ackedSeq[s] = op.kind === 'W' ? op.seq : 0;
          model.ackedWriter[s] = op.kind === 'W' ? op.writer : 0;
        }
        break;
      }
      case 'FI': flushIssue.set(f[1]!, i); break;
      case 'F': {
        ev.flushes++;
        const at = flushIssue.get(f[1]!);
        if (at !== undefined) ev.flushIssuedAt = Math.max(ev.flushIssuedAt ?? 0, at);
        break;
      }
      case 'R': ev.readBacks++; break;
      case 'V': violations.push(`round ${round}: ${line.slice(2)}`); break;
      default: break; // E (failed: stays in flight), D (dump done), blank
    }
  }
  return ev;
}

/**
 * What a FLUSH promises, checked on the store itself (a read-only gateway, which reads no
 * cache or journal) after a kill: every sector holds at least what was acknowledged when the
 * last acknowledged FLUSH was issued (the round's starting state, or a request acknowledged
 * before it), or a request acknowledged after that or never (uploads go on in the
 * background, so any of them may have reached the store).
 */
export function checkFlushed(start: { seq: Float64Array; writer: Uint32Array }, ops: readonly RoundOp[], flushIssuedAt: number,
  dump: Buffer, round: number, violations: string[]): void {
  const baseSeq = Float64Array.from(start.seq);
  const baseWriter = Uint32Array.from(start.writer);
  const later = new Map<number, RoundOp[]>();
  // In issue order; on one sector each request was acknowledged before the next was issued.
  for (const op of ops) {
    for (let s = op.start; s < op.start + op.count; s++) {
      if (op.ackAt < flushIssuedAt) {
        baseSeq[s] = op.kind === 'W' ? op.seq : 0;
        baseWriter[s] = op.kind === 'W' ? op.writer : 0;
      } else {
        let list = later.get(s);
        if (!list) later.set(s, (list = []));
        list.push(op);
      }
    }
  }
  for (let s = 0; s < baseSeq.length; s++) {
    const got = parseSector(dump.subarray(s * SECTOR, (s + 1) * SECTOR));
    const after = later.get(s) ?? [];
    let ok: boolean;
    if (got === 'torn') ok = false;
    else if (got === 'zero') ok = baseSeq[s] === 0 || after.some((op) => op.kind !== 'W');
    else {
      ok = got.sector === s && ((got.seq === baseSeq[s] && got.writer === baseWriter[s])
        || after.some((op) => op.kind === 'W' && op.seq === got.seq && op.writer === got.writer));
    }
    if (!ok && violations.length <= 50) {
      violations.push(violations.length === 50 ? '(more violations not listed)'
        : `round ${round}, sector ${s}, in the store after an acknowledged FLUSH: ${typeof got === 'string' ? got : `write ${got.seq} of sector ${got.sector}`}, `
          + `but the FLUSH covered ${baseSeq[s] === 0 ? 'zeros' : `write ${baseSeq[s]}`}${after.length ? ` (later: ${after.map((op) => `${op.kind} ${op.seq}`).join(', ')})` : ''}`);
    }
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function runCrashLoop(options: CrashLoopOptions): Promise<CrashLoopResult> {
  const started = Date.now();
  const random = rng(options.seed);
  const log = options.log ?? ((): void => undefined);
  const deviceBytes = options.deviceBytes ?? 8 * 2 ** 20;
  const sectors = deviceBytes / SECTOR;
  const work = mkdtempSync(join(tmpdir(), 's3nbd-crash-'));
  const socket = join(work, 'nbd.sock');
  const cacheDir = join(work, 'cache');
  const dump = join(work, 'dump');
  let store: string[];
  let env: NodeJS.ProcessEnv = process.env;
  if (options.s3) {
    const bucket = 'crash-loop';
    await options.s3.createBucket(bucket);
    store = ['--store', `s3://${bucket}/seed-${options.seed}-${started}`, '--s3-endpoint', options.s3.endpoint];
    env = { ...process.env, AWS_ACCESS_KEY_ID: options.s3.accessKeyId, AWS_SECRET_ACCESS_KEY: options.s3.secretAccessKey, AWS_REGION: options.s3.region };
  } else {
    mkdirSync(join(work, 'store'));
    store = ['--store', join(work, 'store')];
  }
  const model = new SectorModel(sectors);
  const result: CrashLoopResult = {
    kills: 0, killsDuringStart: 0, killsDuringDrain: 0, sectorsChecked: 0, writesIssued: 0, writesAcked: 0, readBacks: 0, flushes: 0, flushChecks: 0,
    violations: [], peakRssBytes: 0, elapsedMs: 0,
  };
  let seq = 0;
  let round = 0;
  const timeUp = (): boolean => options.durationMs !== undefined && Date.now() - started > options.durationMs;
  try {
    for (;;) {
      if (round > 0 && options.pauseMs) await sleep(options.pauseMs);
      round++;
      const last = result.kills >= options.kills || timeUp();
      const gw = spawnGateway([...store, '--socket', socket, '--cache-dir', cacheDir, '--size', String(deviceBytes),
        '--extent-size', '64K', '--cache-size', '4M', '--max-dirty', '2M', '--memory-cache', '1M',
        '--upload-delay', String(random() < 0.5 ? 0 : 100), '--log-level', 'info', ...(options.gatewayArgs ?? [])], env, join(work, `gateway-${round}.log`));
      const sampler = setInterval(() => { result.peakRssBytes = Math.max(result.peakRssBytes, rssOf(gw.child.pid)); }, 100);
      try {
        // Now and then the kill lands while the gateway replays its journal and takes its lease.
        if (!last && random() < 0.15) {
          await Promise.race([gw.ready, sleep(random() * 1500)]);
          await gw.kill();
          result.kills++;
          result.killsDuringStart++;
          log(`round ${round}: kill -9 during start (${gw.isReady() ? 'after' : 'before'} it listened)`);
          continue;
        }
        try {
          await gw.ready;
        } catch (err) {
          // A gateway that cannot start again after a kill breaks the promise too; the volume
          // cannot go on, so this run ends here (a soak carries on with a fresh one).
          result.violations.push(`round ${round}: the gateway did not start after a kill: ${(err as Error).message.slice(0, 2000)}`);
          break;
        }
        const writer = spawnWriter(['--socket', socket, '--size', String(deviceBytes), '--dump', dump,
          '--seed', String(Math.floor(random() * 2 ** 31)), '--seq-start', String(seq), '--writer-base', String(round * 16),
          '--conns', String(options.connections ?? 4), '--depth', String(options.depth ?? 16), '--duration', last ? '0' : '3600']);
        await writer.dumped;
        let how = 'kill -9';
        if (!last) {
          await sleep(50 + random() * ((options.maxRunMs ?? 1500) - 50));
          // Now and then SIGTERM first, and the kill lands while it drains (new requests get
          // ESHUTDOWN, uploads run), as when `docker stop` runs out of time.
          const drain = random() < 0.1;
          if (drain) {
            gw.child.kill('SIGTERM');
            await sleep(random() * 300);
          }
          if (await gw.kill()) {
            result.kills++;
            if (drain) result.killsDuringDrain++;
            how = drain ? 'kill -9 during the drain' : how;
          } else how = 'SIGTERM (drained before the kill)';
        }
        // Its connections are gone with the gateway: it must notice and exit at once.
        const hung = setTimeout(() => writer.child.kill('SIGKILL'), WRITER_EXIT_TIMEOUT_MS);
        const out = await writer.exited.finally(() => clearTimeout(hung));
        checkDump(model, readFileSync(dump), round, result.violations);
        result.sectorsChecked += sectors;
        const start = { seq: Float64Array.from(model.ackedSeq), writer: Uint32Array.from(model.ackedWriter) };
        const counts = applyEvents(model, out, round, result.violations);
        if (counts.flushIssuedAt !== undefined) {
          // The gateway is dead: what a read-only gateway reads now is the store alone.
          const ro = spawnGateway([...store, '--socket', `${socket}.ro`, '--read-only', '--log-level', 'info'], env, join(work, `gateway-${round}-read-only.log`));
          try {
            await ro.ready;
            await spawnWriter(['--socket', `${socket}.ro`, '--size', String(deviceBytes), '--dump', dump, '--seed', '0',
              '--seq-start', '0', '--writer-base', '0', '--duration', '0']).exited;
          } finally {
            await ro.kill();
          }
          checkFlushed(start, counts.ops, counts.flushIssuedAt, readFileSync(dump), round, result.violations);
          result.sectorsChecked += sectors;
          result.flushChecks++;
        }
        for (const m of out.matchAll(/^I (\d+)/gm)) seq = Math.max(seq, Number(m[1]));
        result.writesIssued += counts.issued;
        result.writesAcked += counts.acked;
        result.readBacks += counts.readBacks;
        result.flushes += counts.flushes;
        log(`round ${round}: ${last ? 'final check' : how}: ${counts.issued} requests issued, ${counts.acked} acknowledged, `
          + `${counts.readBacks} read-backs, ${sectors} sectors checked, violations so far ${result.violations.length}`);
        if (last) {
          // A clean stop uploads everything; then a gateway with an empty cache directory
          // must read the same device from the store alone.
          const code = await gw.stop();
          if (code !== 0) result.violations.push(`clean stop exited ${code}: ${gw.tail()}`);
          const fresh = spawnGateway([...store, '--socket', socket, '--cache-dir', `${cacheDir}-empty`, '--log-level', 'info'],
            env, join(work, 'gateway-empty-cache.log'));
          try {
            await fresh.ready;
            await spawnWriter(['--socket', socket, '--size', String(deviceBytes), '--dump', dump, '--seed', '0',
              '--seq-start', String(seq), '--writer-base', '0', '--duration', '0']).exited;
            checkDump(model, readFileSync(dump), round + 1, result.violations);
            result.sectorsChecked += sectors;
            log(`after a clean stop, from the store with an empty cache: ${sectors} sectors checked, violations ${result.violations.length}`);
          } finally {
            await fresh.kill();
          }
          break;
        }
        if (how.startsWith('SIGTERM') && gw.child.exitCode !== 0) result.violations.push(`round ${round}: drain exited ${gw.child.exitCode}: ${gw.tail()}`);
        if (gw.exitedOnItsOwn()) result.violations.push(`round ${round}: the gateway exited on its own: ${gw.tail()}`);
      } finally {
        clearInterval(sampler);
        await gw.kill();
      }
    }
  } finally {
    result.elapsedMs = Date.now() - started;
    if (result.violations.length === 0 || options.keepOnViolation === false) rmSync(work, { recursive: true, force: true });
    else log(`violations: logs kept in ${work}`);
  }
  return result;
}

function spawnWriter(args: string[]): { dumped: Promise<void>; exited: Promise<string>; child: ChildProcess } {
  const child = spawn('python3', [WRITER, ...args], { env: TOOL_ENV, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  let dumpedResolve: () => void = () => undefined;
  const dumped = new Promise<void>((res) => { dumpedResolve = res; });
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
    if (out.startsWith('D\n')) dumpedResolve();
  });
  child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
  // 'close', not 'exit': the last lines on stdout may arrive after the exit, and they are the
  // requests in flight at the kill. Missing them made the soak report lost writes that were not.
  const exited = new Promise<string>((resolve, reject) => child.once('close', (code, signal) => {
    dumpedResolve();
    // Killed, it lost the events it had buffered: the model would be incomplete.
    if (code !== 0) reject(new Error(`the NBD writer failed (exit ${code ?? signal}):\n${err.slice(-4000)}`));
    else resolve(out);
  }));
  exited.catch(() => undefined);
  return { dumped: dumped.then(() => undefined), exited, child };
}
