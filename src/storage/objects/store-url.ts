// Turns the --store argument into an ObjectStore:
//   s3://BUCKET/PREFIX                 S3 or any S3-compatible service (endpoint, region and
//                                      credentials from the AWS chain or --s3-* options)
//   ./dir, /abs/dir, file:///abs/dir   a local directory (the embedded default)
//   memory:                            volatile, in this process (tests, benchmarks)
// parseS3Url() checks an s3:// URL and splits it (stack.ts uses it too, to name the bucket).

import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import type { VolumeTelemetry } from '../../telemetry.ts';
import { Errors } from '../../errors.ts';
import { FileObjectStore } from './file-object-store.ts';
import { MemoryObjectStore } from './memory-object-store.ts';
import type { ObjectStore } from './object-store.ts';
import { normalisePrefix, S3ObjectStore } from './s3/s3-object-store.ts';

export const DEFAULT_STORE = './s3nbd-data';

export interface S3Options {
  readonly endpoint?: string | undefined;
  readonly region?: string | undefined;
  readonly forcePathStyle?: boolean | undefined;
  /** Connections to S3; at least the upload concurrency plus room for reads. */
  readonly maxSockets?: number | undefined;
  /** How long a read may wait on S3, retries included, before it fails with EIO (--read-timeout). */
  readonly readTimeoutMs?: number | undefined;
  /** Told of every S3 request (the admin endpoint's metrics). */
  readonly telemetry?: VolumeTelemetry | undefined;
}

export function openObjectStore(spec: string, s3: S3Options = {}, log?: Logger): ObjectStore {
  if (spec === 'memory:') return new MemoryObjectStore();
  if (/^s3:/i.test(spec)) {
    const { bucket, prefix } = parseS3Url(spec);
    const endpoint = s3.endpoint ?? process.env.AWS_ENDPOINT_URL_S3 ?? process.env.AWS_ENDPOINT_URL;
    if (endpoint !== undefined) {
      checkEndpoint(s3.endpoint !== undefined ? '--s3-endpoint' : process.env.AWS_ENDPOINT_URL_S3 !== undefined ? 'AWS_ENDPOINT_URL_S3' : 'AWS_ENDPOINT_URL', endpoint);
    }
    // S3-compatible services rarely care about the region, but the SDK insists on one.
    const region = s3.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? (endpoint ? 'us-east-1' : undefined);
    return new S3ObjectStore({
      bucket, prefix,
      ...(s3.endpoint !== undefined ? { endpoint: s3.endpoint } : {}),
      ...(region !== undefined ? { region } : {}),
      ...(s3.forcePathStyle !== undefined ? { forcePathStyle: s3.forcePathStyle } : {}),
      ...(s3.maxSockets !== undefined ? { maxSockets: s3.maxSockets } : {}),
      ...(s3.readTimeoutMs !== undefined ? { readTimeoutMs: s3.readTimeoutMs } : {}),
      ...(s3.telemetry ? { telemetry: s3.telemetry } : {}),
      ...(log ? { log } : {}),
    });
  }
  let dir: string;
  if (/^file:/i.test(spec)) {
    try {
      dir = fileURLToPath(spec);
    } catch {
      throw Errors.badStore(spec);
    }
  } else if (/^[a-z][a-z0-9+.-]*:/i.test(spec) || spec === '') {
    throw Errors.badStore(spec);
  } else {
    dir = resolve(spec);
  }
  // The directory is created by the first write, so `info` on a wrong path leaves nothing behind.
  return new FileObjectStore(dir);
}

/**
 * The store as another process, run elsewhere, names it (a clone's record of its origin): a
 * directory as an absolute path, an s3:// URL as it is.
 */
export function absoluteStoreUrl(spec: string): string {
  if (/^s3:/i.test(spec) || spec === 'memory:') return spec;
  const store = openObjectStore(spec);
  return store instanceof FileObjectStore ? store.root : spec;
}

/**
 * An endpoint must be an http:// or https:// URL. "127.0.0.1:9000" or "minio:9000" would
 * otherwise fail later with the SDK's "Invalid URL", or be read as a URL of scheme "minio:".
 */
function checkEndpoint(source: string, text: string): void {
  const bare = text.replace(/^[a-z][a-z0-9+.-]*:\/\//i, '').replace(/^[^@/]*@/, '');
  let url: URL | undefined;
  try {
    url = new URL(text);
  } catch {
    url = undefined;
  }
  if (url === undefined || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.hostname === '') {
    throw Errors.badEndpoint(source, text.replace(/\/\/[^@/]*@/, '//'), bare);
  }
}

/**
 * Splits s3://BUCKET[/PREFIX] into its parts, the prefix with single slashes and none at
 * either end. Throws UserError S3NBD_BAD_S3_URL for anything else.
 */
export function parseS3Url(spec: string): { bucket: string; prefix: string } {
  const match = /^s3:\/\/([^/]*)(\/.*)?$/i.exec(spec);
  if (!match) throw Errors.badS3Url(spec, 'it does not start with s3://');
  const bucket = match[1]!;
  const path = match[2] ?? '';
  if (bucket === '') throw Errors.badS3Url(spec, 'there is no bucket name');
  if (/[@:]/.test(bucket)) throw Errors.badS3Url(spec, 'a user name, password or port does not belong in it (credentials and endpoint come from the environment)');
  if (/[?#]/.test(spec)) throw Errors.badS3Url(spec, 'a query (?...) or fragment (#...) does not belong in it');
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket) || bucket.includes('..')) {
    throw Errors.badS3Url(spec, `"${bucket}" is not a valid bucket name`);
  }
  const prefix = normalisePrefix(path);
  if (prefix.split('/').some((part) => part === '.' || part === '..')) {
    throw Errors.badS3Url(spec, 'the prefix must not contain "." or ".." segments');
  }
  return { bucket, prefix };
}
