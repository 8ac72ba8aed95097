// The response side of http1.ts: ResponseParser reads one HTTP/1.1 answer from bytes split
// anywhere (Content-Length, chunked, or until the connection closes; 1xx skipped), with the
// limits and the errors, in the codes the store classifies, that a broken or hostile server earns.

export interface Http1Response {
  readonly status: number;
  /** Names in lower case; a repeated header keeps its last value. */
  readonly headers: ReadonlyMap<string, string>;
  /** The whole body; for an answer other than 2xx, at most its first MAX_ERROR_BODY bytes. */
  readonly body: Buffer;
}

/** A status line and headers longer than this are not HTTP we want to talk to. */
const MAX_HEAD_BYTES = 64 * 1024;
/** Error answers are small documents; past this their body is read but not kept. */
export const MAX_ERROR_BODY = 64 * 1024;

export function hangUp(): Error {
  return Object.assign(new Error('the connection closed before an answer came'), { code: 'ECONNRESET' });
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
