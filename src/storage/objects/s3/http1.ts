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
// in full): the connection is closed rather than read to the end. This file holds the
// connections; the response parser and those errors are in http1-response.ts.

import net from 'node:net';
import tls from 'node:tls';
import { hangUp, type Http1Response, ResponseParser } from './http1-response.ts';

export interface Http1Request {
  readonly method: string;
  /** Already URI-encoded, with the query if any. */
  readonly path: string;
  /** Sent exactly as given: the caller includes host, and content-length for a body. */
  readonly headers: Readonly<Record<string, string>>;
  /** The body's parts, sent one after the other. */
  readonly body?: readonly Buffer[] | undefined;
  /** The longest body a successful answer may have; default MAX_ERROR_BODY (an S3 PUT's answer has none). */
  readonly maxBody?: number | undefined;
}

/** What each connection reads into: large enough that a 1 MiB body takes a few reads. */
export const READ_BUFFER_BYTES = 128 * 1024;

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
      let writing = (request.body?.length ?? 0) > 0;
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
      const parts = request.body ?? [];
      parts.forEach((part, i) => {
        // Written in order: the last write's callback comes after every part is out, or with the error that stopped them.
        this.socket.write(part, i < parts.length - 1 ? undefined : (err) => {
          writing = false;
          if (answered !== undefined) this.free(this, answered && !err);
        });
      });
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

function abortError(signal: AbortSignal): Error {
  return Object.assign(new Error('the request was aborted', { cause: signal.reason }), { name: 'AbortError', code: 'ABORT_ERR' });
}
