// A raw NBD connection for the protocol fuzzer: bytes in and out with no protocol state of its
// own, exact-length reads with a deadline, and encoders for the messages the fuzzer sends.
// Deliberately independent of src/protocol, so a codec bug there cannot hide itself here.

import net from 'node:net';

export const NBDMAGIC = 0x4e42444d41474943n;
export const IHAVEOPT = 0x49484156454f5054n;
export const OPTION_REPLY_MAGIC = 0x3e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;

export class Closed extends Error {}
export class TimedOut extends Error {}

export class RawConn {
  private readonly socket: net.Socket;
  private chunks: Buffer[] = [];
  private buffered = 0;
  private closed = false;
  private wake: (() => void) | undefined;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (d: Buffer) => {
      this.chunks.push(d);
      this.buffered += d.length;
      this.wake?.();
    });
    const end = (): void => {
      this.closed = true;
      this.wake?.();
    };
    socket.on('end', end);
    socket.on('close', end);
    // EPIPE/ECONNRESET after the server hung up: seen as a close by the reads.
    socket.on('error', end);
  }

  static connect(path: string, timeoutMs: number): Promise<RawConn> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(path);
      const timer = setTimeout(() => { socket.destroy(); reject(new TimedOut(`connect to ${path} took over ${timeoutMs} ms`)); }, timeoutMs);
      socket.once('connect', () => { clearTimeout(timer); resolve(new RawConn(socket)); });
      socket.once('error', (err) => { clearTimeout(timer); reject(err); });
    });
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /**
   * Trickle mode: messages leave in pieces (1-7 bytes, or up to 28 KiB of a long payload), one
   * per event-loop turn, so the server's reads see headers and payloads cut anywhere.
   */
  trickle = false;
  private queue: Buffer[] = [];
  private pumping = false;

  write(data: Buffer): void {
    if (this.closed || this.socket.destroyed) return;
    if (!this.trickle) {
      this.socket.write(data);
      return;
    }
    this.queue.push(data);
    if (!this.pumping) void this.pump();
  }

  private async pump(): Promise<void> {
    this.pumping = true;
    let step = 1;
    while (this.queue.length > 0 && !this.closed && !this.socket.destroyed) {
      const head = this.queue[0]!;
      step = (step * 5 + 3) % 7 + 1;
      // Bytes for headers; a long payload goes in pieces of up to 28 KiB, or it would take ages.
      const piece = head.length > 64 ? step * 4093 : step;
      this.socket.write(head.subarray(0, piece));
      if (piece >= head.length) this.queue.shift();
      else this.queue[0] = head.subarray(piece);
      await new Promise((resolve) => setImmediate(resolve));
    }
    this.pumping = false;
  }

  /** Exactly `n` bytes; Closed if the peer hung up first, TimedOut after `timeoutMs`. */
  async read(n: number, timeoutMs: number): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.buffered < n) {
      if (this.closed) throw new Closed(`connection closed with ${this.buffered} of ${n} bytes read`);
      const left = deadline - Date.now();
      if (left <= 0) throw new TimedOut(`no answer within ${timeoutMs} ms (${this.buffered} of ${n} bytes)`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => { clearTimeout(timer); resolve(); };
      });
      this.wake = undefined;
    }
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    this.chunks = all.length > n ? [all.subarray(n)] : [];
    this.buffered -= n;
    return all.subarray(0, n);
  }

  /** Resolves true once the peer has closed, false if it is still open after `timeoutMs`. */
  async closedWithin(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed && Date.now() < deadline) {
      // Drain whatever it still sends.
      this.chunks = [];
      this.buffered = 0;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(0, deadline - Date.now()));
        this.wake = () => { clearTimeout(timer); resolve(); };
      });
      this.wake = undefined;
    }
    return this.closed;
  }

  /** Half-close (the server may still answer), or close at once (a Unix socket has no RST). */
  end(abrupt: boolean): void {
    // A trickling message still queued is cut off here: that is one more truncation.
    this.queue = [];
    if (abrupt) this.socket.destroy();
    else this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }
}

export function u16(v: number): Buffer { const b = Buffer.alloc(2); b.writeUInt16BE(v & 0xffff); return b; }
export function u32(v: number): Buffer { const b = Buffer.alloc(4); b.writeUInt32BE(v >>> 0); return b; }
export function u64(v: bigint): Buffer { const b = Buffer.alloc(8); b.writeBigUInt64BE(BigInt.asUintN(64, v)); return b; }

export function option(type: number, data: Buffer, length = data.length): Buffer {
  return Buffer.concat([u64(IHAVEOPT), u32(type), u32(length), data]);
}

/** The data of INFO/GO: name, then the info types asked for. */
export function infoData(name: string, infos: readonly number[]): Buffer {
  const n = Buffer.from(name);
  return Buffer.concat([u32(n.length), n, u16(infos.length), ...infos.map(u16)]);
}

/** The data of LIST_META_CONTEXT / SET_META_CONTEXT. */
export function metaData(exportName: string, queries: readonly string[]): Buffer {
  const n = Buffer.from(exportName);
  return Buffer.concat([u32(n.length), n, u32(queries.length), ...queries.flatMap((q) => [u32(Buffer.byteLength(q)), Buffer.from(q)])]);
}

export function request(flags: number, type: number, handle: Buffer, offset: bigint, length: number): Buffer {
  return Buffer.concat([u32(REQUEST_MAGIC), u16(flags), u16(type), handle, u64(offset), u32(length)]);
}

export interface OptionReply { option: number; type: number; data: Buffer }

/** One option reply; throws on a bad magic or an absurd length (a server bug). */
export async function readOptionReply(conn: RawConn, timeoutMs: number): Promise<OptionReply> {
  const h = await conn.read(20, timeoutMs);
  if (h.readBigUInt64BE(0) !== OPTION_REPLY_MAGIC) throw new Error(`option reply with bad magic ${h.subarray(0, 8).toString('hex')}`);
  const length = h.readUInt32BE(16);
  if (length > 1 << 20) throw new Error(`option reply of ${length} bytes`);
  return { option: h.readUInt32BE(8), type: h.readUInt32BE(12), data: await conn.read(length, timeoutMs) };
}
