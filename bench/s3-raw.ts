// s3-raw.ts - the "raw S3" limit of bench/s3.sh and bench/compare: PutObject / GetObject of N
// objects with a fixed number of requests in flight and the same key layout as s3nbd's
// extents, through one of two clients:
//   --client direct (default): s3nbd's own signed requests (src/storage/objects/s3/s3-direct.ts), the
//                    leanest client we have, so the limit is what the gateway adds to it;
//   --client sdk:    @aws-sdk/client-s3, the very client S3ObjectStore builds (src/storage/objects/s3/sdk-client.ts).
// Also creates the bucket, counts the objects under a prefix and reads MinIO's request counters.
// Run with Node's type stripping:
//
//   node bench/s3-raw.ts mkbucket --endpoint URL --bucket B
//   node bench/s3-raw.ts put      --endpoint URL --bucket B --prefix P --file F [--count 1024] [--size 1048576] [--concurrency 16] [--client direct|sdk]
//   node bench/s3-raw.ts get      --endpoint URL --bucket B --prefix P [--count 1024] [--size 1048576] [--concurrency 16] [--client direct|sdk]
//   node bench/s3-raw.ts objects  --endpoint URL --bucket B --prefix P
//   node bench/s3-raw.ts requests --endpoint URL
//   node bench/s3-raw.ts usage    --endpoint URL --bucket B --prefix P
//
// Credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. put and get print one JSON line,
// {"seconds":..,"bytes":..,"mibps":..,"cpuSeconds":..,"machineCpuSeconds":..,"machineBusy":..}, timed from the
// first request to the last response (machine*: every process's CPU then, MinIO's included)
// (put reads its object bodies from F into memory before the clock starts). objects prints
// {"objects":..,"bytes":..,"extentObjects":..,"extentBytes":..}: every object under P/ and
// their bytes, and those under P/extents/ (through the SDK, whatever --client says). requests prints
// MinIO's S3 request counters by API as JSON (needs MINIO_PROMETHEUS_AUTH_TYPE=public).
// Any failed request fails the run: nothing is retried.

import { readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { parseArgs } from 'node:util';
import {
  BucketAlreadyOwnedByYou,
  CreateBucketCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { type MachineUsage, watchMachine } from './compare/usage.ts';
import { extentKeyStem } from '../src/storage/extents/extent-keys.ts';
import { DirectS3 } from '../src/storage/objects/s3/s3-direct.ts';
import { createSdkClient } from '../src/storage/objects/s3/sdk-client.ts';

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    endpoint: { type: 'string' },
    bucket: { type: 'string' },
    prefix: { type: 'string', default: '' },
    file: { type: 'string' },
    count: { type: 'string', default: '1024' },
    size: { type: 'string', default: String(2 ** 20) },
    concurrency: { type: 'string', default: '16' },
    client: { type: 'string', default: 'direct' },
  },
});

function fail(message: string): never {
  process.stderr.write(`s3-raw.ts: error: ${message}\n`);
  process.exit(1);
}

function whole(name: string, text: string | undefined): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) fail(`--${name} must be a whole number >= 1, got '${text}'`);
  return n;
}

const command = positionals[0];
const endpoint = values.endpoint ?? fail('--endpoint is required');
const count = whole('count', values.count);
const size = whole('size', values.size);
const concurrency = whole('concurrency', values.concurrency);
const prefix = values.prefix.split('/').filter((p) => p !== '').join('/');
const keyOf = (i: number): string => (prefix === '' ? '' : `${prefix}/`) + extentKeyStem(i);
if (values.client !== 'direct' && values.client !== 'sdk') fail(`--client must be direct or sdk, got '${values.client}'`);
const useSdk = values.client === 'sdk';
const never = new AbortController().signal;

function directClient(bucket: string): DirectS3 {
  const accessKeyId = process.env.AWS_ACCESS_KEY_ID ?? fail('AWS_ACCESS_KEY_ID is not set');
  const secretAccessKey = process.env.AWS_SECRET_ACCESS_KEY ?? fail('AWS_SECRET_ACCESS_KEY is not set');
  return new DirectS3({
    endpoint: new URL(endpoint), bucket, maxSockets: 50,
    credentials: () => Promise.resolve({ accessKeyId, secretAccessKey }),
    region: () => Promise.resolve(process.env.AWS_REGION ?? 'us-east-1'),
  });
}

function client(): S3Client {
  // The client S3ObjectStore builds (sdk-client.ts), so the raw side cannot drift from it.
  return createSdkClient({
    endpoint, region: process.env.AWS_REGION ?? 'us-east-1', forcePathStyle: true, credentials: undefined,
    maxSockets: 50, requestTimeoutMs: 30_000, log: undefined,
  });
}

/** Runs job(0..count-1) with `concurrency` in flight; returns the wall time in seconds. */
async function pool(job: (i: number) => Promise<void>): Promise<number> {
  let next = 0;
  cpuStart = process.cpuUsage();
  machine = watchMachine();
  const start = process.hrtime.bigint();
  const worker = async (): Promise<void> => {
    while (next < count) await job(next++);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  machineUsed = machine();
  return Number(process.hrtime.bigint() - start) / 1e9;
}

let cpuStart = process.cpuUsage();
let machine = watchMachine();
let machineUsed: MachineUsage | undefined;

/** The run as JSON, with this process's CPU time (user + system) and the machine's during pool(). */
function report(seconds: number): void {
  const bytes = count * size;
  const cpu = process.cpuUsage(cpuStart);
  const cpuSeconds = (cpu.user + cpu.system) / 1e6;
  process.stdout.write(`${JSON.stringify({ seconds, bytes, mibps: bytes / 2 ** 20 / seconds, cpuSeconds, ...machineUsed })}\n`);
}

async function readAll(body: unknown): Promise<number> {
  if (!(body instanceof Readable)) throw new Error('the response has no body stream');
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of body) {
    chunks.push(chunk as Buffer);
    total += (chunk as Buffer).length;
  }
  // Like the store: one Buffer per object.
  if (chunks.length > 1) Buffer.concat(chunks, total);
  return total;
}

async function metrics(): Promise<Record<string, number>> {
  const response = await fetch(`${endpoint}/minio/v2/metrics/node`, { signal: AbortSignal.timeout(10_000) });
  if (!response.ok) fail(`MinIO metrics: HTTP ${response.status} (is MINIO_PROMETHEUS_AUTH_TYPE=public set?)`);
  const counts: Record<string, number> = {};
  for (const line of (await response.text()).split('\n')) {
    const match = /^minio_s3_requests_total\{([^}]*)\} (\S+)$/.exec(line);
    const api = match && /api="([^"]+)"/.exec(match[1]!)?.[1];
    if (match && api) counts[api] = (counts[api] ?? 0) + Number(match[2]);
  }
  return counts;
}

switch (command) {
  case 'mkbucket': {
    const s3 = client();
    try {
      await s3.send(new CreateBucketCommand({ Bucket: values.bucket ?? fail('--bucket is required') }));
    } catch (err) {
      if (!(err instanceof BucketAlreadyOwnedByYou)) throw err;
    } finally {
      s3.destroy();
    }
    break;
  }
  case 'put': {
    const Bucket = values.bucket ?? fail('--bucket is required');
    const file = readFileSync(values.file ?? fail('--file is required'));
    if (file.length < count * size) fail(`--file has ${file.length} bytes, fewer than --count x --size = ${count * size}`);
    const bodies = Array.from({ length: count }, (_, i) => file.subarray(i * size, (i + 1) * size));
    if (useSdk) {
      const s3 = client();
      const seconds = await pool(async (i) => {
        await s3.send(new PutObjectCommand({ Bucket, Key: keyOf(i), Body: bodies[i], ContentLength: size }));
      });
      s3.destroy();
      report(seconds);
    } else {
      const direct = directClient(Bucket);
      const seconds = await pool(async (i) => {
        await direct.put(keyOf(i), bodies[i]!, never);
      });
      direct.close();
      report(seconds);
    }
    break;
  }
  case 'get': {
    const Bucket = values.bucket ?? fail('--bucket is required');
    const check = (i: number, got: number): void => {
      if (got !== size) throw new Error(`GET ${keyOf(i)}: ${got} bytes, expected ${size}`);
    };
    if (useSdk) {
      const s3 = client();
      const seconds = await pool(async (i) => {
        const output = await s3.send(new GetObjectCommand({ Bucket, Key: keyOf(i) }));
        check(i, await readAll(output.Body));
      });
      s3.destroy();
      report(seconds);
    } else {
      const direct = directClient(Bucket);
      const seconds = await pool(async (i) => {
        check(i, (await direct.get(keyOf(i), never)).data.length);
      });
      direct.close();
      report(seconds);
    }
    break;
  }
  case 'objects': {
    const Bucket = values.bucket ?? fail('--bucket is required');
    const s3 = client();
    const Prefix = prefix === '' ? '' : `${prefix}/`;
    let objects = 0, bytes = 0, extentObjects = 0, extentBytes = 0;
    let ContinuationToken: string | undefined;
    do {
      const page = await s3.send(new ListObjectsV2Command({ Bucket, Prefix, ContinuationToken }));
      for (const o of page.Contents ?? []) {
        objects++;
        bytes += o.Size ?? 0;
        if (o.Key?.startsWith(`${Prefix}extents/`)) {
          extentObjects++;
          extentBytes += o.Size ?? 0;
        }
      }
      ContinuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (ContinuationToken);
    s3.destroy();
    process.stdout.write(`${JSON.stringify({ objects, bytes, extentObjects, extentBytes })}\n`);
    break;
  }
  case 'requests':
    process.stdout.write(`${JSON.stringify(await metrics())}\n`);
    break;
  default:
    fail(`unknown command '${command ?? ''}' (mkbucket, put, get, objects or requests)`);
}
