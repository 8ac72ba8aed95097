// The AWS SDK's S3Client as the S3 store configures it (its retries off: s3-retry.ts retries),
// and the SDK's path for a GET, whose body stream is read here within the size asked for.
// Apart from the store so that s3-object-store.ts holds only what each operation means.

import { addAbortSignal, Readable } from 'node:stream';
import { GetObjectCommand, S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';
import type { Logger } from 'pino';
import type { TaggedObject } from '../object-store.ts';
import { bodyTooLarge, prematureEnd } from './http1-response.ts';
import { limitSdkBodies } from './sdk-body-limit.ts';

export interface SdkClientOptions {
  readonly endpoint: string | undefined;
  readonly region: string | undefined;
  readonly forcePathStyle: boolean;
  readonly credentials: S3ClientConfig['credentials'];
  /** Concurrent connections to S3. */
  readonly maxSockets: number;
  /** Time limit for one attempt; connecting gets at most 5 s of it. */
  readonly requestTimeoutMs: number;
  readonly log: Logger | undefined;
}

export function createSdkClient(options: SdkClientOptions): S3Client {
  const agent = { keepAlive: true, maxSockets: options.maxSockets };
  const client = new S3Client({
    endpoint: options.endpoint,
    region: options.region,
    forcePathStyle: options.forcePathStyle,
    credentials: options.credentials,
    maxAttempts: 1,
    // The SDK computes checksums only where S3 insists (DeleteObjects), and the store adds
    // its own CRC-32 to PutObject (s3-object-store.ts); S3-compatible servers differ in which
    // other checksum headers they accept.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    // With 100-continue the SDK gives every PUT over 2 MB a fresh, unpooled connection
    // (ignoring maxSockets): not worth it for extents, which are mostly accepted.
    expectContinueHeader: false,
    followRegionRedirects: true,
    requestHandler: {
      connectionTimeout: Math.min(5000, options.requestTimeoutMs),
      httpAgent: agent,
      httpsAgent: agent,
      // The handler's own warnings (e.g. every socket busy) go to our log, not to the console.
      logger: sdkLogger(options.log),
    },
  });
  limitSdkBodies(client);
  return client;
}

/** GetObject through the SDK: the whole body and its ETag; of one version of the key with `VersionId`. */
export async function sdkGet(client: S3Client, Bucket: string, Key: string, signal: AbortSignal, maxBytes: number, VersionId?: string): Promise<TaggedObject> {
  const output = await client.send(new GetObjectCommand({ Bucket, Key, VersionId }), { abortSignal: signal });
  const data = await readBody(output.Body, output.ContentLength, maxBytes, signal);
  if (output.ETag === undefined) throw new Error('the response has no ETag');
  return { data, tag: output.ETag };
}

/** The endpoint without anything that could be a secret (user info, query). */
export function safeEndpoint(endpoint: string): string {
  try {
    const url = new URL(endpoint);
    return `${url.protocol}//${url.host}${url.pathname === '/' ? '' : url.pathname}`;
  } catch {
    return '(unparsable endpoint)';
  }
}

/**
 * The SDK's stream, read whole, checked against Content-Length; a timeout destroys it. A body
 * longer than `maxBytes` (declared, or as it arrives) is refused, and the stream destroyed,
 * before more than `maxBytes` of it is held.
 */
async function readBody(body: unknown, length: number | undefined, maxBytes: number, signal: AbortSignal): Promise<Buffer> {
  if (!(body instanceof Readable)) throw new Error('the response has no body stream');
  if (length !== undefined && length > maxBytes) {
    body.destroy();
    throw bodyTooLarge(length, maxBytes);
  }
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of addAbortSignal(signal, body)) {
    total += (chunk as Buffer).length;
    if (total > maxBytes) {
      body.destroy();
      throw bodyTooLarge(total, maxBytes);
    }
    chunks.push(chunk as Buffer);
  }
  if (length !== undefined && total !== length) throw prematureEnd(total, length);
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, total);
}

function sdkLogger(log: Logger | undefined): { debug(...a: unknown[]): void; info(...a: unknown[]): void; warn(...a: unknown[]): void; error(...a: unknown[]): void } {
  const to = (level: 'debug' | 'warn') => (...args: unknown[]): void => log?.[level]({ source: 'aws-sdk' }, args.map(String).join(' '));
  return { debug: to('debug'), info: to('debug'), warn: to('debug'), error: to('warn') };
}
