// Objects in an S3 bucket (AWS, or anything that speaks the S3 API: MinIO, Ceph, LocalStack),
// under an optional key prefix, so one bucket can hold many volumes.
//
// Endpoint, region and credentials come from the AWS SDK's standard chain (environment,
// shared config and profile, container and instance roles, AWS_ENDPOINT_URL_S3) unless the
// config names them. The SDK's own retries are off: this layer retries instead, so that it
// sees every failure, counts it, and turns what is left into a StorageError with the errno
// the NBD client will see:
//   - throttling (429, 503 SlowDown, ...), other 5xx, timeouts, connection resets and refusals:
//     retried with capped exponential backoff and full jitter, then EIO;
//   - 403 (access denied, bad credentials): EPERM at once, retrying cannot help;
//   - anything else: EIO at once.
// A read (get()) has a total time budget as well (readTimeoutMs, --read-timeout): a stalled or
// trickling S3 answer ends in EIO within it, instead of keeping the NBD client waiting for
// maxAttempts x requestTimeoutMs (6 x 30 s). Writes have no budget: the write-back flusher
// retries them until they succeed. Any request still unanswered after stallWarnMs is logged
// at warn level (rate-limited), with what it waits for, so a stall is visible while it lasts.
// The retry loop is in s3-retry.ts; which failures it retries is decided in s3-errors.ts.
// A PUT that S3 acknowledged is durable, so flush() has nothing to do. Against an explicit
// path-style endpoint, plain GETs and PUTs (the hot paths) skip the SDK's pipeline (s3-direct.ts).
// In a bucket that keeps versions (versioning, Object Lock), listVersions(), deleteVersions()
// and getVersion() are what `s3nbd undelete` (../undelete.ts) works with.

import {
  DeleteObjectsCommand, ListObjectsV2Command, ListObjectVersionsCommand, type ListObjectVersionsCommandOutput, PutObjectCommand, type S3Client, type S3ClientConfig,
} from '@aws-sdk/client-s3';
import type { Logger } from 'pino';
import type { Clock } from '../../../clock.ts';
import { Errors } from '../../../errors.ts';
import { StorageError } from '../../storage-error.ts';
import { joinedBody, MAX_OBJECT_BYTES, type ObjectBody, type ObjectStore, type ObjectVersion, type TaggedObject, type VersionRef } from '../object-store.ts';
import { crc32Base64, DirectS3 } from './s3-direct.ts';
import { codeOf, isTransientCode, notImplemented, statusOf } from './s3-errors.ts';
import { type Policy, S3Retry, type S3RequestStats } from './s3-retry.ts';
import { createSdkClient, safeEndpoint, sdkGet } from './sdk-client.ts';
import type { VolumeTelemetry } from '../../../telemetry.ts';

export interface S3ObjectStoreConfig {
  readonly bucket: string;
  /** Key prefix, without or with slashes at either end; '' or absent for the bucket's root. */
  readonly prefix?: string;
  /** e.g. http://127.0.0.1:9000. Default: the SDK's chain (AWS_ENDPOINT_URL_S3, profile, AWS). */
  readonly endpoint?: string;
  /** Default: the SDK's chain (AWS_REGION, profile). */
  readonly region?: string;
  /** Bucket in the path instead of the host name. Default: true with an endpoint (MinIO and the like need it), else false. */
  readonly forcePathStyle?: boolean;
  /** Attempts per request before giving up with EIO. Default 6. */
  readonly maxAttempts?: number;
  /** Time limit for one attempt, body included. Default 30 s. */
  readonly requestTimeoutMs?: number;
  /** Time limit for a whole get(), every attempt and backoff included (then EIO). Default 60 s. */
  readonly readTimeoutMs?: number;
  /** A request unanswered this long is logged at warn level (rate-limited). Default 5 s. */
  readonly stallWarnMs?: number;
  /** Concurrent connections to S3. Default 50. */
  readonly maxSockets?: number;
  /** Normally absent, leaving credentials to the SDK's chain; tests pass them. */
  readonly credentials?: S3ClientConfig['credentials'];
  readonly log?: Logger;
  /** First backoff ceiling (doubled per retry, up to retryCapMs). Default 100 ms. */
  readonly retryBaseMs?: number;
  /** Default 10 s. */
  readonly retryCapMs?: number;
  /** For deterministic tests: the retry loop's waits, jitter and time budgets. Default: the real clock. */
  readonly clock?: Clock;
  /** Told of every request (the admin endpoint's metrics). */
  readonly telemetry?: VolumeTelemetry | undefined;
}

/**
 * How an operation retries. The store's own methods use the config's maxAttempts;
 * `withRetry()` returns a view of the store with another policy.
 */
export interface RetryOptions {
  /** Attempts per operation. Default: the config's maxAttempts. */
  readonly maxAttempts?: number;
  /** Ends the retrying (StorageError EIO) when aborted. close() ends every operation too. */
  readonly signal?: AbortSignal;
  /** No "waiting for S3" warnings: the caller bounds the wait and reports its outcome itself (the first contact at start). */
  readonly quiet?: boolean;
}

const DELETE_BATCH = 1000;
const DEFAULTS = { maxAttempts: 6, requestTimeoutMs: 30_000, readTimeoutMs: 60_000, stallWarnMs: 5000, maxSockets: 50, retryBaseMs: 100, retryCapMs: 10_000 };

export class S3ObjectStore implements ObjectStore {
  readonly description: string;
  /** Every body is read into a buffer of its own (http1.ts, sdk-client.ts). */
  readonly freshBodies = true;
  readonly stats: S3RequestStats = { get: 0, put: 0, delete: 0, list: 0, retries: 0, throttled: 0, exhausted: 0 };
  private readonly client: S3Client;
  private readonly bucket: string;
  /** '' or the prefix with one trailing slash: prepended to every key. */
  private readonly keyPrefix: string;
  private readonly policy: Policy;
  /** get()'s: the default policy with the read time budget. */
  private readonly readPolicy: Policy;
  private readonly retry: S3Retry;
  private readonly log: Logger | undefined;
  /** Aborted by close(): ends requests in flight and backoff waits. */
  private readonly closing = new AbortController();
  /** GETs and unconditional PUTs without the SDK's pipeline, where the endpoint allows (see s3-direct.ts). */
  private readonly direct: DirectS3 | undefined;
  /**
   * Ceph RGW 16 compares If-Match with the stored ETag as the header spells it, quotes and
   * all, so the quoted ETag it hands out itself never matches: every renewal of the lease
   * would look like a take-over. Set once a 412 answered a tag the object does have; from
   * then on the tag goes out without its quotes, which such a server matches.
   */
  private unquotedIfMatch = false;

  constructor(config: S3ObjectStoreConfig) {
    const prefix = normalisePrefix(config.prefix ?? '');
    this.bucket = config.bucket;
    this.keyPrefix = prefix === '' ? '' : `${prefix}/`;
    this.policy = { maxAttempts: config.maxAttempts ?? DEFAULTS.maxAttempts, signal: undefined };
    this.readPolicy = { ...this.policy, budgetMs: config.readTimeoutMs ?? DEFAULTS.readTimeoutMs };
    const requestTimeoutMs = config.requestTimeoutMs ?? DEFAULTS.requestTimeoutMs;
    this.retry = new S3Retry({
      stats: this.stats, closing: this.closing.signal, requestTimeoutMs,
      stallWarnMs: config.stallWarnMs ?? DEFAULTS.stallWarnMs,
      retryBaseMs: config.retryBaseMs ?? DEFAULTS.retryBaseMs,
      retryCapMs: config.retryCapMs ?? DEFAULTS.retryCapMs,
      log: config.log, clock: config.clock, telemetry: config.telemetry,
    });
    this.log = config.log;
    // The SDK reads AWS_ENDPOINT_URL_S3 itself; it is read here only to say where we are.
    const endpoint = config.endpoint ?? process.env.AWS_ENDPOINT_URL_S3 ?? process.env.AWS_ENDPOINT_URL;
    this.description = `s3://${this.bucket}${prefix === '' ? '' : `/${prefix}`} at ${endpoint === undefined ? 'AWS' : safeEndpoint(endpoint)}`;
    const maxSockets = config.maxSockets ?? DEFAULTS.maxSockets;
    const pathStyle = config.forcePathStyle ?? endpoint !== undefined;
    this.client = createSdkClient({
      endpoint: config.endpoint, region: config.region, forcePathStyle: pathStyle, credentials: config.credentials,
      maxSockets, requestTimeoutMs, log: config.log,
    });
    if (endpoint !== undefined && pathStyle && URL.canParse(endpoint)) {
      this.direct = new DirectS3({
        endpoint: new URL(endpoint), bucket: this.bucket, maxSockets,
        credentials: () => this.client.config.credentials(),
        region: () => this.client.config.region(),
      });
    }
  }

  /**
   * A view of this store, sharing its connections and stats, whose operations retry by
   * `options`: the first contact at start uses one with few attempts and an abort signal.
   * Its close() does nothing; closing this store ends the view's operations too.
   */
  withRetry(options: RetryOptions): ObjectStore {
    const policy: Policy = {
      maxAttempts: options.maxAttempts ?? this.policy.maxAttempts,
      signal: options.signal,
      quiet: options.quiet,
    };
    return {
      description: this.description,
      get: (key, maxBytes) => this.getWith(key, policy, maxBytes).then((object) => object?.data),
      getTagged: (key, maxBytes) => this.getWith(key, policy, maxBytes),
      put: (key, data) => this.putWith(key, data, policy),
      putIf: (key, data, expectedTag) => this.putIfWith(key, data, expectedTag, policy),
      checkConditionalWrites: (key, data) => this.checkConditionsWith(key, data, policy),
      deleteMany: (keys) => this.deleteWith(keys.map((key) => ({ key })), policy),
      list: (prefix) => this.listWith(prefix, policy),
      flush: () => this.flush(),
      close: () => Promise.resolve(),
    };
  }

  async get(key: string, maxBytes?: number): Promise<Buffer | undefined> {
    return (await this.getWith(key, this.readPolicy, maxBytes))?.data;
  }

  getTagged(key: string, maxBytes?: number): Promise<TaggedObject | undefined> {
    return this.getWith(key, this.policy, maxBytes);
  }

  put(key: string, data: ObjectBody): Promise<void> {
    return this.putWith(key, data, this.policy);
  }

  putIf(key: string, data: Buffer, expectedTag: string | undefined): Promise<string | undefined> {
    return this.putIfWith(key, data, expectedTag, this.policy);
  }

  deleteMany(keys: readonly string[]): Promise<void> {
    return this.deleteWith(keys.map((key) => ({ key })), this.policy);
  }

  list(prefix: string): AsyncIterable<string> {
    return this.listWith(prefix, this.policy);
  }

  async *listPrefixes(prefix: string): AsyncIterable<string> {
    const Prefix = this.keyPrefix + prefix;
    let token: string | undefined;
    do {
      const ContinuationToken = token;
      const output = await this.retry.run('list', `LIST ${this.url(Prefix)} /`, this.policy, (signal) => this.client.send(new ListObjectsV2Command({
        Bucket: this.bucket, Prefix, Delimiter: '/', ContinuationToken,
      }), { abortSignal: signal }));
      for (const common of output.CommonPrefixes ?? []) {
        const name = common.Prefix?.slice(Prefix.length).replace(/\/$/, '');
        if (common.Prefix?.startsWith(Prefix) && name) yield name;
      }
      token = output.IsTruncated ? output.NextContinuationToken : undefined;
    } while (token !== undefined);
  }

  async *listVersions(prefix: string, onPage?: (listed: number) => void): AsyncIterable<ObjectVersion> {
    const Prefix = this.keyPrefix + prefix;
    let from: { KeyMarker?: string | undefined; VersionIdMarker?: string | undefined } | undefined = {};
    let listed = 0;
    while (from !== undefined) {
      const { KeyMarker, VersionIdMarker } = from;
      const output: ListObjectVersionsCommandOutput = await this.retry.run('list', `LIST versions ${this.url(Prefix)}`, this.policy, (signal) => this.client.send(new ListObjectVersionsCommand({
        Bucket: this.bucket, Prefix, KeyMarker, VersionIdMarker,
      }), { abortSignal: signal }));
      // The answer lists the versions and the delete markers apart, each by key: merge them
      // so that every key's entries come together.
      const page: ObjectVersion[] = [];
      const add = (entries: typeof output.Versions, deleteMarker: boolean): void => {
        for (const e of entries ?? []) {
          if (e.Key === undefined || !e.Key.startsWith(this.keyPrefix) || e.VersionId === undefined) continue;
          page.push({ key: e.Key.slice(this.keyPrefix.length), versionId: e.VersionId, deleteMarker, latest: e.IsLatest === true, lastModified: e.LastModified ?? new Date(0) });
        }
      };
      add(output.Versions, false);
      add(output.DeleteMarkers, true);
      page.sort((a, b) => Buffer.compare(Buffer.from(a.key), Buffer.from(b.key)));
      yield* page;
      listed += page.length;
      onPage?.(listed);
      if (output.IsTruncated && output.NextKeyMarker === undefined) throw new StorageError('EIO', `LIST versions ${this.url(Prefix)}: a truncated answer without NextKeyMarker`);
      from = output.IsTruncated ? { KeyMarker: output.NextKeyMarker, VersionIdMarker: output.NextVersionIdMarker } : undefined;
    }
  }

  deleteVersions(versions: readonly VersionRef[]): Promise<void> {
    return this.deleteWith(versions, this.policy);
  }

  async getVersion(key: string, versionId: string, maxBytes = MAX_OBJECT_BYTES): Promise<Buffer | undefined> {
    const Key = this.keyPrefix + key;
    const object = await this.retry.run('get', `GET ${this.url(Key)} version ${versionId}`, this.readPolicy, async (signal) => {
      try {
        return await sdkGet(this.client, this.bucket, Key, signal, maxBytes, versionId);
      } catch (err) {
        if (statusOf(err) === 404 && ['NoSuchKey', 'NoSuchVersion'].includes(codeOf(err) ?? (err as Error).name)) return undefined;
        throw err;
      }
    });
    return object?.data;
  }

  flush(): Promise<void> {
    return Promise.resolve();
  }

  close(): Promise<void> {
    this.closing.abort(new Error('the store was closed'));
    this.client.destroy();
    this.direct?.close();
    return Promise.resolve();
  }

  private getWith(key: string, policy: Policy, maxBytes = MAX_OBJECT_BYTES): Promise<TaggedObject | undefined> {
    const Key = this.keyPrefix + key;
    return this.retry.run('get', `GET ${this.url(Key)}`, policy, async (signal) => {
      try {
        return await (this.direct ? this.direct.get(Key, signal, maxBytes) : sdkGet(this.client, this.bucket, Key, signal, maxBytes));
      } catch (err) {
        // Only S3's own "no such key" means the object is missing: a 404 page of a server that
        // is not S3 at all (a wrong port, a web server) must not read as "no volume here".
        if (statusOf(err) === 404 && (codeOf(err) === 'NoSuchKey' || (err as Error).name === 'NoSuchKey')) return undefined;
        throw err;
      }
    });
  }

  private async putWith(key: string, data: ObjectBody, policy: Policy): Promise<void> {
    const Key = this.keyPrefix + key;
    // The SDK takes one buffer: joined (and its CRC computed) once for every attempt.
    const sdkBody = this.direct ? undefined : body(joinedBody(data));
    await this.retry.run('put', `PUT ${this.url(Key)}`, policy, async (signal) => {
      if (this.direct) await this.direct.put(Key, data, signal);
      else await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key, ...sdkBody }), { abortSignal: signal });
    });
  }

  private async putIfWith(key: string, data: Buffer, expectedTag: string | undefined, policy: Policy): Promise<string | undefined> {
    const Key = this.keyPrefix + key;
    const condition = expectedTag === undefined ? { IfNoneMatch: '*' }
      : { IfMatch: this.unquotedIfMatch ? expectedTag.replace(/^"(.*)"$/, '$1') : expectedTag };
    let attempts = 0;
    const tag = await this.retry.run('put', `conditional PUT ${this.url(Key)}`, policy, async (signal) => {
      attempts++;
      try {
        const output = await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key, ...body(data), ...condition }), { abortSignal: signal });
        if (output.ETag === undefined) throw new Error('the response has no ETag');
        return output.ETag;
      } catch (err) {
        // 412: the condition failed. 404: If-Match on a key that is gone, the same for us.
        const status = statusOf(err);
        if (status === 412 || (status === 404 && expectedTag !== undefined && codeOf(err) !== 'NoSuchBucket')) return undefined;
        throw err;
      }
    }).catch((err: unknown) => {
      const refused = notImplemented(err);
      throw refused ? Errors.noConditionalWrites(this.description, `refuses ${expectedTag === undefined ? 'If-None-Match' : 'If-Match'} on PutObject (${refused})`) : err;
    });
    const quoted = expectedTag !== undefined && !this.unquotedIfMatch && /^".*"$/.test(expectedTag);
    if (tag !== undefined || (attempts === 1 && !quoted)) return tag;
    // An earlier attempt failed without a clear answer, so it may have written the object and
    // made this attempt's condition fail. If the object now holds exactly our bytes, the write
    // was ours (or indistinguishable from ours): report success, with its tag.
    const current = await this.getWith(key, policy);
    if (attempts > 1 && current?.data.equals(data)) return current.tag;
    // Or the object has the tag we sent and the server still said no: it wants it unquoted.
    if (quoted && current?.tag === expectedTag) {
      this.unquotedIfMatch = true;
      this.log?.warn({ store: this.description }, 'the S3 server refused If-Match with its own quoted ETag (as Ceph RGW 16 does): sending ETags unquoted');
      return this.putIfWith(key, data, expectedTag, policy);
    }
    return undefined;
  }

  /**
   * Throws UserError S3NBD_NO_CONDITIONAL_WRITES unless the server refuses conditional PUTs
   * whose condition fails; putIf() (volume creation, the lease) is all that keeps two
   * gateways from writing one volume. `key` must exist and hold `data`: each check PUTs
   * those same bytes, so a server that ignores the condition rewrites what was there. Two
   * small requests, answered 412 by a server that honours them, when a writer opens a volume.
   */
  checkConditionalWrites(key: string, data: Buffer): Promise<void> {
    return this.checkConditionsWith(key, data, this.policy);
  }

  private async checkConditionsWith(key: string, data: Buffer, policy: Policy): Promise<void> {
    const Key = this.keyPrefix + key;
    // An ETag is the quoted hex MD5 of the object (or of its parts): this one is nobody's.
    const checks = [{ IfNoneMatch: '*' }, { IfMatch: '"s3nbd-never-matches"' }];
    for (const condition of checks) {
      const header = Object.keys(condition)[0] === 'IfNoneMatch' ? 'If-None-Match: *' : 'If-Match';
      const accepted = await this.retry.run('put', `conditional-write check (${header}) PUT ${this.url(Key)}`, policy, async (signal) => {
        try {
          await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key, ...body(data), ...condition }), { abortSignal: signal });
          return true;
        } catch (err) {
          if (statusOf(err) === 412) return false;
          throw err;
        }
      }).catch((err: unknown) => {
        const refused = notImplemented(err);
        throw refused ? Errors.noConditionalWrites(this.description, `refuses ${header} on PutObject (${refused})`) : err;
      });
      if (accepted) {
        throw Errors.noConditionalWrites(this.description, `ignores ${header} on PutObject (a PUT that had to fail with 412 was accepted)`);
      }
    }
  }

  /** DeleteObjects: of the keys' current versions (adding a delete marker where the bucket keeps versions), or of the versions named. */
  private async deleteWith(objects: ReadonlyArray<{ readonly key: string; readonly versionId?: string }>, policy: Policy): Promise<void> {
    for (let start = 0; start < objects.length; start += DELETE_BATCH) {
      let pending = objects.slice(start, start + DELETE_BATCH).map((o) => ({ Key: this.keyPrefix + o.key, VersionId: o.versionId }));
      const what = pending.some((o) => o.VersionId !== undefined) ? 'versions' : 'keys';
      await this.retry.run('delete', `DELETE ${pending.length} ${what} from ${this.url('')}`, policy, async (signal) => {
        const output = await this.client.send(new DeleteObjectsCommand({
          Bucket: this.bucket,
          Delete: { Objects: pending, Quiet: true },
        }), { abortSignal: signal });
        // Quiet: only the failures are listed. Missing keys and versions are not failures.
        const errors = (output.Errors ?? []).filter((e) => e.Code !== 'NoSuchKey' && e.Code !== 'NoSuchVersion');
        if (errors.length === 0) return;
        // Try again with only the keys that failed, if retrying can help them at all.
        pending = errors.flatMap((e) => e.Key ? [{ Key: e.Key, VersionId: e.VersionId }] : []);
        const first = errors[0]!;
        throw Object.assign(new Error(`${errors.length} keys not deleted, e.g. ${first.Key}: ${first.Code} ${first.Message}`), {
          Code: errors.find((e) => !isTransientCode(e.Code))?.Code ?? first.Code,
        });
      });
    }
  }

  private async *listWith(prefix: string, policy: Policy): AsyncIterable<string> {
    const Prefix = this.keyPrefix + prefix;
    let token: string | undefined;
    do {
      const ContinuationToken = token;
      const output = await this.retry.run('list', `LIST ${this.url(Prefix)}`, policy, (signal) => this.client.send(new ListObjectsV2Command({
        Bucket: this.bucket, Prefix, ContinuationToken,
      }), { abortSignal: signal }));
      for (const object of output.Contents ?? []) {
        if (object.Key?.startsWith(this.keyPrefix)) yield object.Key.slice(this.keyPrefix.length);
      }
      token = output.IsTruncated ? output.NextContinuationToken : undefined;
    } while (token !== undefined);
  }

  private url(key: string): string {
    return `s3://${this.bucket}/${key}`;
  }
}

/**
 * A PutObject's body, with its CRC-32 (x-amz-checksum-crc32), which S3 checks: AWS refuses a
 * PUT without a checksum in a bucket with Object Lock, and the direct path sends the same.
 */
function body(data: Buffer): { Body: Buffer; ContentLength: number; ChecksumCRC32: string } {
  return { Body: data, ContentLength: data.length, ChecksumCRC32: crc32Base64(data) };
}

/** The prefix with single slashes and none at either end ('' for none). */
export function normalisePrefix(prefix: string): string {
  return prefix.split('/').filter((part) => part !== '').join('/');
}
