// The writer lease under S3 faults, on MinIO (issue 14, scenario 2): the lease never fences its
// own holder. MinIO is paused (SIGSTOP) for many lease lifetimes while a gateway is idle and
// while it is written to: the gateway stays up, acknowledges the writes, uploads them once S3
// is back, and a FLUSH sent during the stall completes after it. A renewal whose answer is
// lost (the fault proxy forwards it and drops the answer) is recognised as ours. A real take-
// over by a second gateway still fences the first (exit 3). Real gateways (the built CLI).

import assert from 'node:assert/strict';
import { randomFillSync } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CLI, type Gateway, startGateway, tempDir } from '../helpers/gateway.ts';
import { credentialsEnv, type S3TestServer, startMinio } from '../helpers/minio.ts';
import { type S3FaultProxy, kindIs, startFaultProxy } from '../helpers/s3-fault-proxy.ts';
import { requireTool, run, runOk } from '../helpers/tools.ts';

const MiB = 1 << 20;
const BUCKET = 's3nbd-lease-tests';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('the writer lease under S3 stalls and lost answers', () => {
  const dir = tempDir('lease-stall');
  let s3: S3TestServer;
  let proxy: S3FaultProxy;
  let env: NodeJS.ProcessEnv;
  let n = 0;
  const newStore = (): string => `s3://${BUCKET}/vol${++n}-${Date.now()}`;
  const socket = (name: string): string => join(dir.path, `${name}${n}.sock`);

  before(async () => {
    for (const tool of ['nbdcopy', 'nbdsh'] as const) requireTool(tool);
    s3 = await startMinio();
    await s3.createBucket(BUCKET);
    proxy = await startFaultProxy(s3.endpoint);
    env = credentialsEnv(s3);
  });
  after(async () => {
    await proxy.close();
    await s3.stop();
    dir.remove();
  });

  const image = (bytes: number): { path: string; data: Buffer } => {
    const data = Buffer.alloc(bytes);
    randomFillSync(data);
    const path = join(dir.path, `image${++n}`);
    writeFileSync(path, data);
    return { path, data };
  };
  /** Reads the volume back through a fresh gateway with an empty cache: only what is in S3. */
  const readFromS3 = async (store: string, bytes: number): Promise<Buffer> => {
    const gw = await startGateway(['--store', store, '--s3-endpoint', s3.endpoint, '--read-only'], { socket: socket('check'), env });
    const out = join(dir.path, `out${++n}`);
    await runOk('nbdcopy', [gw.uri, out]);
    assert.equal(await gw.stop(), 0);
    return readFileSync(out).subarray(0, bytes);
  };
  const assertAlive = (gw: Gateway): void => {
    assert.equal(gw.process.exitCode, null, `the gateway is still running:\n${gw.logs().slice(-3000)}`);
    assert.doesNotMatch(gw.logs(), /lease lost/);
  };
  /** Pauses MinIO for `ms`, resuming it whatever happens. */
  const stall = async (ms: number, during: () => Promise<void> = () => sleep(ms)): Promise<void> => {
    await s3.pause();
    const resumeAt = Date.now() + ms;
    try {
      await during();
      await sleep(resumeAt - Date.now());
    } finally {
      s3.resume();
    }
  };

  it('keeps an idle gateway through a 45 s stall with the default lease (the stall of the issue)', async () => {
    const store = newStore();
    const gw = await startGateway(['--store', store, '--s3-endpoint', s3.endpoint, '--size', '64M'], { socket: socket('idle45'), env });
    await sleep(1000);
    await stall(45_000);
    await sleep(3000);
    assertAlive(gw);
    const one = image(2 * MiB);
    await runOk('nbdcopy', ['--flush', one.path, gw.uri], { timeoutMs: 60_000 });
    assert.equal(await gw.stop(), 0);
    assert.ok((await readFromS3(store, 2 * MiB)).equals(one.data));
  });

  it('keeps an idle gateway through a stall of 5 lease lifetimes', async () => {
    const store = newStore();
    const gw = await startGateway(['--store', store, '--s3-endpoint', s3.endpoint, '--size', '64M', '--lease-ttl', '3'], { socket: socket('idle'), env });
    await sleep(1500);
    await stall(15_000);
    await sleep(4000); // renewals after the stall: one must find its own earlier write
    assertAlive(gw);
    const one = image(2 * MiB);
    await runOk('nbdcopy', ['--flush', one.path, gw.uri], { timeoutMs: 60_000 });
    assert.equal(await gw.stop(), 0);
  });

  it('acknowledges writes during a stall, uploads them after it, and a FLUSH sent during it completes after', async () => {
    const store = newStore();
    const gw = await startGateway(['--store', store, '--s3-endpoint', s3.endpoint, '--size', '64M', '--lease-ttl', '3'], { socket: socket('busy'), env });
    const one = image(8 * MiB);
    let flushed: Promise<number | null> | undefined;
    let flushDone = false;
    await stall(15_000, async () => {
      // Acknowledged from the journal, S3 or no S3 (well under --max-dirty).
      const started = Date.now();
      await runOk('nbdcopy', [one.path, gw.uri], { timeoutMs: 10_000 });
      assert.ok(Date.now() - started < 10_000);
      flushed = run('nbdsh', ['-u', gw.uri, '-c', 'h.flush()'], { timeoutMs: 90_000 }).then((r) => {
        flushDone = true;
        return r.code;
      });
      await sleep(9000); // past the lease's validity: uploads are paused now
      assert.equal(flushDone, false, 'a FLUSH cannot complete while S3 is away');
      assertAlive(gw);
      assert.match(gw.logs(), /"msg":"lease not renewed in time \(S3 unreachable or slow\): uploads paused/);
    });
    const resumed = Date.now();
    assert.equal(await flushed, 0, 'the FLUSH completes once S3 is back');
    const flushMs = Date.now() - resumed;
    assertAlive(gw);
    assert.match(gw.logs(), /"msg":"lease renewed again; uploads resume"/);
    assert.ok(flushMs < 45_000, `the FLUSH completed ${flushMs} ms after S3 came back`);
    // FLUSH answered: the data is in S3, whatever happens to the gateway now.
    await gw.stop('SIGKILL');
    assert.ok((await readFromS3(store, 8 * MiB)).equals(one.data), 'every acknowledged byte is in S3');
  });

  it('recognises a renewal whose PUT took effect but whose answer was lost', async () => {
    const store = newStore();
    const gw = await startGateway(['--store', store, '--s3-endpoint', proxy.endpoint, '--size', '64M', '--lease-ttl', '3'], { socket: socket('drop'), env });
    // Every attempt of one renewal (the S3 client tries 6 times) reaches MinIO, and no answer
    // comes back: the first one wrote the lease, the others met its new ETag.
    proxy.dropResponseNext(6, kindIs('PUT object', 's3nbd-lease.json'));
    const deadline = Date.now() + 30_000;
    while (proxy.requests.filter((r) => r.fault === 'drop').length < 6) {
      assert.ok(Date.now() < deadline, 'the renewals reached the proxy');
      await sleep(100);
    }
    await sleep(4000);
    assertAlive(gw);
    assert.match(gw.logs(), /lease renewal met an earlier renewal of ours whose answer was lost/);
    const one = image(2 * MiB);
    await runOk('nbdcopy', ['--flush', one.path, gw.uri], { timeoutMs: 60_000 });
    assert.equal(await gw.stop(), 0);
    proxy.clearFaults();
  });

  it('refuses a second gateway on the same cache directory before it sends S3 a single request', async () => {
    const store = newStore();
    const cacheDir = join(dir.path, `lock-cache${n}`);
    const first = await startGateway(['--store', store, '--s3-endpoint', s3.endpoint, '--size', '64M', '--cache-dir', cacheDir], { socket: socket('holder'), env });
    // The refused ones talk to S3 through the proxy, the first one does not: every request the
    // proxy sees would be theirs.
    proxy.clearRequests();
    const unused = newStore();
    for (const target of [store, unused]) {
      const second = await run(process.execPath, [CLI, 'serve', '--store', target, '--s3-endpoint', proxy.endpoint, '--size', '64M', '--cache-dir', cacheDir,
        '--socket', socket('refused')], { env: { ...process.env, ...env }, timeoutMs: 15_000 });
      assert.equal(second.code, 2, `refused (null: still running after 15 s): ${second.stderr}`);
      assert.match(second.stderr, /^s3nbd: the cache directory .* is in use by another running gateway .*\(S3NBD_CACHE_DIR_LOCKED\)/);
    }
    assert.deepEqual(proxy.requests.map((r) => `${r.method} ${r.url}`), [], 'no volume created, no lease read or written');
    assert.equal(await first.stop(), 0);
  });

  it('is still fenced (exit 3) by a real take-over', async () => {
    const store = newStore();
    const first = await startGateway(['--store', store, '--s3-endpoint', s3.endpoint, '--size', '64M', '--lease-ttl', '3', '--cache-dir', join(dir.path, `a-cache${n}`)],
      { socket: socket('first'), env });
    const secondCache = join(dir.path, `b-cache${n}`);
    const second = await startGateway(['--store', store, '--s3-endpoint', s3.endpoint, '--lease-ttl', '3', '--take-over', '--cache-dir', secondCache], { socket: socket('second'), env });
    const secondId = (JSON.parse(readFileSync(join(secondCache, 'cache.json'), 'utf8')) as { gateway: string }).gateway;
    const code = await Promise.race([first.exited, sleep(10_000).then(() => 'still running')]);
    assert.equal(code, 3, first.logs().slice(-2000));
    assert.match(first.logs(), new RegExp(`"by":"${secondId} on [^"]*",.*"msg":"lease lost: another gateway took over`));
    const one = image(2 * MiB);
    await runOk('nbdcopy', ['--flush', one.path, second.uri], { timeoutMs: 60_000 });
    assert.equal(await second.stop(), 0);
  });
});
