// The transmission phase of one connection. Requests are read in a loop and dispatched without
// waiting for earlier ones, so many are in flight and replies leave in completion order. Each
// request is validated here, once (range, flags, read-only); the device below only sees valid
// calls. The bytes in flight (payloads held plus replies not yet handed to the kernel) are
// bounded per connection and across all of them (SharedBudget), so a fast client, or many, is
// slowed by TCP backpressure instead of growing our memory.

import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { LogThrottle } from '../log-throttle.ts';
import { noTelemetry, type VolumeTelemetry } from '../telemetry.ts';
import type { BlockDevice, ReadPiece } from './block-device.ts';
import {
  BASE_ALLOCATION_ID, CMD_FLAG_DF, CMD_FLAG_FAST_ZERO, CMD_FLAG_FUA, CMD_FLAG_NO_HOLE, CMD_FLAG_REQ_ONE, Cmd,
  MAX_REQUEST_SIZE, NbdErrno, REQUEST_HEADER_SIZE, STATE_HOLE, STATE_ZERO,
} from './constants.ts';
import { CommandError, ProtocolError, nbdErrnoOf } from './errors.ts';
import type { Negotiated } from './handshake.ts';
import { BufferPool, payloadPool } from './buffer-pool.ts';
import type { SocketReader } from './socket-reader.ts';
import {
  type Request, blockStatusChunk, decodeRequest, errorChunk, noneChunk, offsetDataHeader, offsetHoleChunk, simpleReply,
} from './wire.ts';

export interface SessionLimits {
  /** Bytes of request payloads and pending replies one connection may hold. */
  readonly maxInFlightBytes: number;
  /** Requests one connection may have in flight. */
  readonly maxInFlightRequests: number;
}

export const DEFAULT_SESSION_LIMITS: SessionLimits = {
  maxInFlightBytes: 64 * 1024 * 1024,
  maxInFlightRequests: 256,
};

/** What all connections together may hold of payloads and pending replies (server.ts shares one budget). */
export const DEFAULT_SERVER_IN_FLIGHT_BYTES = 256 * 1024 * 1024;

/**
 * Bytes in flight across every connection. The per-connection limit alone let N connections
 * hold N x 64 MiB (8 fio jobs: 512 MiB); this one is shared. Waiters are served in order, and
 * a request larger than the whole budget still runs once nothing else holds any of it.
 */
export class SharedBudget {
  readonly limit: number;
  private used = 0;
  private readonly waiters: Array<{ bytes: number; resolve(): void }> = [];

  constructor(limit: number) {
    this.limit = limit;
  }

  get inUse(): number {
    return this.used;
  }

  acquire(bytes: number): Promise<void> {
    if (this.waiters.length === 0 && this.fits(bytes)) {
      this.used += bytes;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiters.push({ bytes, resolve }));
  }

  release(bytes: number): void {
    this.used -= bytes;
    while (this.waiters.length > 0 && this.fits(this.waiters[0]!.bytes)) {
      const next = this.waiters.shift()!;
      this.used += next.bytes;
      next.resolve();
    }
  }

  private fits(bytes: number): boolean {
    return this.used === 0 || this.used + bytes <= this.limit;
  }
}

/**
 * A write's payload, read into a pooled buffer. It goes back to the pool only when the device
 * says it did not keep it (and never after a failed write, which may have kept some of it).
 */
interface Payload {
  readonly data: Buffer;
  recyclable: boolean;
}

/** Zeros sent in place of holes when the client cannot receive hole chunks. */
const ZEROS = Buffer.alloc(1024 * 1024);

/** Caps BLOCK_STATUS replies; clients ask again for the rest. */
const MAX_STATUS_DESCRIPTORS = 1024;

/** Counts bytes and requests in flight; `acquire` waits while the connection is over its limits. */
class InFlight {
  private bytes = 0;
  private requests = 0;
  private waiter: (() => void) | undefined;
  private idleWaiters: Array<() => void> = [];
  private readonly limits: SessionLimits;
  private readonly shared: SharedBudget | undefined;

  constructor(limits: SessionLimits, shared: SharedBudget | undefined) {
    this.limits = limits;
    this.shared = shared;
  }

  get count(): number {
    return this.requests;
  }

  async acquire(bytes: number): Promise<void> {
    // A request larger than the whole budget still runs, alone.
    while (this.requests > 0
      && (this.bytes + bytes > this.limits.maxInFlightBytes || this.requests >= this.limits.maxInFlightRequests)) {
      await new Promise<void>((resolve) => { this.waiter = resolve; });
    }
    this.bytes += bytes;
    this.requests += 1;
    // Zero-cost requests (flush, trim ...) hold nothing and need no share.
    if (bytes > 0) await this.shared?.acquire(bytes);
  }

  release(bytes: number): void {
    if (bytes > 0) this.shared?.release(bytes);
    this.bytes -= bytes;
    this.requests -= 1;
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.();
    if (this.requests === 0) {
      const idle = this.idleWaiters;
      this.idleWaiters = [];
      for (const resolve of idle) resolve();
    }
  }

  idle(): Promise<void> {
    if (this.requests === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }
}

/** Names for the metrics: the command as the NBD spec spells it, in lower case; errnos by name. */
const COMMAND_NAMES = new Map<number, string>(Object.entries(Cmd).map(([name, n]) => [n, name.toLowerCase()]));
const ERRNO_NAMES = new Map<number, string>(Object.entries(NbdErrno).map(([name, n]) => [n, name]));

export class Session {
  private readonly device: BlockDevice;
  private readonly inFlight: InFlight;
  private shuttingDown = false;
  private lastRequestAt = 0;
  /** Set while replies queued this turn wait for one writev (see send()). */
  private corked = false;
  private readonly socket: Socket;
  private readonly reader: SocketReader;
  private readonly negotiated: Negotiated;
  private readonly log: Logger;
  private readonly failedRequests: LogThrottle;
  private readonly telemetry: VolumeTelemetry;
  /** The device's size when this connection negotiated it. */
  private readonly size: number;

  /**
   * `failedRequests` carries the one line per interval for requests that fail with EIO (every
   * request fails while S3 is down or the disk is bad); the server shares one among sessions.
   */
  constructor(socket: Socket, reader: SocketReader, negotiated: Negotiated, log: Logger, limits: SessionLimits, shared?: SharedBudget,
    failedRequests = new LogThrottle(log, 'error', { intervalMs: 10_000 })) {
    this.socket = socket;
    this.reader = reader;
    this.negotiated = negotiated;
    this.log = log;
    this.failedRequests = failedRequests;
    this.device = negotiated.export.device;
    this.telemetry = negotiated.export.telemetry ?? noTelemetry;
    // NBD cannot tell a client that the export grew (a volume resized at runtime): requests are
    // checked against the size this connection negotiated, and a new connection sees the new one.
    this.size = this.device.size;
    this.inFlight = new InFlight(limits, shared);
  }

  /** From now on every new request is answered ESHUTDOWN; in-flight ones finish normally. */
  beginShutdown(): void {
    this.shuttingDown = true;
  }

  /** True when no request is in flight and none arrived in the last `ms` milliseconds. */
  quietFor(ms: number): boolean {
    return this.inFlight.count === 0 && Date.now() - this.lastRequestAt >= ms;
  }

  /** Serves requests until the client disconnects; throws ProtocolError on a malformed request. */
  async run(): Promise<void> {
    for (;;) {
      const req = decodeRequest(await this.reader.read(REQUEST_HEADER_SIZE));
      this.lastRequestAt = Date.now();
      if (req.type === Cmd.DISC) {
        await this.inFlight.idle();
        return;
      }
      if (req.type === Cmd.WRITE && req.length > MAX_REQUEST_SIZE) {
        // We cannot hold the payload, and skipping gigabytes is not worth it: end the session.
        throw new ProtocolError(`write of ${req.length} bytes exceeds the ${MAX_REQUEST_SIZE}-byte maximum`);
      }
      // A write's payload takes its pooled buffer's size (a power of two), not just its length.
      const cost = req.type === Cmd.WRITE ? BufferPool.footprint(req.length) : req.type === Cmd.READ ? Math.min(req.length, MAX_REQUEST_SIZE) : 0;
      await this.inFlight.acquire(cost);
      let payload: Payload | undefined;
      if (req.type === Cmd.WRITE && req.length > 0) {
        payload = { data: payloadPool.acquire(req.length), recyclable: false };
        await this.reader.readInto(payload.data);
      }
      void this.serve(req, payload, cost);
    }
  }

  private async serve(req: Request, payload: Payload | undefined, cost: number): Promise<void> {
    let reply: Buffer[];
    // Timed only for metrics: without them (no admin endpoint) a request costs nothing more.
    const started = this.telemetry === noTelemetry ? 0 : performance.now();
    let result = 'ok';
    try {
      this.validate(req);
      reply = await this.execute(req, payload);
    } catch (err) {
      result = ERRNO_NAMES.get(nbdErrnoOf(err)) ?? 'EIO';
      reply = this.errorReply(req, err);
    }
    if (started !== 0) {
      const moved = result === 'ok' && (req.type === Cmd.READ || req.type === Cmd.WRITE) ? req.length : 0;
      this.telemetry.nbdRequest(COMMAND_NAMES.get(req.type) ?? 'unknown', result, (performance.now() - started) / 1000, moved);
    }
    if (payload?.recyclable) payloadPool.release(payload.data);
    // The budget is returned once the reply has left our process, so it bounds queued output too.
    this.send(reply, () => this.inFlight.release(cost));
  }

  /** Checks a request against the spec and the negotiated flags; throws CommandError. */
  private validate(req: Request): void {
    if (this.shuttingDown) throw new CommandError('ESHUTDOWN', 'server is shutting down');
    const dev = this.device;
    const fua = dev.readOnly ? 0 : CMD_FLAG_FUA;
    const end = req.offset + req.length;
    const ranged = (allowed: number, outOfRange: 'EINVAL' | 'ENOSPC'): void => {
      if ((req.flags & ~allowed) !== 0) throw new CommandError('EINVAL', `unsupported flags 0x${req.flags.toString(16)}`);
      if (req.length === 0) throw new CommandError('EINVAL', 'zero-length request');
      if (end > this.size) throw new CommandError(outOfRange, `request [${req.offset}, ${end}) is beyond the ${this.size}-byte device`);
    };
    const writing = (): void => {
      if (dev.readOnly) throw new CommandError('EPERM', 'export is read-only');
    };
    switch (req.type) {
      case Cmd.READ:
        ranged(fua | (this.negotiated.structuredReplies ? CMD_FLAG_DF : 0), 'EINVAL');
        if (req.length > MAX_REQUEST_SIZE) throw new CommandError('EINVAL', `read larger than ${MAX_REQUEST_SIZE} bytes`);
        return;
      case Cmd.WRITE:
        writing();
        ranged(fua, 'ENOSPC');
        return;
      case Cmd.TRIM:
        writing();
        ranged(fua, 'ENOSPC');
        return;
      case Cmd.WRITE_ZEROES:
        writing();
        ranged(fua | CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO, 'ENOSPC');
        return;
      case Cmd.CACHE:
        ranged(fua, 'EINVAL');
        return;
      case Cmd.BLOCK_STATUS:
        if (!this.negotiated.baseAllocation) throw new CommandError('EINVAL', 'no metadata context was negotiated');
        ranged(fua | CMD_FLAG_REQ_ONE, 'EINVAL');
        return;
      case Cmd.FLUSH:
        if ((req.flags & ~fua) !== 0) throw new CommandError('EINVAL', `unsupported flags 0x${req.flags.toString(16)}`);
        if (req.offset !== 0 || req.length !== 0) throw new CommandError('EINVAL', 'flush takes no offset or length');
        return;
      default:
        throw new CommandError('EINVAL', `unknown command ${req.type}`);
    }
  }

  /** Runs a valid request and returns its reply. */
  private async execute(req: Request, payload: Payload | undefined): Promise<Buffer[]> {
    const dev = this.device;
    const fua = (req.flags & CMD_FLAG_FUA) !== 0;
    switch (req.type) {
      case Cmd.READ:
        return this.readReply(req, await dev.read(req.offset, req.length));
      case Cmd.WRITE:
        payload!.recyclable = !await dev.write(req.offset, payload!.data, fua);
        break;
      case Cmd.TRIM:
        await dev.trim(req.offset, req.length, fua);
        break;
      case Cmd.WRITE_ZEROES:
        // FAST_ZERO asks us to fail rather than be slower than writing zeros. Zeroing in s3nbd
        // never is: whole extents are dropped, partial ones cost one ordinary write.
        await dev.zero(req.offset, req.length, (req.flags & CMD_FLAG_NO_HOLE) === 0, fua);
        break;
      case Cmd.FLUSH:
        await dev.flush();
        break;
      case Cmd.CACHE:
        await dev.prefetch(req.offset, req.length);
        break;
      case Cmd.BLOCK_STATUS:
        return this.blockStatusReply(req);
    }
    return [this.negotiated.structuredReplies ? noneChunk(req.handle) : simpleReply(req.handle, 0)];
  }

  private readReply(req: Request, pieces: ReadPiece[]): Buffer[] {
    const h = req.handle;
    if (!this.negotiated.structuredReplies) {
      const out = [simpleReply(h, 0)];
      for (const p of pieces) pushData(out, p);
      return out;
    }
    if ((req.flags & CMD_FLAG_DF) !== 0 || pieces.length === 1 && pieces[0]!.data) {
      // One content chunk; holes inside it are sent as explicit zeros.
      const out = [offsetDataHeader(h, true, req.offset, req.length)];
      for (const p of pieces) pushData(out, p);
      return out;
    }
    const out: Buffer[] = [];
    for (let i = 0; i < pieces.length; i++) {
      const p = pieces[i]!;
      if (p.data) {
        out.push(offsetDataHeader(h, i === pieces.length - 1, p.offset, p.length), p.data);
        continue;
      }
      // Merge neighbouring holes into one chunk.
      let length = p.length;
      while (i + 1 < pieces.length && !pieces[i + 1]!.data && length + pieces[i + 1]!.length <= 0xffffffff) {
        length += pieces[++i]!.length;
      }
      out.push(offsetHoleChunk(h, i === pieces.length - 1, p.offset, length));
    }
    return out;
  }

  private async blockStatusReply(req: Request): Promise<Buffer[]> {
    const runs = await this.device.allocation(req.offset, req.length);
    const one = (req.flags & CMD_FLAG_REQ_ONE) !== 0;
    const descriptors: Array<[number, number]> = [];
    for (const run of runs) {
      descriptors.push([run.length, run.hole ? STATE_HOLE | STATE_ZERO : 0]);
      if (one || descriptors.length >= MAX_STATUS_DESCRIPTORS) break;
    }
    return [blockStatusChunk(req.handle, BASE_ALLOCATION_ID, descriptors)];
  }

  private errorReply(req: Request, err: unknown): Buffer[] {
    const errno = nbdErrnoOf(err);
    const message = err instanceof Error ? err.message : String(err);
    if (errno === NbdErrno.EIO) {
      // One line with the message and errno, not a stack per request: stacks at debug only.
      this.log.debug({ err, type: req.type, offset: req.offset, length: req.length }, 'request failed');
      this.failedRequests.write({ type: req.type, offset: req.offset, length: req.length, errno: errnoNameOf(err), error: message }, 'request failed');
    } else this.log.debug({ errno, type: req.type, offset: req.offset, length: req.length, message }, 'request refused');
    return [this.negotiated.structuredReplies ? errorChunk(req.handle, errno, message) : simpleReply(req.handle, errno)];
  }

  /**
   * Queues one reply; its buffers stay together, so replies of concurrent requests never
   * interleave. Every reply queued in one turn of the event loop leaves in a single writev:
   * the socket is corked at the first and uncorked once the turn's microtasks have run (a
   * writev per reply cost a third of the CPU of 4 KiB random writes). `sent` is called once
   * the reply has left our process (or the socket is gone).
   */
  private send(buffers: Buffer[], sent: () => void): void {
    if (this.socket.destroyed) {
      sent();
      return;
    }
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(this.uncork);
    }
    const last = buffers.length - 1;
    for (let i = 0; i < last; i++) this.socket.write(buffers[i]!);
    this.socket.write(buffers[last]!, () => sent());
  }

  private readonly uncork = (): void => {
    this.corked = false;
    this.socket.uncork();
  };
}

function pushData(out: Buffer[], piece: ReadPiece): void {
  if (piece.data) {
    out.push(piece.data);
    return;
  }
  for (let left = piece.length; left > 0; left -= ZEROS.length) out.push(ZEROS.subarray(0, Math.min(left, ZEROS.length)));
}

/** The POSIX name the storage layers put on their errors ('EIO', 'ENOSPC'), if any. */
function errnoNameOf(err: unknown): string | undefined {
  const e = err as { errno?: unknown; code?: unknown } | undefined;
  return typeof e?.errno === 'string' ? e.errno : typeof e?.code === 'string' ? e.code : undefined;
}
