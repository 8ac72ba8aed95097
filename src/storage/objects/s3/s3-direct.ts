// GetObject and PutObject without the AWS SDK's request pipeline: the hot paths of reads and
// uploads.
//
// Per 1 MiB object the SDK's pipeline (endpoint rules, serialisation, signing, its stream
// wrapper, collecting chunks) costs about as much CPU as moving the bytes. A cold sequential
// read of 1 GiB through the gateway from a local MinIO (fio, 1 MiB, queue depth 16; three runs
// each, interleaved) took a median 2.75 CPU-s of the gateway's and 3.05 s through the SDK, and
// 2.11 CPU-s and 2.49 s this way; 1024 PUTs of 1 MiB, 16 in flight, took 2.6-2.7 CPU-s through
// the SDK and 1.4-1.7 this way. On a gateway that shares its CPUs with the file system above
// it and, often, with the S3 server, that CPU is throughput. The requests go out over
// http1.ts, which halves the CPU of receiving bodies again (see there).
//
// Used only where the request is plain to build: an explicit endpoint with path-style
// addressing (MinIO, Ceph, LocalStack, any --s3-endpoint). AWS itself, with its virtual-hosted
// buckets, regional endpoints and redirects, stays on the SDK, as do conditional writes,
// listings and deletes everywhere. Credentials and the region still come from the SDK's chain
// (its client resolves and refreshes them). Failures are thrown in the SDK's shape (`Code`,
// `$metadata.httpStatusCode`), so the store classifies and retries them exactly as it does the
// SDK's.

import { createHash, createHmac } from 'node:crypto';
import { crc32 } from '../../../crc32.ts';
import { bareHost, Http1Client } from './http1.ts';
import type { Http1Response } from './http1-response.ts';
import { bodyParts, MAX_OBJECT_BYTES, type ObjectBody, type TaggedObject } from '../object-store.ts';

export interface AwsCredentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken?: string | undefined;
}

export interface DirectS3Config {
  /** The endpoint, e.g. http://127.0.0.1:9000; the bucket goes in the path. */
  readonly endpoint: URL;
  readonly bucket: string;
  readonly maxSockets: number;
  readonly credentials: () => Promise<AwsCredentials>;
  readonly region: () => Promise<string>;
  /** Sign PUT bodies (SHA-256) instead of sending a CRC-32; by default only over plain HTTP to another machine. */
  readonly signPayloads?: boolean;
}

const EMPTY_SHA256 = createHash('sha256').update('').digest('hex');
export const USER_AGENT = 's3nbd-direct';
/** S3 answers these when our clock is off; its Date header then tells us by how much. */
const CLOCK_SKEW_CODES = new Set(['RequestTimeTooSkewed', 'RequestExpired', 'RequestInTheFuture']);

export class DirectS3 {
  private readonly config: DirectS3Config;
  private readonly http: Http1Client;
  /**
   * Whether PUT bodies are signed (SHA-256) rather than sent with a CRC-32: see send(). Turns
   * true for good when the server turns out not to check the CRC (see put()).
   */
  signsPayloads: boolean;
  /**
   * Whether a signed PUT body also carries an x-amz-checksum-crc32 (0.3-0.5 CPU-ms per MiB
   * more). Turns true for good when the server refuses a PUT without one, as AWS does in a
   * bucket with Object Lock (see put()); an unsigned body always has one.
   */
  private crcWithSignature = false;
  /** Added to our clock when signing, after S3 said it was off. */
  private clockOffsetMs = 0;
  private signingKey: { scope: string; secret: string; key: Buffer } | undefined;

  constructor(config: DirectS3Config) {
    this.config = config;
    this.http = new Http1Client(config.endpoint, config.maxSockets);
    this.signsPayloads = config.signPayloads ?? (config.endpoint.protocol === 'http:' && !isLoopback(bareHost(config.endpoint)));
  }

  /**
   * GetObject: the object's bytes and ETag. Throws, in the SDK's shape, on any answer but 200,
   * and (ERR_BODY_TOO_LARGE, before reading it) on a body longer than `maxBytes`.
   */
  async get(key: string, signal: AbortSignal, maxBytes = MAX_OBJECT_BYTES): Promise<TaggedObject> {
    const res = await this.send('GET', key, undefined, signal, { maxBody: maxBytes });
    const tag = res.headers.get('etag');
    if (tag === undefined) throw new Error('the response has no ETag');
    return { data: res.body, tag };
  }

  /** PutObject (unconditional): resolves with the new ETag once S3 has the object. */
  async put(key: string, data: ObjectBody, signal: AbortSignal): Promise<string> {
    const signed = this.signsPayloads;
    const sentCrc = !signed || this.crcWithSignature ? crc32Base64(data) : undefined;
    let res: Http1Response;
    try {
      res = await this.send('PUT', key, data, signal, { crc: sentCrc, signBody: signed });
    } catch (err) {
      // A server that wants a checksum with every PUT (AWS, in a bucket with Object Lock)
      // refuses a signed body without one: add the CRC-32 from now on, and send this one again.
      if (sentCrc !== undefined || !checksumRequired(err)) throw err;
      this.crcWithSignature = true;
      return this.put(key, data, signal);
    }
    if (!signed) {
      // A server that checked the CRC says so by returning it (AWS, MinIO). Ceph RGW 16 stores
      // the body without a look at it, so nothing has checked these bytes: sign the bodies
      // from now on (it does check SHA-256) and send this one again.
      const crc = res.headers.get('x-amz-checksum-crc32');
      if (crc === undefined) {
        this.signsPayloads = true;
        return this.put(key, data, signal);
      }
      if (crc !== sentCrc) throw s3Error(400, '<Code>XAmzContentChecksumMismatch</Code><Message>S3 computed another CRC-32 of the body</Message>');
    }
    const tag = res.headers.get('etag');
    if (tag === undefined) throw new Error('the response has no ETag');
    return tag;
  }

  /**
   * Sends a signed request for the key, with the body if any: with `crc`, its x-amz-checksum-crc32,
   * and the body itself unsigned unless `signBody`. `maxBody` is the longest body a successful
   * answer may have. An answer other than 200 is thrown as an S3 error.
   */
  private async send(method: 'GET' | 'PUT', key: string, data: ObjectBody | undefined, signal: AbortSignal,
    { crc, maxBody, signBody = false }: { crc?: string | undefined; maxBody?: number; signBody?: boolean } = {}): Promise<Http1Response> {
    const { endpoint, bucket } = this.config;
    const path = `${endpoint.pathname.replace(/\/+$/, '')}/${uriEncode(bucket)}/${key.split('/').map(uriEncode).join('/')}`;
    const credentials = await this.config.credentials();
    const amzDate = new Date(Date.now() + this.clockOffsetMs).toISOString().replace(/[-:]|\.\d{3}/g, '');
    // Over plain HTTP across a network the payload is signed (as the SDK does): nothing else
    // protects it in flight. Where TLS or the loopback interface does, a CRC-32 that S3 checks
    // guards it against corruption for less CPU (0.2 CPU-s less per GiB: docs/s3.md).
    const body = data && bodyParts(data);
    const unsigned = body !== undefined && !signBody;
    const payloadHash = !body ? EMPTY_SHA256 : unsigned ? 'UNSIGNED-PAYLOAD' : sha256Hex(body);
    const headers: Record<string, string> = {
      host: endpoint.host,
      'x-amz-content-sha256': payloadHash,
      'x-amz-date': amzDate,
      ...body ? { 'content-length': String(body.reduce((sum, part) => sum + part.length, 0)) } : {},
      ...body && crc !== undefined ? { 'x-amz-checksum-crc32': crc } : {},
      ...credentials.sessionToken ? { 'x-amz-security-token': credentials.sessionToken } : {},
    };
    const authorization = sigV4Authorization({
      method, path, headers, payloadHash, amzDate,
      region: await this.config.region(), service: 's3', credentials, signingKey: (scope, secret) => this.keyFor(scope, secret),
    });
    // The user agent is not signed: it only tells server logs (and our tests) who asked.
    const res = await this.http.request({ method, path, headers: { ...headers, authorization, 'user-agent': USER_AGENT }, body, maxBody }, signal);
    if (res.status === 200) return res;
    const error = s3Error(res.status, res.body.toString('utf8'));
    const serverDate = Date.parse(res.headers.get('date') ?? '');
    if (CLOCK_SKEW_CODES.has(error.Code) && Number.isFinite(serverDate)) this.clockOffsetMs = serverDate - Date.now();
    throw error;
  }

  close(): void {
    this.http.close();
  }

  /** The derived signing key changes once a day (and with the credentials): derive it once. */
  private keyFor(scope: string, secret: string): Buffer {
    if (this.signingKey?.scope !== scope || this.signingKey.secret !== secret) {
      this.signingKey = { scope, secret, key: deriveSigningKey(secret, scope) };
    }
    return this.signingKey.key;
  }
}

export interface SigV4Request {
  readonly method: string;
  /** The path, already URI-encoded, without a query string. */
  readonly path: string;
  /** The canonical query string (sorted, URI-encoded name=value pairs joined by &); default none. */
  readonly query?: string;
  /** Every header to sign, names in lower case; `host` and `x-amz-date` among them. */
  readonly headers: Readonly<Record<string, string>>;
  readonly payloadHash: string;
  /** YYYYMMDDTHHMMSSZ, as in x-amz-date. */
  readonly amzDate: string;
  readonly region: string;
  readonly service: string;
  readonly credentials: AwsCredentials;
  /** For caching the derived key; by default it is derived every time. */
  readonly signingKey?: (scope: string, secret: string) => Buffer;
}

/** The Authorization header of AWS Signature Version 4 (header-based, as S3 takes it). */
export function sigV4Authorization(r: SigV4Request): string {
  const names = Object.keys(r.headers).sort();
  const canonicalHeaders = names.map((n) => `${n}:${r.headers[n]!.trim().replace(/\s+/g, ' ')}\n`).join('');
  const signedHeaders = names.join(';');
  const canonicalRequest = `${r.method}\n${r.path}\n${r.query ?? ''}\n${canonicalHeaders}\n${signedHeaders}\n${r.payloadHash}`;
  const scope = `${r.amzDate.slice(0, 8)}/${r.region}/${r.service}/aws4_request`;
  const stringToSign = `AWS4-HMAC-SHA256\n${r.amzDate}\n${scope}\n${createHash('sha256').update(canonicalRequest).digest('hex')}`;
  const key = r.signingKey ? r.signingKey(scope, r.credentials.secretAccessKey) : deriveSigningKey(r.credentials.secretAccessKey, scope);
  const signature = createHmac('sha256', key).update(stringToSign).digest('hex');
  return `AWS4-HMAC-SHA256 Credential=${r.credentials.accessKeyId}/${scope}, SignedHeaders=${signedHeaders}, Signature=${signature}`;
}

function deriveSigningKey(secret: string, scope: string): Buffer {
  let key: Buffer = Buffer.from(`AWS4${secret}`);
  for (const part of scope.split('/')) key = createHmac('sha256', key).update(part).digest();
  return key;
}

/** Where no one but this machine's root can alter the bytes in flight. */
function isLoopback(host: string): boolean {
  return host.toLowerCase() === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/**
 * AWS's refusal of a PutObject without Content-MD5 or an x-amz-checksum-* header, in a bucket
 * with Object Lock: "Content-MD5 OR x-amz-checksum- HTTP header is required for Put Object
 * requests with Object Lock parameters" (400 InvalidRequest).
 */
function checksumRequired(err: unknown): boolean {
  const e = err as { Code?: unknown; message?: unknown };
  return e.Code === 'InvalidRequest' && typeof e.message === 'string' && /Content-MD5/i.test(e.message);
}

/** x-amz-checksum-crc32: the big-endian CRC-32 of the body (all its parts, in order) in base64. */
export function crc32Base64(data: ObjectBody): string {
  const crc = Buffer.allocUnsafe(4);
  crc.writeUInt32BE(bodyParts(data).reduce((previous, part) => crc32(part, previous), 0));
  return crc.toString('base64');
}

/** The hex SHA-256 of the body's parts, in order. */
function sha256Hex(parts: readonly Buffer[]): string {
  const hash = createHash('sha256');
  for (const part of parts) hash.update(part);
  return hash.digest('hex');
}

/** RFC 3986 encoding of one path segment, as SigV4 and S3 want it. */
function uriEncode(segment: string): string {
  return encodeURIComponent(segment).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** An S3 error answer, shaped as the SDK's exceptions are (what the store's classify() reads). */
function s3Error(status: number, body: string): Error & { Code: string } {
  const field = (name: string): string | undefined => new RegExp(`<${name}>([^<]*)</${name}>`).exec(body)?.[1];
  const code = field('Code') ?? (status === 404 ? 'NotFound' : `HTTP${status}`);
  return Object.assign(new Error(field('Message') ?? `HTTP ${status}`), { name: code, Code: code, $metadata: { httpStatusCode: status } });
}
