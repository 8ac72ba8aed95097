// A small HTTP/1.1 client for the direct S3 path (s3-direct.ts): keep-alive connections, one
// request at a time on each, responses parsed here and read whole into one buffer.
//
// Why not node:http: it hands a body over as a stream, with a parser callback, an event and a
// freshly allocated buffer for every socket read of up to 64 KiB. Here each connection reads
// the head into one buffer of its own (net's `onread` option), and a successful body with a
// Content-Length straight into the buffer it is returned in (onread's buffer given by a
// function, asked again after every read): no copy of the body in JavaScript, and a read as
// large as what the socket holds. Other bodies are copied out of the connection's buffer.
// 1024 GETs of 1 MiB from a local MinIO, 16 in flight
// (bench/s3-raw.ts get, 2 runs each): through node:http 1.38-1.43 CPU-s in 1.34-1.39 s, through
// this client 0.70-0.76 CPU-s in 0.81-1.29 s; a cold 1 GiB read through the gateway took
// 1.0-1.3 CPU-s in 1.5-1.8 s, against 1.8-2.5 CPU-s in 2.2-2.9 s before.
//
// What it speaks: requests whose headers the caller gives in full (a body needs its
// content-length among them); responses delimited by Content-Length, chunked encoding or the
// end of the connection; 1xx responses are skipped. Not: pipelining, Expect: 100-continue,
// upgrades. Errors carry the codes the store classifies: a connection that ends before its
// answer is ECONNRESET, a body cut short is ERR_STREAM_PREMATURE_CLOSE (both retried), a
// successful body longer than the request's `maxBody` is ERR_BODY_TOO_LARGE, thrown before any
// of it is allocated or kept (a Content-Length of 4 GB for a 1 MiB extent used to be allocated
// in full): the connection is closed rather than read to the end.

import net from 'node:net';
import tls from 'node:tls';

export interface Http1Request {
  readonly method: string;
  /** Already URI-encoded, with the query if any. */
  readonly path: string;
  /** Sent exactly as given: the caller includes host, and content-length for a body. */
  readonly headers: Readonly<Record<string, string>>;
  readonly body?: Buffer | undefined;
  /** The longest body a successful answer may have; default MAX_ERROR_BODY (an S3 PUT's answer has none). */
  readonly maxBody?: number | undefined;
}

export interface Http1Response {
  readonly status: number;
  /** Names in lower case; a repeated header keeps its last value. */
  readonly headers: ReadonlyMap<string, string>;
  /** The whole body; for an answer other than 2xx, at most its first MAX_ERROR_BODY bytes. */
  readonly body: Buffer;
}

/** What each connection reads into: large enough that a 1 MiB body takes a few reads. */
export const READ_BUFFER_BYTES = 128 * 1024;
/** A status line and headers longer than this are not HTTP we want to talk to. */
const MAX_HEAD_BYTES = 64 * 1024;
/** Error answers are small documents; past this their body is read but not kept. */
export const MAX_ERROR_BODY = 64 * 1024;

/** Where connections go; `tls` is set for https. */
interface Target {
  readonly host: string;
  readonly port: number;
  readonly tls: tls.ConnectionOptions | undefined;
}

export class Http1Client {
  private readonly target: Target;
  private readonly maxConnections: number;
  private readonly open = new Set<Connection>();
  /** Open connections waiting for a request, most recently used last. */
  private readonly idle: Connection[] = [];
  /** Requests waiting for a connection (all `maxConnections` are busy). */
  private readonly waiting = new Set<() => void>();
  private closed = false;

  /** `tlsOptions` add to the defaults for https (which trust the system's CAs and NODE_EXTRA_CA_CERTS). */
  constructor(endpoint: URL, maxConnections: number, tlsOptions: tls.ConnectionOptions = {}) {
    const secure = endpoint.protocol === 'https:';
    const host = bareHost(endpoint);
    this.target = {
      host,
      port: Number(endpoint.port || (secure ? 443 : 80)),
      tls: secure ? { ...net.isIP(host) ? {} : { servername: host }, ...tlsOptions } : undefined,
    };
    this.maxConnections = maxConnections;
  }

  async request(request: Http1Request, signal: AbortSignal): Promise<Http1Response> {
    const head = requestHead(request);
    const connection = await this.acquire(signal);
    return connection.exchange(head, request, signal);
  }

  /** Closes idle connections and every later one as it finishes. */
  close(): void {
    this.closed = true;
    for (const connection of this.idle.splice(0)) connection.destroy();
  }

  private async acquire(signal: AbortSignal): Promise<Connection> {
    for (;;) {
      if (signal.aborted) throw abortError(signal);
      if (this.closed) throw new Error('the HTTP client was closed');
      const reused = this.idle.pop();
      if (reused) return reused;
      if (this.open.size < this.maxConnections) {
        const connection = new Connection(this.target, (c, reusable) => this.release(c, reusable));
        this.open.add(connection);
        return connection;
      }
      await new Promise<void>((resolve, reject) => {
        const wake = (): void => {
          signal.removeEventListener('abort', onAbort);
          resolve();
        };
        const onAbort = (): void => {
          this.waiting.delete(wake);
          reject(abortError(signal));
        };
        this.waiting.add(wake);
        signal.addEventListener('abort', onAbort, { once: true });
      });
    }
  }

  /** Called when an exchange is over, and when an idle connection closes. */
  private release(connection: Connection, reusable: boolean): void {
    const at = this.idle.indexOf(connection);
    if (at >= 0) this.idle.splice(at, 1);
    if (reusable && !this.closed && !connection.destroyed) {
      this.idle.push(connection);
    } else {
      this.open.delete(connection);
      connection.destroy();
    }
    const [next] = this.waiting;
    if (next) {
      this.waiting.delete(next);
      next();
    }
  }
}

/** What a connection tells the exchange in flight. */
interface Exchange {
  /** Bytes read into the connection's buffer (reused once this returns). */
  bytes(data: Buffer): void;
  /** Where the next bytes may be read to directly (ResponseParser.bodyWindow()). */
  window(): Buffer | undefined;
  /** `n` bytes were read to the start of the last window. */
  inPlace(n: number): void;
  end(err: Error | undefined): void;
}

/** One keep-alive connection; `free` hears when it can take the next request, or not. */
class Connection {
  private readonly socket: net.Socket;
  private readonly free: (connection: Connection, reusable: boolean) => void;
  /** The exchange in flight; bytes or an end without one close the connection. */
  private current: Exchange | undefined;
  destroyed = false;

  constructor(target: Target, free: (connection: Connection, reusable: boolean) => void) {
    this.free = free;
    const readBuffer = Buffer.allocUnsafe(READ_BUFFER_BYTES);
    const options = {
      host: target.host, port: target.port, noDelay: true,
      onread: {
        // Where the next read goes: the rest of the body being read, or else readBuffer, which
        // the read after reuses (bytes() copies what it keeps before returning). Never more
        // than the rest of that body, so a read cannot spill into what follows it.
        buffer: (): Buffer => this.current?.window() ?? readBuffer,
        callback: (n: number, into: Uint8Array): boolean => {
          if (into === readBuffer) this.bytes(readBuffer.subarray(0, n));
          else if (this.current) this.current.inPlace(n);
          else this.ended(undefined); // cannot happen: a window is only given to the exchange in flight
          return true;
        },
      },
    };
    this.socket = target.tls ? tls.connect({ ...options, ...target.tls }) : net.connect(options);
    this.socket.on('error', (err) => this.ended(err));
    this.socket.on('close', () => this.ended(undefined));
  }

  exchange(head: string, request: Http1Request, signal: AbortSignal): Promise<Http1Response> {
    return new Promise((resolve, reject) => {
      const parser = new ResponseParser(request.method, request.maxBody);
      let writing = request.body !== undefined;
      let answered: boolean | undefined; // set with the answer: whether the connection can be reused
      const settle = (err: Error | undefined, reusable: boolean): void => {
        this.current = undefined;
        signal.removeEventListener('abort', onAbort);
        if (err) {
          this.destroy();
          this.free(this, false);
          reject(err);
          return;
        }
        resolve(parser.response());
        // A server may answer before it has read the whole body: reuse only after our write ended.
        answered = reusable;
        if (!writing) this.free(this, reusable);
      };
      const onAbort = (): void => settle(abortError(signal), false);
      // An abort that came after acquire() checked, before the listener below: it would
      // otherwise go unheard, and a server that never answers would hold the request forever.
      if (signal.aborted) {
        onAbort();
        return;
      }
      this.current = {
        bytes: (data) => {
          let complete: boolean;
          try {
            complete = parser.push(data);
          } catch (err) {
            settle(err as Error, false);
            return;
          }
          if (complete) settle(undefined, parser.keepAlive && parser.leftover === 0);
        },
        window: () => parser.bodyWindow(),
        inPlace: (n) => {
          if (parser.receivedInPlace(n)) settle(undefined, parser.keepAlive);
        },
        end: (err) => {
          if (!err && parser.end()) settle(undefined, false);
          else settle(err ?? (parser.started ? parser.prematureEnd() : hangUp()), false);
        },
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.socket.cork();
      this.socket.write(head, 'latin1');
      if (request.body) {
        this.socket.write(request.body, (err) => {
          writing = false;
          if (answered !== undefined) this.free(this, answered && !err);
        });
      }
      this.socket.uncork();
    });
  }

  destroy(): void {
    this.destroyed = true;
    this.socket.destroy();
  }

  private bytes(data: Buffer): void {
    if (this.current) this.current.bytes(data);
    else this.ended(undefined); // nothing was asked: not a conversation to continue
  }

  private ended(err: Error | undefined): void {
    const current = this.current;
    if (current) {
      current.end(err);
    } else if (!this.destroyed) {
      this.destroy();
      this.free(this, false); // an idle connection the server closed
    }
  }
}

/** The URL's host name as a socket wants it: an IPv6 address without its brackets ([::1] -> ::1). */
export function bareHost(url: URL): string {
  return url.hostname.replace(/^\[(.*)\]$/, '$1');
}

/** `METHOD path HTTP/1.1` and the headers, refusing anything that would split the request. */
function requestHead(request: Http1Request): string {
  const splits = /[\0\r\n]/;
  if (!/^[A-Z]+$/.test(request.method) || /[\0\s]/.test(request.path)) throw new Error(`bad HTTP request line: ${request.method} ${request.path}`);
  let head = `${request.method} ${request.path} HTTP/1.1\r\n`;
  for (const [name, value] of Object.entries(request.headers)) {
    if (splits.test(name) || splits.test(value) || name.includes(':')) throw new Error(`bad HTTP header: ${name}`);
    head += `${name}: ${value}\r\n`;
  }
  return `${head}\r\n`;
}

function hangUp(): Error {
  return Object.assign(new Error('the connection closed before an answer came'), { code: 'ECONNRESET' });
}

function abortError(signal: AbortSignal): Error {
  return Object.assign(new Error('the request was aborted', { cause: signal.reason }), { name: 'AbortError', code: 'ABORT_ERR' });
}

function parseError(message: string): Error {
  return Object.assign(new Error(`unreadable HTTP answer: ${message}`), { code: 'ERR_HTTP_PARSE' });
}

/** A successful body longer than was asked for: a broken or hostile server; retryable, as a cut one is. */
export function bodyTooLarge(length: number, maxBody: number): Error {
  return Object.assign(new Error(`the body is longer than the ${maxBody} bytes asked for (${length} bytes or more)`), { code: 'ERR_BODY_TOO_LARGE' });
}

/** A body that ended before its length: retryable, as a connection reset is. */
export function prematureEnd(received: number, length: number | undefined): Error {
  const expected = length === undefined ? 'before its last chunk' : `after ${received} of ${length} bytes`;
  return Object.assign(new Error(`the body ended ${expected}`), { code: 'ERR_STREAM_PREMATURE_CLOSE' });
}

type BodyMode = 'none' | 'length' | 'chunk-size' | 'chunk-data' | 'chunk-end' | 'trailers' | 'until-close';

/**
 * Parses one response from the bytes given to push(), split anywhere. Copies what it keeps,
 * so the caller may reuse its buffers.
 */
export class ResponseParser {
  private readonly method: string;
  private readonly maxBody: number;
  private status = 0;
  private readonly headers = new Map<string, string>();
  /** The head so far, while it spans several pushes. */
  private partialHead: Buffer | undefined;
  private inHead = true;
  private mode: BodyMode = 'none';
  /** For 'length': the body, and how much of it arrived. */
  private body: Buffer | undefined;
  private received = 0;
  private expected: number | undefined;
  /** For chunked and close-delimited bodies: the pieces, and the line being read. */
  private readonly pieces: Buffer[] = [];
  private line = '';
  /** Bytes of the chunk being read that are still to come. */
  private chunkLeft = 0;
  /** Bytes past the response's end (a server that talks out of turn). */
  leftover = 0;
  keepAlive = true;
  /** True once any byte of the response arrived. */
  started = false;
  private complete = false;

  constructor(method: string, maxBody = MAX_ERROR_BODY) {
    this.method = method;
    this.maxBody = maxBody;
  }

  /** Takes the next bytes; true when the response is complete. */
  push(data: Buffer): boolean {
    if (data.length > 0) this.started = true;
    let at = 0;
    while (at < data.length && !this.complete) {
      at = this.inHead ? this.readHead(data, at) : this.readBody(data, at);
    }
    this.leftover += data.length - at;
    return this.complete;
  }

  /**
   * Where the next bytes of the body may go without push(), for a socket that reads straight
   * into it: the rest of a successful Content-Length body, or undefined when they must be
   * pushed (the head, other bodies, an error's body that is kept only in part, the end).
   */
  bodyWindow(): Buffer | undefined {
    if (this.inHead || this.complete || this.mode !== 'length' || this.status >= 300) return undefined;
    return this.body!.subarray(this.received, this.expected);
  }

  /** `n` bytes were read to the start of bodyWindow(); true when the response is complete. */
  receivedInPlace(n: number): boolean {
    this.received += n;
    if (this.received === this.expected) this.complete = true;
    return this.complete;
  }

  /** The connection ended: true if that completes the response (a close-delimited body). */
  end(): boolean {
    if (!this.complete && !this.inHead && this.mode === 'until-close') this.complete = true;
    return this.complete;
  }

  prematureEnd(): Error {
    return this.inHead ? hangUp() : prematureEnd(this.received, this.mode === 'length' ? this.expected : undefined);
  }

  response(): Http1Response {
    const body = this.body ?? (this.pieces.length === 1 ? this.pieces[0]! : Buffer.concat(this.pieces));
    return { status: this.status, headers: this.headers, body };
  }

  private readHead(data: Buffer, at: number): number {
    const bytes = this.partialHead ? Buffer.concat([this.partialHead, data.subarray(at)]) : data.subarray(at);
    const searchFrom = this.partialHead ? Math.max(0, this.partialHead.length - 3) : 0;
    const end = bytes.indexOf('\r\n\r\n', searchFrom, 'latin1');
    if (end < 0) {
      if (bytes.length > MAX_HEAD_BYTES) throw parseError(`the head is longer than ${MAX_HEAD_BYTES} bytes`);
      this.partialHead = Buffer.from(bytes); // a copy: `data` is reused
      return data.length;
    }
    const used = end + 4 - (this.partialHead?.length ?? 0);
    this.partialHead = undefined;
    this.parseHead(bytes.toString('latin1', 0, end));
    return at + used;
  }

  private parseHead(text: string): void {
    const [statusLine = '', ...lines] = text.split('\r\n');
    const match = /^HTTP\/1\.([01]) (\d{3})(?: |$)/.exec(statusLine);
    if (!match) throw parseError(`the status line is "${statusLine.slice(0, 100)}"`);
    this.status = Number(match[2]);
    this.headers.clear();
    for (const line of lines) {
      const colon = line.indexOf(':');
      if (colon <= 0) throw parseError(`a header line is "${line.slice(0, 100)}"`);
      this.headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
    }
    if (this.status >= 100 && this.status < 200) return; // informational: the real head follows
    this.inHead = false;
    const connection = this.headers.get('connection')?.toLowerCase() ?? '';
    this.keepAlive = match[1] === '1' ? !connection.includes('close') : connection.includes('keep-alive');
    const length = this.headers.get('content-length');
    const chunked = /chunked/i.test(this.headers.get('transfer-encoding') ?? '');
    if (this.method === 'HEAD' || this.status === 204 || this.status === 304) {
      this.complete = true;
    } else if (chunked) {
      this.mode = 'chunk-size';
    } else if (length !== undefined) {
      if (!/^\d{1,15}$/.test(length)) throw parseError(`Content-Length is "${length.slice(0, 30)}"`);
      this.expected = Number(length);
      if (this.status < 300 && this.expected > this.maxBody) throw bodyTooLarge(this.expected, this.maxBody);
      this.mode = 'length';
      this.body = Buffer.allocUnsafe(this.keeps(this.expected));
      if (this.expected === 0) this.complete = true;
    } else {
      this.mode = 'until-close';
      this.keepAlive = false;
    }
  }

  /** How many of `n` more body bytes to keep: all for a success, a bounded start of an error. */
  private keeps(n: number): number {
    if (this.status < 300) return n;
    return Math.max(0, Math.min(n, MAX_ERROR_BODY - this.received));
  }

  private readBody(data: Buffer, at: number): number {
    switch (this.mode) {
      case 'length': {
        const n = Math.min(data.length - at, this.expected! - this.received);
        if (this.received < this.body!.length) data.copy(this.body!, this.received, at, at + n);
        this.received += n;
        if (this.received === this.expected) this.complete = true;
        return at + n;
      }
      case 'until-close':
      case 'chunk-data': {
        const n = this.mode === 'chunk-data' ? Math.min(data.length - at, this.chunkLeft) : data.length - at;
        if (this.status < 300 && this.received + n > this.maxBody) throw bodyTooLarge(this.received + n, this.maxBody);
        const kept = this.keeps(n);
        if (kept > 0) this.pieces.push(Buffer.from(data.subarray(at, at + kept)));
        this.received += n;
        this.chunkLeft -= n;
        if (this.mode === 'chunk-data' && this.chunkLeft === 0) this.mode = 'chunk-end';
        return at + n;
      }
      default:
        return this.readChunkLine(data, at);
    }
  }

  /** The lines around chunked data: sizes, the CRLF after each chunk, the trailers. */
  private readChunkLine(data: Buffer, at: number): number {
    const eol = data.indexOf(10, at); // \n
    this.line += data.toString('latin1', at, eol < 0 ? data.length : eol + 1);
    if (this.line.length > 4096) throw parseError('a chunk line is too long');
    if (eol < 0) return data.length;
    const line = this.line.replace(/\r?\n$/, '');
    this.line = '';
    if (this.mode === 'chunk-end') {
      if (line !== '') throw parseError('a chunk does not end with CRLF');
      this.mode = 'chunk-size';
    } else if (this.mode === 'chunk-size') {
      const size = /^([0-9a-fA-F]{1,12})\s*(;.*)?$/.exec(line);
      if (!size) throw parseError(`a chunk size is "${line.slice(0, 30)}"`);
      this.chunkLeft = parseInt(size[1]!, 16);
      this.mode = this.chunkLeft === 0 ? 'trailers' : 'chunk-data';
    } else if (line === '') {
      this.complete = true; // the empty line after the trailers
    }
    return eol + 1;
  }
}
