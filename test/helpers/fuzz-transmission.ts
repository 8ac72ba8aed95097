// The transmission half of the protocol fuzzer: batches of random commands with random flags,
// offsets and lengths, pipelined, every reply checked: errno per the spec's rules (as
// docs/architecture.md states them), read data and BLOCK_STATUS against a model of the
// worker's own lane of the device, and the structured reply chunks well formed.

import { type Random, REPLY_TIMEOUT_MS, Violation, bytes, expect, int, pick } from './fuzz-handshake.ts';
import { Closed, type RawConn, SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC, request } from './nbd-raw.ts';

export const Cmd = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, TRIM: 4, CACHE: 5, WRITE_ZEROES: 6, BLOCK_STATUS: 7 } as const;
const FUA = 1; const NO_HOLE = 2; const DF = 4; const REQ_ONE = 8; const FAST_ZERO = 16;
const EPERM = 1; const EINVAL = 22; const ENOSPC = 28;
const MAX_REQUEST_SIZE = 32 * 1024 * 1024;
const DONE = 1;
const T_NONE = 0; const T_DATA = 1; const T_HOLE = 2; const T_STATUS = 5; const T_ERROR = 0x8001;

/** A worker's part of the device: only it writes there, so its model is exact. */
export interface Lane {
  readonly start: number;
  readonly model: Buffer;
  /** Where writes of batches that end abruptly go: never read back, so a late write harms nothing. */
  readonly scratch: { start: number; length: number };
  readonly deviceSize: number;
  /** A read-only export: every write is EPERM, FUA is not offered, the device stays zeros. */
  readonly readOnly: boolean;
}

interface Cmd0 { type: number; flags: number; offset: bigint; length: number; handle: Buffer; data?: Buffer; expected: number }

/**
 * The errno a correct server answers (0 for success): the spec's rules as
 * docs/architecture.md states them; where the spec leaves the order open (EPERM or EINVAL for
 * a write with bad flags to a read-only export), s3nbd's choice: EPERM first.
 */
export function expectedErrno(c: { type: number; flags: number; offset: bigint; length: number }, structured: boolean, baseAllocation: boolean, size: number, readOnly: boolean): number {
  const end = c.offset + BigInt(c.length);
  // FUA is only offered (SEND_FUA) on a writable export.
  const fua = readOnly ? 0 : FUA;
  const ranged = (allowed: number, outOfRange: number): number => {
    if ((c.flags & ~allowed) !== 0) return EINVAL;
    if (c.length === 0) return EINVAL;
    if (end > BigInt(size)) return outOfRange;
    return 0;
  };
  switch (c.type) {
    case Cmd.READ: {
      const e = ranged(fua | (structured ? DF : 0), EINVAL);
      return e !== 0 ? e : c.length > MAX_REQUEST_SIZE ? EINVAL : 0;
    }
    case Cmd.WRITE: case Cmd.TRIM: return readOnly ? EPERM : ranged(FUA, ENOSPC);
    case Cmd.WRITE_ZEROES: return readOnly ? EPERM : ranged(FUA | NO_HOLE | FAST_ZERO, ENOSPC);
    case Cmd.CACHE: return ranged(fua, EINVAL);
    case Cmd.BLOCK_STATUS: return baseAllocation ? ranged(fua | REQ_ONE, EINVAL) : EINVAL;
    case Cmd.FLUSH: return (c.flags & ~fua) !== 0 || c.offset !== 0n || c.length !== 0 ? EINVAL : 0;
    default: return EINVAL;
  }
}

function randomFlags(r: Random, type: number): number {
  const roll = r();
  if (roll < 0.6) return 0;
  if (roll < 0.9) {
    const valid = type === Cmd.READ ? [FUA, DF] : type === Cmd.WRITE_ZEROES ? [FUA, NO_HOLE, FAST_ZERO] : type === Cmd.BLOCK_STATUS ? [REQ_ONE, FUA] : [FUA];
    return valid.filter(() => r() < 0.5).reduce((a, b) => a | b, 0);
  }
  return int(r, 0, 0xffff);
}

/** Offset and length: mostly in the lane, sometimes hostile. `inLane` says which. */
function randomRange(r: Random, lane: Lane, type: number, fatal: boolean): { offset: bigint; length: number; inLane: boolean } {
  const roll = r();
  const size = lane.deviceSize;
  if (roll < 0.75) {
    const area = fatal && type !== Cmd.READ ? lane.scratch : { start: lane.start, length: lane.model.length };
    const length = r() < 0.7 ? int(r, 1, 4096) : int(r, 1, Math.min(area.length, 256 * 1024));
    const offset = area.start + int(r, 0, area.length - length);
    return { offset: BigInt(offset), length, inLane: area.start === lane.start };
  }
  const payloadOk = type !== Cmd.WRITE; // writes send their payload: keep those small
  const choices: Array<() => { offset: bigint; length: number }> = [
    () => ({ offset: BigInt(size - int(r, 0, 4096)), length: int(r, 1, 8192) }), // across the end
    () => ({ offset: BigInt(size), length: int(r, 0, 4096) }),
    () => ({ offset: BigInt(int(r, 0, size)), length: 0 }),
    () => ({ offset: 2n ** 64n - BigInt(int(r, 1, 4096)), length: int(r, 1, 8192) }), // wraps around 2^64
    () => ({ offset: 2n ** 53n + BigInt(int(r, -2, 2)), length: int(r, 1, 512) }),
    () => ({ offset: BigInt(int(r, 0, 0xffffffff)) * 2n ** 32n, length: int(r, 1, 4096) }),
    () => ({ offset: BigInt(int(r, 0, size)), length: payloadOk ? int(r, 0, 0xffffffff) : int(r, 1, 65536) }),
  ];
  const hostile = pick(r, choices)();
  if (hostile.length === 0 || hostile.offset + BigInt(hostile.length) > BigInt(size)) return { ...hostile, inLane: false };
  // In range after all: moved into the area, so it neither escapes the model nor touches
  // another worker's lane.
  const area = fatal && type !== Cmd.READ ? lane.scratch : { start: lane.start, length: lane.model.length };
  const length = Math.min(hostile.length, area.length);
  return { offset: BigInt(area.start + int(r, 0, area.length - length)), length, inLane: area.start === lane.start };
}

/** A random command (never DISC: the batch decides how it ends). */
function randomCommand(r: Random, lane: Lane, structured: boolean, baseAllocation: boolean, fatal: boolean): Cmd0 & { inLane: boolean } {
  const type = r() < 0.03 ? int(r, 8, 0xffff) : pick(r, [Cmd.READ, Cmd.READ, Cmd.READ, Cmd.WRITE, Cmd.WRITE, Cmd.WRITE, Cmd.TRIM, Cmd.WRITE_ZEROES, Cmd.FLUSH, Cmd.CACHE, Cmd.BLOCK_STATUS]);
  const flags = randomFlags(r, type);
  // randomRange keeps write lengths small: their payloads are sent.
  const { offset, length, inLane } = type === Cmd.FLUSH && r() < 0.9 ? { offset: 0n, length: 0, inLane: false } : randomRange(r, lane, type, fatal);
  const c: Cmd0 = { type, flags, offset, length, handle: bytes(r, 8), expected: 0 };
  c.expected = expectedErrno(c, structured, baseAllocation, lane.deviceSize, lane.readOnly);
  if (type === Cmd.WRITE) c.data = bytes(r, length);
  return { ...c, inLane: inLane && c.expected === 0 };
}

const overlaps = (a: { offset: bigint; length: number }, b: { offset: bigint; length: number }): boolean =>
  a.offset < b.offset + BigInt(b.length) && b.offset < a.offset + BigInt(a.length);

/** Builds one batch: requests in it never overlap in the lane, so any completion order is fine. */
function batch(r: Random, lane: Lane, structured: boolean, baseAllocation: boolean, fatal: boolean): Array<Cmd0 & { inLane: boolean }> {
  const out: Array<Cmd0 & { inLane: boolean }> = [];
  for (let n = int(r, 1, 8); n > 0; n--) {
    const c = randomCommand(r, lane, structured, baseAllocation, fatal);
    if (c.inLane && out.some((o) => o.inLane && overlaps(o, c))) continue;
    out.push(c);
  }
  return out;
}

/** Sends one batch and checks every reply; updates the lane model. */
async function runBatch(conn: RawConn, cmds: Array<Cmd0 & { inLane: boolean }>, lane: Lane, structured: boolean): Promise<void> {
  for (const c of cmds) {
    conn.write(request(c.flags, c.type, c.handle, c.offset, c.length));
    if (c.data) conn.write(c.data);
  }
  const pending = new Map(cmds.map((c) => [c.handle.toString('hex'), c]));
  expect(pending.size === cmds.length, 'duplicate handle (test bug)');
  const reads = new Map<string, { data: Buffer; covered: number; hole: Uint8Array; seen: Uint8Array }>();
  while (pending.size > 0) {
    const magic = (await conn.read(4, REPLY_TIMEOUT_MS)).readUInt32BE(0);
    if (magic === SIMPLE_REPLY_MAGIC) {
      const h = await conn.read(12, REPLY_TIMEOUT_MS);
      const key = h.subarray(4, 12).toString('hex');
      const c = pending.get(key);
      expect(c !== undefined, `simple reply for unknown handle ${key}`);
      expect(!(structured && c.type === Cmd.READ), 'simple reply to a READ with structured replies');
      const errno = h.readUInt32BE(0);
      expect(errno === c.expected, `${describe(c)}: errno ${errno}, expected ${c.expected}`);
      const data = c.type === Cmd.READ && errno === 0 ? await conn.read(c.length, REPLY_TIMEOUT_MS) : undefined;
      complete(c, lane, data, undefined);
      pending.delete(key);
      continue;
    }
    expect(structured && magic === STRUCTURED_REPLY_MAGIC, `reply magic 0x${magic.toString(16)}`);
    const h = await conn.read(16, REPLY_TIMEOUT_MS);
    const flags = h.readUInt16BE(0);
    const type = h.readUInt16BE(2);
    const key = h.subarray(4, 12).toString('hex');
    const length = h.readUInt32BE(12);
    const c = pending.get(key);
    expect(c !== undefined, `chunk for unknown handle ${key}`);
    // Error messages are for humans but must stay small; data never exceeds what was asked.
    expect(length <= (type === T_ERROR ? 6 + 4096 : c.type === Cmd.READ ? c.length + 12 : 1 << 20), `${describe(c)}: chunk of ${length} bytes`);
    const body = await conn.read(length, REPLY_TIMEOUT_MS);
    let acc = reads.get(key);
    if (c.type === Cmd.READ && !acc && c.expected === 0) {
      acc = { data: Buffer.alloc(c.length), covered: 0, hole: new Uint8Array(c.length), seen: new Uint8Array(c.length) };
      reads.set(key, acc);
    }
    if (type === T_ERROR) {
      expect(body.length >= 6 && body.readUInt16BE(4) === body.length - 6, `${describe(c)}: malformed error chunk`);
      expect(body.readUInt32BE(0) === c.expected && c.expected !== 0, `${describe(c)}: error ${body.readUInt32BE(0)}, expected ${c.expected}`);
      expect((flags & DONE) !== 0, `${describe(c)}: error chunk without DONE`);
      pending.delete(key);
      continue;
    }
    expect(c.expected === 0, `${describe(c)}: succeeded (chunk type ${type}), expected errno ${c.expected}`);
    if (type === T_DATA || type === T_HOLE) {
      expect(c.type === Cmd.READ && acc !== undefined, `${describe(c)}: data chunk`);
      const at = Number(body.readBigUInt64BE(0) - c.offset);
      const n = type === T_DATA ? length - 8 : body.readUInt32BE(8);
      expect(at >= 0 && n > 0 && at + n <= c.length && (type === T_DATA || length === 12), `${describe(c)}: chunk [${at}, +${n}) outside the request`);
      expect((c.flags & DF) === 0 || (type === T_DATA && n === c.length), `${describe(c)}: DF read in pieces`);
      // Chunks may come in any order but never overlap (the spec: each byte at most once).
      expect(acc.seen.subarray(at, at + n).every((b) => b === 0), `${describe(c)}: chunk [${at}, +${n}) overlaps an earlier one`);
      acc.seen.fill(1, at, at + n);
      if (type === T_DATA) body.copy(acc.data, at, 8);
      else acc.hole.fill(1, at, at + n);
      acc.covered += n;
    } else if (type === T_STATUS) {
      expect(c.type === Cmd.BLOCK_STATUS, `${describe(c)}: block status chunk`);
      checkStatus(c, body, lane);
    } else {
      expect(type === T_NONE && length === 0 && c.type !== Cmd.READ && c.type !== Cmd.BLOCK_STATUS, `${describe(c)}: chunk type ${type}`);
    }
    if ((flags & DONE) !== 0) {
      if (acc) expect(acc.covered === c.length, `${describe(c)}: chunks cover ${acc.covered} of ${c.length} bytes`);
      complete(c, lane, acc?.data, acc?.hole);
      pending.delete(key);
    }
  }
}

function checkStatus(c: Cmd0, body: Buffer, lane: Lane): void {
  expect(body.length >= 12 && (body.length - 4) % 8 === 0 && body.readUInt32BE(0) === 1, `${describe(c)}: malformed block status`);
  const n = (body.length - 4) / 8;
  expect((c.flags & REQ_ONE) === 0 || n === 1, `${describe(c)}: ${n} descriptors with REQ_ONE`);
  let at = Number(c.offset);
  for (let i = 0; i < n; i++) {
    const len = body.readUInt32BE(4 + 8 * i);
    const st = body.readUInt32BE(8 + 8 * i);
    expect(len > 0 && at + len <= lane.deviceSize, `${describe(c)}: descriptor ${i} of ${len} bytes at ${at}`);
    if ((st & 2) !== 0) {
      // Claimed zero: every byte of the lane in it must be zero in the model.
      const from = Math.max(at, lane.start) - lane.start;
      const to = Math.min(at + len, lane.start + lane.model.length) - lane.start;
      for (let b = from; b < to; b++) expect(lane.model[b] === 0, `${describe(c)}: [${at}, +${len}) reported zero, byte ${lane.start + b} is ${lane.model[b]}`);
    }
    at += len;
  }
}

/** Checks a read against the model, or applies a write, zero or trim to it. */
function complete(c: Cmd0 & { inLane?: boolean }, lane: Lane, data: Buffer | undefined, hole: Uint8Array | undefined): void {
  if (!c.inLane || c.expected !== 0) return;
  const at = Number(c.offset) - lane.start;
  if (c.type === Cmd.READ) {
    const want = lane.model.subarray(at, at + c.length);
    for (let i = 0; i < c.length; i++) {
      const got = hole?.[i] ? 0 : data![i]!;
      if (got !== want[i]) throw new Violation(`${describe(c)}: byte ${Number(c.offset) + i} read ${got}, model has ${want[i]}`);
    }
  } else if (c.type === Cmd.WRITE) c.data!.copy(lane.model, at);
  else if (c.type === Cmd.TRIM || c.type === Cmd.WRITE_ZEROES) lane.model.fill(0, at, at + c.length);
}

function describe(c: Cmd0): string {
  return `cmd ${c.type} flags 0x${c.flags.toString(16)} [${c.offset}, +${c.length}]`;
}

/**
 * Runs batches until the case ends: a clean DISC, an abrupt disconnect (in the middle of a
 * request, or with replies unread), or a message the server must hang up on (bad magic, a
 * write over 32 MiB, garbage). Returns the number of requests sent.
 */
export async function transmission(conn: RawConn, r: Random, lane: Lane, structured: boolean, baseAllocation: boolean, log: string[]): Promise<number> {
  let sent = 0;
  for (let batches = int(r, 1, 5); ; batches--) {
    const ending = batches <= 1 ? r() : 1;
    const fatal = ending < 0.35;
    const cmds = batch(r, lane, structured, baseAllocation, fatal);
    sent += cmds.length;
    log.push(cmds.map(describe).join('; '));
    if (!fatal) {
      await runBatch(conn, cmds, lane, structured);
      if (batches > 1) continue;
      if (ending < 0.8) {
        conn.write(request(0, Cmd.DISC, bytes(r, 8), 0n, 0));
        expect(await conn.closedWithin(REPLY_TIMEOUT_MS), 'server kept the connection after NBD_CMD_DISC');
      } else conn.end(r() < 0.5);
      return sent;
    }
    for (const c of cmds) {
      conn.write(request(c.flags, c.type, c.handle, c.offset, c.length));
      if (c.data) conn.write(c.data);
    }
    const how = r();
    if (how < 0.3) {
      log.push('bad request magic');
      conn.write(Buffer.concat([bytes(r, 4), bytes(r, 24)]));
      await expectHangUp(conn, 'a bad request magic');
    } else if (how < 0.45) {
      const length = int(r, MAX_REQUEST_SIZE + 1, 0xffffffff);
      log.push(`write of ${length} bytes`);
      conn.write(request(0, Cmd.WRITE, bytes(r, 8), 0n, length));
      await expectHangUp(conn, `a write of ${length} bytes`);
    } else if (how < 0.75) {
      // A request cut short, then EOF or a reset.
      const whole = Buffer.concat([request(0, Cmd.WRITE, bytes(r, 8), BigInt(lane.scratch.start), 4096), bytes(r, 4096)]);
      conn.write(whole.subarray(0, int(r, 1, whole.length - 1)));
      log.push('truncated request');
      conn.end(r() < 0.5);
    } else {
      log.push('disconnect with replies unread');
      conn.end(r() < 0.5);
    }
    return sent;
  }
}

async function expectHangUp(conn: RawConn, what: string): Promise<void> {
  try {
    if (await conn.closedWithin(REPLY_TIMEOUT_MS)) return;
  } catch (err) {
    if (err instanceof Closed) return;
    throw err;
  }
  throw new Violation(`server kept the connection after ${what}`);
}
