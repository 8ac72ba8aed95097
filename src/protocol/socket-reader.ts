// Reads exact byte counts from a socket. The socket is paused while unread data exceeds a
// high-water mark and nobody is waiting, so a client that sends faster than requests are
// taken (because the session is at its in-flight limit) is held back by TCP, not by our memory.
// On a socket with in-place reads (in-place-socket.ts) a fill that has nothing buffered
// before it is read by the socket straight into its target; other bytes arrive as chunks.

import type { Socket } from 'node:net';
import { type ReadSink, setReadSink } from './in-place-socket.ts';

/** The peer closed the connection (or it failed) while we waited for bytes. */
export class ConnectionClosed extends Error {
  override readonly name = 'ConnectionClosed';
}

interface PendingRead {
  readonly length: number;
  resolve(data: Buffer): void;
  reject(err: Error): void;
}

interface PendingFill {
  readonly target: Buffer;
  filled: number;
  resolve(): void;
  reject(err: Error): void;
}

/** Unread bytes beyond which the socket is paused while no read waits. */
export const READER_HIGH_WATER_MARK = 4 * 1024 * 1024;

export class SocketReader implements ReadSink {
  /** Bytes the socket read straight into a fill's target (none without in-place reads). */
  bytesInPlace = 0;
  private readonly chunks: Buffer[] = [];
  private buffered = 0;
  private pending: PendingRead | undefined;
  private filling: PendingFill | undefined;
  private closed: Error | undefined;
  private readonly socket: Socket;
  private _highWaterMark: number;

  // Kept so that detach() can remove them.
  private readonly onDataEvent = (chunk: Buffer): void => this.received(chunk);
  private readonly onEndEvent = (): void => this.onClose(new ConnectionClosed('client closed the connection'));
  private readonly onCloseEvent = (): void => this.onClose(new ConnectionClosed('connection closed'));
  private readonly onErrorEvent = (err: Error): void => this.onClose(new ConnectionClosed(`connection failed: ${err.message}`));

  constructor(socket: Socket, highWaterMark = READER_HIGH_WATER_MARK) {
    this.socket = socket;
    this._highWaterMark = highWaterMark;
    // A socket with in-place reads never emits 'data': its bytes come through the ReadSink
    // methods below.
    socket.on('data', this.onDataEvent).on('end', this.onEndEvent).on('close', this.onCloseEvent).on('error', this.onErrorEvent);
    setReadSink(socket, this);
  }

  /**
   * Stops reading: the socket is paused and left to its next owner (a TLS layer after
   * NBD_OPT_STARTTLS), which finds in the socket's own buffer whatever arrives from now on.
   * Returns how many bytes had been received and not read: bytes the client sent too early.
   */
  detach(): number {
    if (this.pending || this.filling) throw new Error('SocketReader: detach() while a read waits');
    this.socket.pause();
    setReadSink(this.socket, undefined);
    this.socket.off('data', this.onDataEvent).off('end', this.onEndEvent).off('close', this.onCloseEvent).off('error', this.onErrorEvent);
    this.closed ??= new ConnectionClosed('the connection was handed on');
    return this.buffered;
  }

  /** Bytes received and not yet read. */
  get bufferedBytes(): number {
    return this.buffered;
  }

  get highWaterMark(): number {
    return this._highWaterMark;
  }

  /** Changes the high-water mark: small during the handshake, whose options are small too. */
  setHighWaterMark(bytes: number): void {
    this._highWaterMark = bytes;
    this.resumeIfLow();
  }

  /** Fills `target` completely from the stream (copying, as data arrives). */
  readInto(target: Buffer): Promise<void> {
    if (this.pending || this.filling) throw new Error('SocketReader: only one read may wait at a time');
    const fill: PendingFill = { target, filled: 0, resolve: () => undefined, reject: () => undefined };
    this.drainInto(fill);
    if (fill.filled === target.length) {
      this.resumeIfLow();
      return Promise.resolve();
    }
    if (this.closed) return Promise.reject(this.closed);
    return new Promise<void>((resolve, reject) => {
      fill.resolve = resolve;
      fill.reject = reject;
      this.filling = fill;
      this.socket.resume();
    });
  }

  /** Resolves with exactly `length` bytes, or rejects with ConnectionClosed. */
  read(length: number): Promise<Buffer> {
    if (this.pending || this.filling) throw new Error('SocketReader: only one read may wait at a time');
    if (this.buffered >= length) {
      const data = this.take(length);
      this.resumeIfLow();
      return Promise.resolve(data);
    }
    if (this.closed) return Promise.reject(this.closed);
    return new Promise<Buffer>((resolve, reject) => {
      this.pending = { length, resolve, reject };
      this.socket.resume();
    });
  }

  /** ReadSink: the rest of the fill's target (a fill waits only once every buffered byte is in it). */
  window(): Buffer | undefined {
    const fill = this.filling;
    return fill?.target.subarray(fill.filled);
  }

  /** ReadSink: the socket read `n` bytes into the window. */
  filledInPlace(n: number): void {
    const fill = this.filling!;
    fill.filled += n;
    this.bytesInPlace += n;
    if (fill.filled === fill.target.length) {
      this.filling = undefined;
      fill.resolve();
    }
  }

  /** Bytes that were not read in place: a 'data' event's, or the ReadSink's slab's. */
  received(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const filling = this.filling;
    if (filling) {
      this.drainInto(filling);
      if (filling.filled === filling.target.length) {
        this.filling = undefined;
        filling.resolve();
      }
      return;
    }
    const pending = this.pending;
    if (pending && this.buffered >= pending.length) {
      this.pending = undefined;
      pending.resolve(this.take(pending.length));
    }
    if (!this.pending && this.buffered >= this._highWaterMark) this.socket.pause();
  }

  private onClose(err: Error): void {
    this.closed ??= err;
    const pending = this.pending;
    const filling = this.filling;
    this.pending = undefined;
    this.filling = undefined;
    pending?.reject(this.closed);
    filling?.reject(this.closed);
  }

  /** Moves buffered bytes into the fill's target, as many as it still needs. */
  private drainInto(fill: PendingFill): void {
    while (fill.filled < fill.target.length && this.chunks.length > 0) {
      const chunk = this.chunks[0]!;
      const n = Math.min(chunk.length, fill.target.length - fill.filled);
      chunk.copy(fill.target, fill.filled, 0, n);
      fill.filled += n;
      this.buffered -= n;
      if (n === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(n);
    }
  }

  private resumeIfLow(): void {
    if (this.buffered < this._highWaterMark && this.socket.isPaused() && !this.closed) this.socket.resume();
  }

  /** Removes `length` bytes from the front; zero-copy when they sit in one chunk. */
  private take(length: number): Buffer {
    this.buffered -= length;
    const first = this.chunks[0];
    if (first !== undefined && first.length >= length) {
      if (first.length === length) this.chunks.shift();
      else this.chunks[0] = first.subarray(length);
      return first.subarray(0, length);
    }
    const out = Buffer.allocUnsafe(length);
    let filled = 0;
    while (filled < length) {
      const chunk = this.chunks[0]!;
      const n = Math.min(chunk.length, length - filled);
      chunk.copy(out, filled, 0, n);
      filled += n;
      if (n === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(n);
    }
    return out;
  }
}
