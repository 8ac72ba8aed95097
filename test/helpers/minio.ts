// A real S3 server for integration tests: the MinIO binary that scripts/install-minio.sh
// builds and caches, started on 127.0.0.1 with a throw-away data directory. Setting
// S3NBD_TEST_S3_ENDPOINT (with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) points the tests
// at a server you run yourself instead (see localstack/README.md); that one cannot be paused
// or restarted from here. A missing binary is built, and a build that cannot run fails the
// tests: never a skip.

import { registerSecret } from './log-sweep.ts';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { accessSync, constants, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { BucketAlreadyOwnedByYou, CreateBucketCommand, PutObjectLockConfigurationCommand, S3Client } from '@aws-sdk/client-s3';
import { freePort, REPO } from './tools.ts';

const MINIO_RELEASE = 'RELEASE.2025-10-15T17-29-55Z';
const ROOT_USER = 's3nbdtest';
const ROOT_PASSWORD = 's3nbdtestsecret';
registerSecret('MinIO secret key', ROOT_PASSWORD);
const START_TIMEOUT_MS = 30_000;

export interface S3TestServer {
  /** http://127.0.0.1:PORT (or S3NBD_TEST_S3_ENDPOINT). */
  readonly endpoint: string;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly region: string;
  /** False for an external server: pause, resume and restart then throw. */
  readonly controllable: boolean;
  /** The server's process while one we started runs (bench/compare measures its CPU). */
  readonly pid?: number | undefined;
  /** Creates the bucket (an existing one of ours is fine). */
  createBucket(name: string): Promise<void>;
  /**
   * SIGSTOP: connections are still accepted by the kernel, but nothing answers. Resolves once
   * every thread has stopped: the signal takes effect asynchronously, and a thread still
   * running could answer one more request.
   */
  pause(): Promise<void>;
  /** SIGCONT after pause(). */
  resume(): void;
  /**
   * Stops the server (SIGKILL) and starts it again on the same port and data directory;
   * `whileDown` runs in between (a test watching what the gateway does while S3 is gone).
   */
  restart(whileDown?: () => Promise<void>): Promise<void>;
  /** Kills the server and removes its data. A no-op for an external server, so after() hooks can always call it. */
  stop(): Promise<void>;
}

/** Starts MinIO, or returns the external server named by S3NBD_TEST_S3_ENDPOINT. */
export async function startMinio(): Promise<S3TestServer> {
  const external = process.env.S3NBD_TEST_S3_ENDPOINT;
  if (external) return externalServer(external);
  const binary = minioBinary();
  const port = await freePort();
  const dataDir = mkdtempSync(join(tmpdir(), 's3nbd-minio-'));
  const server = new LocalMinio(binary, port, dataDir);
  try {
    await server.start();
  } catch (err) {
    await server.stop();
    throw err;
  }
  return server;
}

/** The cached binary, built first when it is missing. */
function minioBinary(): string {
  const cached = join(process.env.S3NBD_CACHE_DIR ?? join(homedir(), '.cache/s3nbd'), `minio-${MINIO_RELEASE}`, 'minio');
  try {
    accessSync(cached, constants.X_OK);
    return cached;
  } catch {
    // Build it below.
  }
  const result = spawnSync('bash', [join(REPO, 'scripts/install-minio.sh')], { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' });
  const path = result.stdout.trim().split('\n').pop();
  if (result.status !== 0 || !path) {
    throw new Error(`scripts/install-minio.sh failed (exit ${result.status}): the S3 integration tests need MinIO; see its output above`);
  }
  return path;
}


const running = new Set<ChildProcess>();
const dataDirs = new Set<string>();
// No MinIO outlives this process. First in line: node:test's own exit listener can throw,
// which skips the listeners after it.
process.prependListener('exit', () => {
  for (const child of running) child.kill('SIGKILL');
  for (const dir of dataDirs) rmSync(dir, { recursive: true, force: true });
});

/**
 * For deaths the 'exit' event never sees (SIGKILL, a test runner's timeout): a shell that
 * waits for its stdin, our pipe, to close, which happens however we die, then kills `pid`.
 */
export function watchdog(pid: number): ChildProcess {
  const dog = spawn('sh', ['-c', 'read -r _; kill -KILL "$0" 2>/dev/null', String(pid)], { stdio: ['pipe', 'ignore', 'ignore'] });
  // Neither the shell nor its pipe may keep the test process alive.
  dog.unref();
  (dog.stdin as unknown as { unref(): void }).unref();
  return dog;
}

class LocalMinio implements S3TestServer {
  readonly endpoint: string;
  readonly accessKeyId = ROOT_USER;
  readonly secretAccessKey = ROOT_PASSWORD;
  readonly region = 'us-east-1';
  readonly controllable = true;
  private readonly binary: string;
  private readonly port: number;
  private readonly dataDir: string;
  private child: ChildProcess | undefined;

  get pid(): number | undefined {
    return this.child?.pid;
  }
  private exited: Promise<void> = Promise.resolve();
  private output = '';

  constructor(binary: string, port: number, dataDir: string) {
    this.binary = binary;
    this.port = port;
    this.dataDir = dataDir;
    dataDirs.add(dataDir);
    this.endpoint = `http://127.0.0.1:${port}`;
  }

  async start(): Promise<void> {
    this.output = '';
    const child = spawn(this.binary, [
      'server', join(this.dataDir, 'data'),
      '--address', `127.0.0.1:${this.port}`,
      // Not ~/.minio/certs: leave the user's home alone.
      '--certs-dir', join(this.dataDir, 'certs'),
      '--quiet',
    ], {
      env: {
        PATH: process.env.PATH,
        HOME: this.dataDir,
        MINIO_ROOT_USER: ROOT_USER,
        MINIO_ROOT_PASSWORD: ROOT_PASSWORD,
        MINIO_BROWSER: 'off',
        MINIO_UPDATE: 'off',
        // Request counters for the benchmarks (bench/compare), readable without a token.
        MINIO_PROMETHEUS_AUTH_TYPE: 'public',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    running.add(child);
    const dog = child.pid === undefined ? undefined : watchdog(child.pid);
    child.stdout?.on('data', (d: Buffer) => { this.output += d.toString(); });
    child.stderr?.on('data', (d: Buffer) => { this.output += d.toString(); });
    this.exited = new Promise((resolve) => child.once('exit', () => {
      running.delete(child);
      dog?.kill('SIGKILL');
      resolve();
    }));
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`MinIO exited while starting:\n${this.output}`);
      if (await isLive(this.endpoint)) return;
      if (Date.now() > deadline) throw new Error(`MinIO was not live after ${START_TIMEOUT_MS} ms:\n${this.output}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async createBucket(name: string): Promise<void> {
    await createBucket(this, name);
  }

  async pause(): Promise<void> {
    this.signal('SIGSTOP');
    await whenStopped(this.child!.pid!, 'MinIO');
  }

  resume(): void {
    this.signal('SIGCONT');
  }

  async restart(whileDown?: () => Promise<void>): Promise<void> {
    await this.kill();
    await whileDown?.();
    await this.start();
  }

  async stop(): Promise<void> {
    await this.kill();
    rmSync(this.dataDir, { recursive: true, force: true });
    dataDirs.delete(this.dataDir);
  }

  private signal(signal: NodeJS.Signals): void {
    if (!this.child || this.child.exitCode !== null || this.child.signalCode !== null) throw new Error('MinIO is not running');
    this.child.kill(signal);
  }

  /** SIGKILL works on a paused process too, and the data on disk is all MinIO needs to restart. */
  private async kill(): Promise<void> {
    this.child?.kill('SIGKILL');
    await this.exited;
    this.child = undefined;
  }
}

/** Resolves once every thread of `pid`, sent SIGSTOP, has stopped (the signal takes effect asynchronously). */
export async function whenStopped(pid: number, name: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!allThreadsStopped(pid)) {
    if (Date.now() > deadline) throw new Error(`${name} (pid ${pid}) did not stop within 5 s of SIGSTOP`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Linux: every thread's state in /proc is T (stopped). */
function allThreadsStopped(pid: number): boolean {
  try {
    return readdirSync(`/proc/${pid}/task`).every((tid) => {
      // The state follows the parenthesised command name, which may itself contain spaces.
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      return /^[Tt]$/.test(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0] ?? '');
    });
  } catch {
    return true; // No /proc (not Linux): nothing to wait on.
  }
}

async function isLive(endpoint: string): Promise<boolean> {
  try {
    const response = await fetch(`${endpoint}/minio/health/live`, { signal: AbortSignal.timeout(2000) });
    return response.ok;
  } catch {
    return false;
  }
}

function externalServer(endpoint: string): S3TestServer {
  const accessKeyId = process.env.AWS_ACCESS_KEY_ID;
  const secretAccessKey = process.env.AWS_SECRET_ACCESS_KEY;
  if (!accessKeyId || !secretAccessKey) {
    throw new Error('S3NBD_TEST_S3_ENDPOINT is set: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for that server too');
  }
  const unavailable = (what: string) => (): never => {
    throw new Error(`cannot ${what} the external S3 server ${endpoint} (S3NBD_TEST_S3_ENDPOINT): unset it to run this test against a local MinIO`);
  };
  const server: S3TestServer = {
    endpoint,
    accessKeyId,
    secretAccessKey,
    region: process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1',
    controllable: false,
    createBucket: (name) => createBucket(server, name),
    pause: () => Promise.reject(new Error(`cannot pause the external S3 server ${endpoint} (S3NBD_TEST_S3_ENDPOINT)`)),
    resume: unavailable('resume'),
    restart: () => Promise.reject(new Error(`cannot restart the external S3 server ${endpoint} (S3NBD_TEST_S3_ENDPOINT)`)),
    stop: () => Promise.resolve(),
  };
  return server;
}

/** An SDK client of the server's, with its credentials; destroy() it after use. */
/** The environment a gateway or command needs to reach `server` with its credentials. */
export function credentialsEnv(server: S3TestServer): NodeJS.ProcessEnv {
  return { AWS_ACCESS_KEY_ID: server.accessKeyId, AWS_SECRET_ACCESS_KEY: server.secretAccessKey, AWS_REGION: server.region };
}

export function sdkClient(server: S3TestServer): S3Client {
  return new S3Client({
    endpoint: server.endpoint,
    region: server.region,
    forcePathStyle: true,
    credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
  });
}

export async function createBucket(server: S3TestServer, name: string): Promise<void> {
  const client = sdkClient(server);
  try {
    await client.send(new CreateBucketCommand({ Bucket: name }));
  } catch (err) {
    if (!(err instanceof BucketAlreadyOwnedByYou)) throw err;
  } finally {
    client.destroy();
  }
}

/**
 * Creates a bucket with S3 Object Lock (and so versioning), whose objects are each kept for
 * `days` after they are written: as on AWS, through the S3 API (CreateBucket with
 * ObjectLockEnabledForBucket, then a default retention). In GOVERNANCE mode only a request
 * with x-amz-bypass-governance-retention, from someone allowed to, deletes such a version early.
 */
export async function createLockedBucket(server: S3TestServer, name: string, retention: { mode: 'GOVERNANCE' | 'COMPLIANCE'; days: number }): Promise<void> {
  const client = sdkClient(server);
  try {
    await client.send(new CreateBucketCommand({ Bucket: name, ObjectLockEnabledForBucket: true }));
    await client.send(new PutObjectLockConfigurationCommand({
      Bucket: name,
      ObjectLockConfiguration: { ObjectLockEnabled: 'Enabled', Rule: { DefaultRetention: { Mode: retention.mode, Days: retention.days } } },
    }));
  } finally {
    client.destroy();
  }
}
