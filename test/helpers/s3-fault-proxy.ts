// An HTTP proxy in front of a real S3 server, for tests of how the S3 client copes with a
// misbehaving one. It forwards requests unchanged (the Host header included, so SigV4
// signatures made for the proxy's address still verify), streams bodies both ways, counts
// requests by kind, and injects the faults it is told to: S3 error replies, delays,
// connection resets, answers cut short or corrupted, and the ways a server can hold a client
// without failing: a request held unanswered (a stall), a body sent a few bytes a second (a
// trickle), and a body or Content-Length larger than the object asked for. Or it strips
// headers, as a server that ignores them would, or refuses writes without a checksum header, as
// AWS does in a bucket with Object Lock. Only path-style requests
// (http://proxy/BUCKET/KEY) are classified.

import { Agent, createServer, type IncomingMessage, request, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { sigV4Authorization } from '../../src/storage/objects/s3/s3-direct.ts';

export type RequestKind = 'GET object' | 'HEAD object' | 'PUT object' | 'DELETE object' | 'DELETE objects' | 'LIST' | 'other';

export interface ProxiedRequest {
  readonly method: string;
  /** The path and query as sent, e.g. /bucket/prefix/key?x-id=PutObject. */
  readonly url: string;
  readonly bucket: string;
  /** The object key ('' for bucket-level requests). */
  readonly key: string;
  readonly kind: RequestKind;
  /** Its User-Agent header ('' if none). */
  readonly userAgent: string;
  /** The fault applied to it, if any; 'no checksum' when requireChecksums() refused it. */
  fault?: Fault['kind'] | 'no checksum';
}

export type Match = (request: ProxiedRequest) => boolean;

export interface S3FaultProxy {
  /** http://127.0.0.1:PORT: give this to the client instead of the server's endpoint. */
  readonly endpoint: string;
  /** Every request received, in order. */
  readonly requests: readonly ProxiedRequest[];
  /** Requests received of this kind, faulted ones included. */
  count(kind: RequestKind): number;
  /** Answers the next `times` matching requests with an S3 error, e.g. (3, 503, 'SlowDown'). */
  failNext(times: number, status: number, code: string, match?: Match): void;
  /** Holds the next `times` matching requests for `ms` before forwarding them. */
  delayNext(times: number, ms: number, match?: Match): void;
  /** Answers the next `times` matching requests with this status and XML body, e.g. a DeleteResult listing errors. */
  replyNext(times: number, status: number, body: string, match?: Match): void;
  /** Resets (TCP RST) the connection of the next `times` matching requests, unanswered. */
  resetNext(times: number, match?: Match): void;
  /**
   * Forwards the next `times` matching requests, waits for the server's answer, then resets
   * the client's connection instead of passing it on: a request that took effect, but whose
   * client cannot know it did.
   */
  dropResponseNext(times: number, match?: Match): void;
  /** Forwards the next `times` matching requests, but cuts the connection after `bytes` bytes of the answer's body. */
  truncateBodyNext(times: number, bytes: number, match?: Match): void;
  /** Forwards the next `times` matching requests with the byte at `offset` of their body inverted. */
  corruptBodyNext(times: number, offset: number, match?: Match): void;
  /** Forgets faults not yet used up. */
  clearFaults(): void;
  /** Forgets the requests seen so far (the counts start again from zero). */
  clearRequests(): void;
  close(): Promise<void>;
  /**
   * Holds the next `times` matching requests unanswered (their connection stays open, nothing
   * is sent) until releaseStalled() or close(): a server that accepted the request and went
   * silent, as a paused or overloaded one does.
   */
  stallNext(times: number, match?: Match): void;
  /** Forwards every request stallNext() holds now; returns how many there were. */
  releaseStalled(): number;
  /** Requests held by stallNext() right now. */
  stalledCount(): number;
  /**
   * Forwards the next `times` matching requests, and sends their answer's headers at once but
   * the body at `bytesPerSecond` (in pieces ten times a second): a server or link so slow that
   * an answer is always on its way but never arrives in useful time.
   */
  trickleNext(times: number, bytesPerSecond: number, match?: Match): void;
  /**
   * Forwards the next `times` matching requests, and appends `extraBytes` bytes (0xee) to their
   * answer's body, with a Content-Length that counts them: a body larger than the object asked for.
   */
  oversizeBodyNext(times: number, extraBytes: number, match?: Match): void;
  /**
   * Forwards the next `times` matching requests, but announces `contentLength` as their
   * answer's Content-Length (e.g. 4000000000 for a 1 MiB object), sends the real body, and
   * then holds the connection open: a client that believes the header waits or allocates.
   */
  inflateLengthNext(times: number, contentLength: number, match?: Match): void;
  /**
   * From now on, forwards every request without these headers (lower case), signed again
   * with `secretAccessKey` since SigV4 signs them: ['if-match', 'if-none-match'] makes the
   * server one that ignores conditional writes. [] forwards requests unchanged again.
   */
  stripHeaders(names: readonly string[], secretAccessKey?: string): void;
  /**
   * From now on (`true`), answers every PutObject and DeleteObjects that has neither
   * Content-MD5 nor an x-amz-checksum-* header with AWS's 400 InvalidRequest, as AWS does in a
   * bucket with Object Lock (MinIO and Ceph RGW 16 do not insist). `false` forwards them again.
   */
  requireChecksums(on: boolean): void;
}

/** Matches requests of one kind, optionally only for keys that contain `keyPart`. */
export function kindIs(kind: RequestKind, keyPart = ''): Match {
  return (r) => r.kind === kind && r.key.includes(keyPart);
}

type Fault =
  | { kind: 'reply'; remaining: number; match: Match; status: number; body: (r: ProxiedRequest) => string }
  | { kind: 'delay'; remaining: number; match: Match; ms: number }
  | { kind: 'reset'; remaining: number; match: Match }
  | { kind: 'drop'; remaining: number; match: Match }
  | { kind: 'truncate'; remaining: number; match: Match; bytes: number }
  | { kind: 'corrupt'; remaining: number; match: Match; offset: number }
  | { kind: 'stall'; remaining: number; match: Match }
  | { kind: 'trickle'; remaining: number; match: Match; bytesPerSecond: number }
  | { kind: 'oversize'; remaining: number; match: Match; extraBytes: number }
  | { kind: 'inflate'; remaining: number; match: Match; contentLength: number };

export async function startFaultProxy(target: string): Promise<S3FaultProxy> {
  const upstream = new URL(target);
  if (upstream.protocol !== 'http:') throw new Error(`the fault proxy forwards to http:// only, not ${target}`);
  const agent = new Agent({ keepAlive: true });
  const requests: ProxiedRequest[] = [];
  let faults: Fault[] = [];
  const sockets = new Set<Socket>();
  /** Requests a stall holds, with how to forward them once released. */
  let stalled: Array<() => void> = [];
  let strip: { names: readonly string[]; secret: string } | undefined;
  let checksumsRequired = false;

  const server = createServer((req, res) => {
    const info = describe(req);
    requests.push(info);
    const fault = faults.find((f) => f.remaining > 0 && f.match(info));
    if (fault) {
      fault.remaining--;
      info.fault = fault.kind;
    }
    if (checksumsRequired && !fault && (info.kind === 'PUT object' || info.kind === 'DELETE objects') && !hasChecksum(req)) {
      info.fault = 'no checksum';
      req.resume();
      req.once('end', () => reply(res, 400, checksumRequiredXml(info)));
    } else if (fault?.kind === 'reset') {
      req.socket.resetAndDestroy();
    } else if (fault?.kind === 'reply') {
      // Read the body first, so the connection stays usable, as with a real server.
      req.resume();
      req.once('end', () => reply(res, fault.status, info.method === 'HEAD' ? '' : fault.body(info)));
    } else if (fault?.kind === 'stall') {
      req.pause();
      const release = (): void => forward(req, res, upstream, agent, {});
      stalled.push(release);
      req.socket.once('close', () => { stalled = stalled.filter((r) => r !== release); });
    } else if (fault?.kind === 'delay') {
      req.pause();
      const timer = setTimeout(() => forward(req, res, upstream, agent, {}), fault.ms);
      req.socket.once('close', () => clearTimeout(timer));
    } else {
      if (strip) stripAndSign(req, strip.names, strip.secret);
      forward(req, res, upstream, agent, {
        drop: fault?.kind === 'drop',
        cutAfter: fault?.kind === 'truncate' ? fault.bytes : undefined,
        invertAt: fault?.kind === 'corrupt' ? fault.offset : undefined,
        bytesPerSecond: fault?.kind === 'trickle' ? fault.bytesPerSecond : undefined,
        extraBytes: fault?.kind === 'oversize' ? fault.extraBytes : undefined,
        claimLength: fault?.kind === 'inflate' ? fault.contentLength : undefined,
      });
    }
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  const add = (fault: Fault): void => {
    faults.push(fault);
  };
  return {
    endpoint: `http://127.0.0.1:${port}`,
    requests,
    count: (kind) => requests.filter((r) => r.kind === kind).length,
    failNext: (times, status, code, match = () => true) => add({ kind: 'reply', remaining: times, match, status, body: (r) => errorXml(code, r) }),
    replyNext: (times, status, body, match = () => true) => add({ kind: 'reply', remaining: times, match, status, body: () => body }),
    delayNext: (times, ms, match = () => true) => add({ kind: 'delay', remaining: times, match, ms }),
    resetNext: (times, match = () => true) => add({ kind: 'reset', remaining: times, match }),
    dropResponseNext: (times, match = () => true) => add({ kind: 'drop', remaining: times, match }),
    truncateBodyNext: (times, bytes, match = () => true) => add({ kind: 'truncate', remaining: times, match, bytes }),
    corruptBodyNext: (times, offset, match = () => true) => add({ kind: 'corrupt', remaining: times, match, offset }),
    clearFaults: () => { faults = []; },
    clearRequests: () => { requests.length = 0; },
    close: () => new Promise((resolve) => {
      stalled = [];
      for (const socket of sockets) socket.destroy();
      agent.destroy();
      server.close(() => resolve());
    }),
    stallNext: (times, match = () => true) => add({ kind: 'stall', remaining: times, match }),
    releaseStalled: () => {
      const released = stalled;
      stalled = [];
      for (const release of released) release();
      return released.length;
    },
    stalledCount: () => stalled.length,
    trickleNext: (times, bytesPerSecond, match = () => true) => add({ kind: 'trickle', remaining: times, match, bytesPerSecond }),
    oversizeBodyNext: (times, extraBytes, match = () => true) => add({ kind: 'oversize', remaining: times, match, extraBytes }),
    inflateLengthNext: (times, contentLength, match = () => true) => add({ kind: 'inflate', remaining: times, match, contentLength }),
    stripHeaders: (names, secret = '') => { strip = names.length === 0 ? undefined : { names, secret }; },
    requireChecksums: (on) => { checksumsRequired = on; },
  };
}

/** Removes `names` from the request's headers, and from its SigV4 signature, signing it again. */
function stripAndSign(req: IncomingMessage, names: readonly string[], secret: string): void {
  if (!names.some((name) => name in req.headers)) return;
  for (const name of names) delete req.headers[name];
  const auth = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, ?SignedHeaders=([^,]+), ?Signature=\S+$/.exec(req.headers.authorization ?? '');
  if (!auth) throw new Error(`the fault proxy can only strip headers from header-signed SigV4 requests, not ${req.method} ${req.url}`);
  const [, accessKeyId, , region, service, signed] = auth as unknown as [string, string, string, string, string, string];
  const headers: Record<string, string> = {};
  for (const name of signed.split(';')) {
    const value = req.headers[name];
    if (value !== undefined) headers[name] = Array.isArray(value) ? value.join(',') : value;
  }
  const [path = '/', rawQuery = ''] = (req.url ?? '/').split('?', 2);
  // Canonical: pairs sorted by name, each part encoded as SigV4 wants (the SDK's already are).
  const query = rawQuery === '' ? '' : rawQuery.split('&').map((pair) => pair.includes('=') ? pair : `${pair}=`).sort().join('&');
  req.headers.authorization = sigV4Authorization({
    method: req.method ?? 'GET', path, query, headers, payloadHash: String(req.headers['x-amz-content-sha256']),
    amzDate: String(req.headers['x-amz-date']), region, service, credentials: { accessKeyId, secretAccessKey: secret },
  });
}

function describe(req: IncomingMessage): ProxiedRequest {
  const url = new URL(req.url ?? '/', 'http://proxy');
  const [, bucket = '', ...rest] = url.pathname.split('/');
  const key = decodeURIComponent(rest.join('/'));
  const method = req.method ?? 'GET';
  let kind: RequestKind = 'other';
  if (method === 'POST' && url.searchParams.has('delete')) kind = 'DELETE objects';
  else if (key === '' && method === 'GET' && bucket !== '' && !url.searchParams.has('location')) kind = 'LIST';
  else if (key !== '' && method === 'GET') kind = 'GET object';
  else if (key !== '' && method === 'HEAD') kind = 'HEAD object';
  else if (key !== '' && method === 'PUT') kind = 'PUT object';
  else if (key !== '' && method === 'DELETE') kind = 'DELETE object';
  return { method, url: req.url ?? '/', bucket: decodeURIComponent(bucket), key, kind, userAgent: req.headers['user-agent'] ?? '' };
}

interface ForwardFaults {
  readonly drop?: boolean;
  readonly cutAfter?: number | undefined;
  readonly invertAt?: number | undefined;
  readonly bytesPerSecond?: number | undefined;
  readonly extraBytes?: number | undefined;
  readonly claimLength?: number | undefined;
}

function forward(req: IncomingMessage, res: ServerResponse, upstream: URL, agent: Agent, how: ForwardFaults): void {
  const out = request({
    host: upstream.hostname,
    port: upstream.port,
    method: req.method,
    path: req.url,
    headers: req.headers,
    agent,
  }, (answer) => {
    if (how.drop) {
      answer.resume();
      answer.once('end', () => req.socket.resetAndDestroy());
      return;
    }
    const length = Number(answer.headers['content-length'] ?? NaN);
    const headers = { ...answer.headers };
    if (how.extraBytes !== undefined && Number.isFinite(length)) headers['content-length'] = String(length + how.extraBytes);
    if (how.claimLength !== undefined) headers['content-length'] = String(how.claimLength);
    res.writeHead(answer.statusCode ?? 502, answer.statusMessage, headers);
    if (how.bytesPerSecond !== undefined) {
      trickle(answer, res, how.bytesPerSecond);
      return;
    }
    if (how.extraBytes !== undefined) {
      answer.pipe(res, { end: false });
      answer.once('end', () => res.end(Buffer.alloc(how.extraBytes!, 0xee)));
      return;
    }
    if (how.claimLength !== undefined) {
      // The rest of the announced body never comes: the connection stays open until the
      // client gives up (or the proxy closes).
      answer.pipe(res, { end: false });
      return;
    }
    const cutAfter = how.cutAfter;
    if (cutAfter !== undefined) {
      let sent = 0;
      answer.on('data', (chunk: Buffer) => {
        if (sent >= cutAfter) return;
        const part = chunk.subarray(0, cutAfter - sent);
        sent += part.length;
        res.write(part, () => { if (sent >= cutAfter) req.socket.destroy(); });
      });
      return;
    }
    answer.pipe(res);
    answer.once('error', () => res.destroy());
  });
  out.once('error', () => {
    if (res.headersSent) res.destroy();
    else reply(res, 502, errorXml('ProxyUpstreamError', describe(req)));
  });
  // The client gave up (or was reset): stop the upstream request too.
  res.once('close', () => {
    if (!res.writableFinished) out.destroy();
  });
  const invertAt = how.invertAt;
  if (invertAt === undefined) {
    req.pipe(out);
    return;
  }
  let seen = 0;
  req.on('data', (chunk: Buffer) => {
    if (invertAt >= seen && invertAt < seen + chunk.length) {
      chunk = Buffer.from(chunk);
      chunk[invertAt - seen]! ^= 0xff;
    }
    seen += chunk.length;
    out.write(chunk);
  });
  req.once('end', () => out.end());
}

/** Sends the answer's body at `bytesPerSecond`, a tenth of that every 100 ms. */
function trickle(answer: IncomingMessage, res: ServerResponse, bytesPerSecond: number): void {
  const pending: Buffer[] = [];
  let ended = false;
  answer.on('data', (chunk: Buffer) => pending.push(chunk));
  answer.once('end', () => { ended = true; });
  const step = Math.max(1, Math.round(bytesPerSecond / 10));
  const timer = setInterval(() => {
    let budget = step;
    while (budget > 0 && pending.length > 0) {
      const head = pending[0]!;
      const part = head.subarray(0, budget);
      if (part.length === head.length) pending.shift();
      else pending[0] = head.subarray(part.length);
      budget -= part.length;
      res.write(part);
    }
    if (ended && pending.length === 0) {
      clearInterval(timer);
      res.end();
    }
  }, 100);
  res.once('close', () => clearInterval(timer));
}

function errorXml(code: string, info: ProxiedRequest): string {
  return `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>injected by the test fault proxy</Message>`
    + `<Resource>/${info.bucket}/${info.key}</Resource><RequestId>fault-proxy</RequestId></Error>`;
}

function hasChecksum(req: IncomingMessage): boolean {
  return Object.keys(req.headers).some((name) => name === 'content-md5' || name.startsWith('x-amz-checksum-'));
}

/** AWS's answer to a PutObject without a checksum in a bucket with Object Lock (its code and message). */
function checksumRequiredXml(info: ProxiedRequest): string {
  const what = info.kind === 'PUT object' ? 'Put Object' : 'Delete Objects';
  return `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InvalidRequest</Code><Message>Content-MD5 OR x-amz-checksum- HTTP header is required for ${what} requests with Object Lock parameters</Message>`
    + `<RequestId>fault-proxy</RequestId></Error>`;
}

function reply(res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}
