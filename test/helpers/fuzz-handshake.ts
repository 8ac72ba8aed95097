// The handshake half of the protocol fuzzer: random and mutated-valid option sequences, bad
// magics, huge lengths, truncated messages and disconnects, each reply checked against what
// the spec (NetworkBlockDevice/nbd doc/proto.md) and s3nbd's README promise.

import {
  Closed, IHAVEOPT, NBDMAGIC, type OptionReply, type RawConn, infoData, metaData, option, readOptionReply, u32, u64,
} from './nbd-raw.ts';

export const Opt = { EXPORT_NAME: 1, ABORT: 2, LIST: 3, STARTTLS: 5, INFO: 6, GO: 7, STRUCTURED_REPLY: 8, LIST_META: 9, SET_META: 10 } as const;
export const Rep = {
  ACK: 1, SERVER: 2, INFO: 3, META_CONTEXT: 4,
  ERR_UNSUP: 0x80000001, ERR_POLICY: 0x80000002, ERR_INVALID: 0x80000003, ERR_UNKNOWN: 0x80000006, ERR_TOO_BIG: 0x80000009,
} as const;
const MAX_OPTION_LENGTH = 64 * 1024;
const MAX_REQUEST_SIZE = 32 * 1024 * 1024;
export const REPLY_TIMEOUT_MS = 5000;

export type Random = () => number;
export const int = (r: Random, lo: number, hi: number): number => lo + Math.floor(r() * (hi - lo + 1));
export const pick = <T>(r: Random, items: readonly T[]): T => items[Math.floor(r() * items.length)]!;
export function bytes(r: Random, n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(r() * 256);
  return b;
}

export class Violation extends Error {}
export function expect(cond: boolean, what: string): asserts cond {
  if (!cond) throw new Violation(what);
}

export interface Negotiated { structured: boolean; baseAllocation: boolean }

/** How one option is expected to end: its final reply types, and whether a close is allowed. */
interface Expectation { finals: readonly number[]; intermediate: readonly number[]; mayClose: boolean }

const ANY_ERROR = [Rep.ERR_UNSUP, Rep.ERR_POLICY, Rep.ERR_INVALID, Rep.ERR_UNKNOWN, Rep.ERR_TOO_BIG, 0x80000005, 0x80000007, 0x80000008];

export interface HandshakeState {
  structured: boolean;
  /** base:allocation was selected for the default export by the last SET_META_CONTEXT. */
  baseAllocation: boolean;
  readonly deviceSize: number;
  readonly readOnly: boolean;
}

/** Reads and checks the greeting, sends the client flags; false if the case ends here. */
export async function greet(conn: RawConn, r: Random, log: string[]): Promise<{ noZeroes: boolean } | undefined> {
  const g = await conn.read(18, REPLY_TIMEOUT_MS);
  expect(g.readBigUInt64BE(0) === NBDMAGIC && g.readBigUInt64BE(8) === IHAVEOPT, `bad greeting ${g.toString('hex')}`);
  expect((g.readUInt16BE(16) & 3) === 3, `greeting flags 0x${g.readUInt16BE(16).toString(16)} lack FIXED_NEWSTYLE|NO_ZEROES`);
  const roll = r();
  if (roll < 0.02) {
    // Unknown client flags: the server must hang up (it cannot know what the client expects).
    const flags = (int(r, 1, 0x3fffffff) << 2) >>> 0;
    log.push(`client flags 0x${flags.toString(16)}`);
    conn.write(u32(flags));
    expect(await conn.closedWithin(REPLY_TIMEOUT_MS), 'server kept a connection with unknown client flags');
    return undefined;
  }
  if (roll < 0.04) {
    log.push('disconnect after greeting');
    conn.end(r() < 0.5);
    return undefined;
  }
  const noZeroes = r() < 0.8;
  conn.write(u32(noZeroes ? 3 : 1));
  return { noZeroes };
}

/** One valid option of a random kind (never GO, EXPORT_NAME or ABORT), and what it must get. */
function validOption(r: Random, s: HandshakeState): { type: number; data: Buffer; expect: Expectation; apply?: () => void } {
  const name = r() < 0.85 ? '' : pick(r, ['nosuch', 'x'.repeat(int(r, 1, 300)), '\u00e9t\u00e9', 'y'.repeat(int(r, 4097, 6000))]);
  const known = name === '';
  // Names are at most 4096 bytes (the spec); a longer one is invalid, or at least unknown.
  const unknown = name.length > 4096 ? [Rep.ERR_INVALID, Rep.ERR_TOO_BIG, Rep.ERR_UNKNOWN] : [Rep.ERR_UNKNOWN];
  switch (int(r, 0, 7)) {
    case 0:
      return { type: Opt.LIST, data: Buffer.alloc(0), expect: { finals: [Rep.ACK], intermediate: [Rep.SERVER], mayClose: false } };
    case 1:
      return {
        type: Opt.STRUCTURED_REPLY, data: Buffer.alloc(0),
        expect: { finals: s.structured ? [Rep.ACK, Rep.ERR_INVALID] : [Rep.ACK], intermediate: [], mayClose: false },
        apply: () => { s.structured = true; },
      };
    case 2: case 3: {
      const infos = Array.from({ length: int(r, 0, 4) }, () => (r() < 0.8 ? int(r, 0, 3) : int(r, 0, 0xffff)));
      return { type: Opt.INFO, data: infoData(name, infos), expect: { finals: known ? [Rep.ACK] : unknown, intermediate: [Rep.INFO], mayClose: false } };
    }
    case 4: case 5: {
      const set = r() < 0.6;
      const queries = r() < 0.3 ? [] : Array.from({ length: int(r, 1, 3) }, () => pick(r, ['base:allocation', 'base:', 'qemu:dirty-bitmap:x', '', 'base:allocationX']));
      const finals = !s.structured ? [Rep.ERR_INVALID] : known ? [Rep.ACK] : unknown;
      const selects = queries.includes('base:allocation');
      return {
        type: set ? Opt.SET_META : Opt.LIST_META, data: metaData(name, queries),
        expect: { finals, intermediate: [Rep.META_CONTEXT], mayClose: false },
        apply: set ? () => expect(s.baseAllocation === selects, `SET_META_CONTEXT ${JSON.stringify(queries)}: base:allocation ${selects ? 'not ' : ''}selected`) : undefined,
      };
    }
    case 6:
      return { type: Opt.STARTTLS, data: Buffer.alloc(0), expect: { finals: [Rep.ERR_UNSUP, Rep.ERR_POLICY], intermediate: [], mayClose: false } };
    default: {
      // An option number nobody assigned: NBD_REP_ERR_UNSUP, never a hang-up.
      const type = r() < 0.5 ? int(r, 11, 64) : int(r, 65, 0xffffffff);
      return { type, data: bytes(r, int(r, 0, 64)), expect: { finals: [Rep.ERR_UNSUP], intermediate: [], mayClose: false } };
    }
  }
}

/** Reads the replies to one option up to its final one and checks them. */
async function replies(conn: RawConn, type: number, exp: Expectation, s: HandshakeState): Promise<OptionReply | 'closed'> {
  let selected = false;
  let exportInfo = false;
  for (;;) {
    let rep: OptionReply;
    try {
      rep = await readOptionReply(conn, REPLY_TIMEOUT_MS);
    } catch (err) {
      if (err instanceof Closed && exp.mayClose) return 'closed';
      throw err instanceof Closed ? new Violation(`server hung up on option ${type}`) : err;
    }
    expect(rep.option === type, `reply names option ${rep.option}, sent ${type}`);
    if (rep.type === Rep.INFO && rep.data.length >= 2 && rep.data.readUInt16BE(0) === 0) {
      expect(rep.data.length === 12 && Number(rep.data.readBigUInt64BE(2)) === s.deviceSize, `NBD_INFO_EXPORT ${rep.data.toString('hex')}`);
      exportInfo = true;
      const flags = rep.data.readUInt16BE(10);
      // HAS_FLAGS always; READ_ONLY exactly when it is; DF only with structured replies.
      expect((flags & 1) === 1 && ((flags & 2) !== 0) === s.readOnly && ((flags & 0x80) === 0 || s.structured),
        `NBD_INFO_EXPORT flags 0x${flags.toString(16)} (read-only ${s.readOnly}, structured ${s.structured})`);
    }
    if (rep.type === Rep.SERVER) {
      expect(rep.data.length >= 4 && rep.data.readUInt32BE(0) <= rep.data.length - 4, `NBD_REP_SERVER ${rep.data.toString('hex').slice(0, 64)}`);
    }
    if (rep.type === Rep.INFO && rep.data.length >= 2 && rep.data.readUInt16BE(0) === 3) {
      expect(rep.data.length === 14 && rep.data.readUInt32BE(2) >= 1 && rep.data.readUInt32BE(10) <= MAX_REQUEST_SIZE, `NBD_INFO_BLOCK_SIZE ${rep.data.toString('hex')}`);
    }
    if (rep.type === Rep.META_CONTEXT) {
      expect(rep.data.length >= 4 && rep.data.length <= 4 + 4096, `META_CONTEXT reply of ${rep.data.length} bytes`);
      selected ||= rep.data.toString('utf8', 4) === 'base:allocation';
    }
    if (exp.intermediate.includes(rep.type)) continue;
    expect(exp.finals.includes(rep.type), `option ${type} got reply type 0x${rep.type.toString(16)}, expected one of ${exp.finals.map((t) => `0x${t.toString(16)}`).join(',')}`);
    // What SET_META_CONTEXT selected is what its replies named (the spec: one per context).
    if (type === Opt.SET_META && rep.type === Rep.ACK) s.baseAllocation = selected;
    // INFO and GO must describe the export (NBD_INFO_EXPORT) before they succeed.
    expect(!((type === Opt.INFO || type === Opt.GO) && rep.type === Rep.ACK) || exportInfo, `option ${type} acknowledged without NBD_INFO_EXPORT`);
    return rep;
  }
}

/**
 * Runs a random option sequence. Resolves with the negotiated state once the transmission
 * phase began, or undefined when the case ended in the handshake (abort, disconnect, a
 * hostile message the server must hang up on).
 */
export async function negotiate(conn: RawConn, r: Random, s: HandshakeState, log: string[], wantTransmission: boolean): Promise<Negotiated | undefined> {
  const g = await greet(conn, r, log);
  if (!g) return undefined;
  const count = r() < 0.3 ? 0 : int(r, 1, 6);
  for (let i = 0; i < count; i++) {
    const roll = r();
    if (roll < 0.7 || wantTransmission) {
      const o = validOption(r, s);
      log.push(`opt ${o.type} len ${o.data.length}`);
      conn.write(option(o.type, o.data));
      const rep = await replies(conn, o.type, o.expect, s);
      if (rep !== 'closed' && rep.type === Rep.ACK) o.apply?.();
      continue;
    }
    if (roll < 0.9) {
      if (await mutatedOption(conn, r, s, log)) return undefined;
      continue;
    }
    await fatalOption(conn, r, log);
    return undefined;
  }
  return finish(conn, r, s, g.noZeroes, log, wantTransmission);
}

/** A valid option with a few bytes of its type or data changed; true if the case ended. */
async function mutatedOption(conn: RawConn, r: Random, s: HandshakeState, log: string[]): Promise<boolean> {
  const base = r() < 0.5 ? { type: Opt.GO, data: infoData('', [int(r, 0, 3)]) } : validOption(r, s);
  const data = Buffer.from(base.data);
  let type = base.type;
  for (let k = int(r, 1, 3); k > 0; k--) {
    if (data.length === 0 || r() < 0.15) type = r() < 0.5 ? int(r, 0, 12) : int(r, 0, 0xffffffff);
    else data[int(r, 0, data.length - 1)] = int(r, 0, 255);
  }
  log.push(`mutated opt ${type} len ${data.length}`);
  conn.write(option(type, data));
  // EXPORT_NAME cannot report an error, ABORT ends: both may hang up. Anything else must answer.
  const exp: Expectation = {
    finals: [Rep.ACK, ...ANY_ERROR], intermediate: [Rep.SERVER, Rep.INFO, Rep.META_CONTEXT], mayClose: type === Opt.EXPORT_NAME || type === Opt.ABORT,
  };
  if (type === Opt.EXPORT_NAME && data.length === 0) return true; // it selected the export: transmission began
  const rep = await replies(conn, type, exp, s);
  // A mutated GO that still parsed begins the transmission phase; this case ends there.
  if (rep === 'closed' || type === Opt.ABORT || (type === Opt.GO && rep.type === Rep.ACK)) return true;
  if (type === Opt.STRUCTURED_REPLY && rep.type === Rep.ACK) s.structured = true;
  return false;
}

/** Bad magic, a huge length, a truncated message or a disconnect in the middle of one. */
async function fatalOption(conn: RawConn, r: Random, log: string[]): Promise<void> {
  const roll = r();
  if (roll < 0.25) {
    log.push('bad option magic');
    conn.write(Buffer.concat([bytes(r, 8), u32(Opt.LIST), u32(0)]));
    expect(await conn.closedWithin(REPLY_TIMEOUT_MS), 'server kept a connection after a bad option magic');
  } else if (roll < 0.5) {
    const length = int(r, MAX_OPTION_LENGTH + 1, 0xffffffff);
    log.push(`option length ${length}`);
    conn.write(Buffer.concat([u64(IHAVEOPT), u32(pick(r, [Opt.INFO, Opt.GO, Opt.LIST, 99])), u32(length), bytes(r, int(r, 0, 256))]));
    expect(await conn.closedWithin(REPLY_TIMEOUT_MS), `server kept a connection after an option of ${length} bytes`);
  } else {
    // Part of a valid message, then EOF or a reset: the server must just let go.
    const whole = option(Opt.GO, infoData('', [0, 1, 2, 3]));
    const cut = int(r, 1, whole.length - 1);
    log.push(`truncated option at ${cut}`);
    conn.write(whole.subarray(0, cut));
    conn.end(r() < 0.5);
  }
}

/** Ends the handshake: GO or EXPORT_NAME into transmission, ABORT, or a plain disconnect. */
async function finish(conn: RawConn, r: Random, s: HandshakeState, noZeroes: boolean, log: string[], wantTransmission: boolean): Promise<Negotiated | undefined> {
  const roll = wantTransmission ? r() * 0.8 : r();
  if (roll < 0.55) {
    log.push('GO');
    conn.write(option(Opt.GO, infoData('', r() < 0.5 ? [] : [3, 2])));
    await replies(conn, Opt.GO, { finals: [Rep.ACK], intermediate: [Rep.INFO], mayClose: false }, s);
    return { structured: s.structured, baseAllocation: s.baseAllocation };
  }
  if (roll < 0.8) {
    log.push(`EXPORT_NAME (no zeroes ${noZeroes})`);
    conn.write(option(Opt.EXPORT_NAME, Buffer.alloc(0)));
    const info = await conn.read(noZeroes ? 10 : 134, REPLY_TIMEOUT_MS);
    expect(Number(info.readBigUInt64BE(0)) === s.deviceSize, `EXPORT_NAME size ${info.readBigUInt64BE(0)}`);
    expect((info.readUInt16BE(8) & 1) === 1 && ((info.readUInt16BE(8) & 2) !== 0) === s.readOnly, `EXPORT_NAME flags 0x${info.readUInt16BE(8).toString(16)}`);
    if (!noZeroes) expect(info.subarray(10).every((b) => b === 0), 'EXPORT_NAME padding is not zeros');
    return { structured: s.structured, baseAllocation: s.baseAllocation };
  }
  if (roll < 0.9) {
    log.push('ABORT');
    conn.write(option(Opt.ABORT, Buffer.alloc(0)));
    // The ACK is optional for the server; the close is not.
    expect(await conn.closedWithin(REPLY_TIMEOUT_MS), 'server kept the connection after NBD_OPT_ABORT');
    return undefined;
  }
  log.push('disconnect in the handshake');
  conn.end(r() < 0.5);
  return undefined;
}

/**
 * Hostile cases that make the gateway hold memory during the handshake (options whose replies
 * are never read): a list of their own, so a run can leave them out (`hostile: false`,
 * S3NBD_FUZZ_HOSTILE=0) to tell a leak in the transmission phase from the handshake's bounds.
 */
export const HOSTILE_MEMORY_CASES: ReadonlyArray<{ name: string; run(conn: RawConn, r: Random): Promise<void> }> = [
  {
    // 16 MiB of NBD_OPT_INFO asking for every info, replies never read: the replies pile up.
    name: 'options-never-read',
    async run(conn, r) {
      const one = option(Opt.INFO, infoData('x'.repeat(4000), [0, 1, 2, 3]));
      const batch = Buffer.concat(Array.from({ length: 64 }, () => one));
      const g = await conn.read(18, REPLY_TIMEOUT_MS);
      expect(g.readBigUInt64BE(0) === NBDMAGIC, 'bad greeting');
      conn.write(u32(3));
      for (let sent = 0; sent < 16 * 2 ** 20 && !conn.isClosed; sent += batch.length) {
        conn.write(batch);
        await new Promise((resolve) => setImmediate(resolve));
      }
      await new Promise((resolve) => setTimeout(resolve, int(r, 100, 1000)));
      conn.end(true);
    },
  },
  {
    // INFO for the real export with the longest answer, 64 KiB of info requests each: every
    // option is small to send and the replies are never read.
    name: 'info-requests-never-read',
    async run(conn) {
      const one = option(Opt.INFO, infoData('', Array.from({ length: 32000 }, () => 2)));
      const g = await conn.read(18, REPLY_TIMEOUT_MS);
      expect(g.readBigUInt64BE(0) === NBDMAGIC, 'bad greeting');
      conn.write(u32(3));
      for (let i = 0; i < 256 && !conn.isClosed; i++) conn.write(one);
      await new Promise((resolve) => setTimeout(resolve, 500));
      conn.end(true);
    },
  },
];
