// S3ObjectStore against each real S3 server (MinIO and Ceph RGW, see test/helpers/s3-servers.ts),
// with a fault proxy in front of it where a test needs the server to misbehave.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { UserError } from '../../src/errors.ts';
import { StorageError } from '../../src/storage/storage-error.ts';
import { DirectS3, USER_AGENT } from '../../src/storage/objects/s3/s3-direct.ts';
import { S3ObjectStore, type S3ObjectStoreConfig } from '../../src/storage/objects/s3/s3-object-store.ts';
import { parseS3Url } from '../../src/storage/objects/store-url.ts';
import type { S3TestServer } from '../helpers/minio.ts';
import { kindIs, type S3FaultProxy, startFaultProxy } from '../helpers/s3-fault-proxy.ts';
import { S3_SERVERS } from '../helpers/s3-servers.ts';
import { recordingClock } from '../helpers/manual-clock.ts';

async function keys(store: { list(prefix: string): AsyncIterable<string> }, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for await (const k of store.list(prefix)) out.push(k);
  return out.sort();
}

/** Rejects with a StorageError carrying `errno`, whose message matches `message`. */
async function rejectsWith(promise: Promise<unknown>, errno: string, message?: RegExp): Promise<StorageError> {
  let caught: unknown;
  await promise.then(() => assert.fail(`expected ${errno}, but it succeeded`), (err: unknown) => { caught = err; });
  assert.ok(caught instanceof StorageError, `expected a StorageError, got ${String(caught)}`);
  assert.equal(caught.errno, errno, caught.message);
  if (message) assert.match(caught.message, message);
  return caught;
}

for (const kind of S3_SERVERS) describe(`S3ObjectStore on a real S3 server: ${kind.name}`, () => {
  let server: S3TestServer;
  let proxy: S3FaultProxy;
  const bucket = `s3nbd-test-${randomBytes(4).toString('hex')}`;
  const stores: S3ObjectStore[] = [];
  // Ceph RGW 16 ignores x-amz-checksum-crc32, so there a store's first direct PUT goes out
  // twice, the second time signed (see DirectS3.put).
  const ignoresCrc = kind.name === 'Ceph RGW';

  before(async () => {
    server = await kind.start();
    await server.createBucket(bucket);
    proxy = await startFaultProxy(server.endpoint);
  });
  after(async () => {
    for (const store of stores) await store.close();
    await proxy?.close();
    await server?.stop();
  });

  /** A store under its own prefix (so tests do not see each other's keys), closed after the tests. */
  function open(config: Partial<S3ObjectStoreConfig> = {}): S3ObjectStore {
    const store = new S3ObjectStore({
      bucket,
      prefix: `t-${randomBytes(4).toString('hex')}`,
      endpoint: server.endpoint,
      region: server.region,
      credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
      ...config,
    });
    stores.push(store);
    return store;
  }

  /** A store behind the fault proxy, with backoff waits recorded instead of slept. */
  function openBehindProxy(config: Partial<S3ObjectStoreConfig> = {}, random = 0.5): { store: S3ObjectStore; waits: number[] } {
    const waits: number[] = [];
    const store = open({ endpoint: proxy.endpoint, clock: recordingClock({ waits, random }), ...config });
    return { store, waits };
  }

  it('puts, gets, replaces and tags objects; a missing key is undefined after one GET', async () => {
    const store = open({ prefix: 'basic/' });
    assert.match(store.description, new RegExp(`^s3://${bucket}/basic at http://127\\.0\\.0\\.1:\\d+$`));
    assert.ok(!store.description.includes(server.secretAccessKey));

    assert.equal(await store.get('missing'), undefined);
    assert.equal(await store.getTagged('missing'), undefined);
    assert.equal(store.stats.get, 2, 'a 404 is an answer, not retried');
    assert.equal(store.stats.retries, 0);

    await store.put('extents/00/1', Buffer.from('one'));
    assert.equal((await store.get('extents/00/1'))?.toString(), 'one');
    const first = await store.getTagged('extents/00/1');
    await store.put('extents/00/1', Buffer.from('uno'));
    const second = await store.getTagged('extents/00/1');
    assert.equal(second?.data.toString(), 'uno');
    assert.ok(first && second && first.tag !== second.tag, 'replacing an object changes its tag');

    await store.put('empty', Buffer.alloc(0));
    assert.deepEqual(await store.get('empty'), Buffer.alloc(0));
    // Several MB: a body that arrives in many chunks, and a PUT without 100-continue.
    const big = randomBytes(5 * 1024 * 1024 + 17);
    await store.put('big', big);
    assert.ok((await store.get('big'))?.equals(big));
    assert.deepEqual(await keys(store), ['big', 'empty', 'extents/00/1']);
    await store.flush();
  });

  it('compare-and-swaps: creates only when absent, replaces only the expected version', async () => {
    const store = open();
    const first = await store.putIf('k', Buffer.from('first'), undefined);
    assert.ok(first);
    assert.equal(await store.putIf('k', Buffer.from('second'), undefined), undefined, 'create-if-absent fails on an existing key');
    assert.deepEqual(await store.getTagged('k'), { data: Buffer.from('first'), tag: first });
    const second = await store.putIf('k', Buffer.from('second'), first);
    assert.ok(second && second !== first);
    assert.equal(await store.putIf('k', Buffer.from('stale'), first), undefined, 'an old tag no longer matches');
    assert.equal((await store.get('k'))?.toString(), 'second');
    await store.deleteMany(['k']);
    assert.equal(await store.putIf('k', Buffer.from('gone'), second), undefined, 'a tag does not match a deleted key');
    assert.equal(await store.get('k'), undefined);
  });

  it('lets exactly one of several racing creators, and of several racing swaps, win', async () => {
    const store = open();
    const racers = [1, 2, 3, 4, 5, 6];
    const created = await Promise.all(racers.map((i) => store.putIf('race', Buffer.from(`create${i}`), undefined)));
    assert.equal(created.filter(Boolean).length, 1, 'exactly one concurrent creator wins');
    const winner = racers[created.findIndex(Boolean)]!;
    const current = (await store.getTagged('race'))!;
    assert.equal(current.data.toString(), `create${winner}`);
    assert.equal(current.tag, created.find(Boolean));

    const swapped = await Promise.all(racers.map((i) => store.putIf('race', Buffer.from(`swap${i}`), current.tag)));
    assert.equal(swapped.filter(Boolean).length, 1, 'exactly one concurrent swap from the same version wins');
    const swapWinner = racers[swapped.findIndex(Boolean)]!;
    assert.equal((await store.get('race'))?.toString(), `swap${swapWinner}`);
  });

  it('lists in pages and deletes in batches of at most 1000', async () => {
    const store = open();
    const all = Array.from({ length: 1010 }, (_, i) => `extents/${String(i).padStart(4, '0')}`);
    for (let i = 0; i < all.length; i += 100) {
      await Promise.all(all.slice(i, i + 100).map((key) => store.put(key, Buffer.from(key))));
    }
    const listsBefore = store.stats.list;
    assert.deepEqual(await keys(store, 'extents/'), all);
    assert.equal(store.stats.list - listsBefore, 2, 'S3 returns at most 1000 keys per page');
    assert.deepEqual(await keys(store, 'extents/100'), all.slice(1000));

    const deletesBefore = store.stats.delete;
    await store.deleteMany([...all.slice(0, 1005), 'never-existed']);
    assert.equal(store.stats.delete - deletesBefore, 2, '1006 keys take two DeleteObjects requests');
    assert.deepEqual(await keys(store), all.slice(1005));
    await store.deleteMany([]);
    assert.equal(store.stats.delete - deletesBefore, 2, 'nothing to delete sends nothing');
  });

  it('keeps stores with different prefixes in one bucket apart', async () => {
    const a = open({ prefix: 'iso/p' });
    const b = open({ prefix: '/iso//p2/' });
    const root = open({ prefix: '' });
    await a.put('x', Buffer.from('from a'));
    await b.put('x', Buffer.from('from b'));
    await b.put('only-b', Buffer.from('b'));
    assert.deepEqual(await keys(a), ['x'], '"iso/p" must not see the keys of "iso/p2"');
    assert.deepEqual(await keys(b), ['only-b', 'x']);
    assert.equal((await a.get('x'))?.toString(), 'from a');
    assert.equal(await a.get('only-b'), undefined);
    assert.deepEqual(await keys(root, 'iso/'), ['iso/p/x', 'iso/p2/only-b', 'iso/p2/x'], 'slashes in the prefix are normalised');
    await a.deleteMany(['x', 'only-b']);
    assert.deepEqual(await keys(a), []);
    assert.deepEqual(await keys(b), ['only-b', 'x'], 'deleting in one store leaves the other alone');
    assert.match(root.description, new RegExp(`^s3://${bucket} at `));
  });

  it('lists the names one level below a prefix (serve --volumes), not the keys under them', async () => {
    const store = open();
    for (const key of ['vm1/s3nbd-volume.json', 'vm1/extents/0', 'vm1/extents/1', 'vm2/deep/er/x', 'top', 'vm10/y']) await store.put(key, Buffer.from('x'));
    const names = async (prefix: string): Promise<string[]> => {
      const out: string[] = [];
      for await (const name of store.listPrefixes(prefix)) out.push(name);
      return out.sort();
    };
    const lists = store.stats.list;
    assert.deepEqual(await names(''), ['vm1', 'vm10', 'vm2']);
    assert.equal(store.stats.list - lists, 1, 'one LIST');
    assert.deepEqual(await names('vm1/'), ['extents']);
    assert.deepEqual(await names('vm2/deep/'), ['er']);
    assert.deepEqual(await names('none/'), []);
  });

  it('fails with EPERM, without retrying, when the credentials are wrong', async () => {
    const store = open({ credentials: { accessKeyId: server.accessKeyId, secretAccessKey: 'not-the-secret' } });
    await rejectsWith(store.get('k'), 'EPERM', /SignatureDoesNotMatch|AccessDenied|InvalidAccessKeyId/);
    await rejectsWith(store.put('k', Buffer.from('x')), 'EPERM');
    await rejectsWith(store.deleteMany(['k']), 'EPERM');
    assert.deepEqual([store.stats.get, store.stats.put, store.stats.delete, store.stats.retries], [1, 1, 1, 0]);
    const err = await rejectsWith(keys(store), 'EPERM');
    assert.ok(!err.message.includes('not-the-secret'));
  });

  describe('through a fault proxy', () => {
    it('retries throttling with growing, jittered waits, then succeeds', async () => {
      const { store, waits } = openBehindProxy();
      proxy.clearRequests();
      proxy.failNext(3, 503, 'SlowDown', kindIs('PUT object'));
      await store.put('k', Buffer.from('data'));
      assert.equal(proxy.count('PUT object'), ignoresCrc ? 5 : 4);
      assert.deepEqual([store.stats.put, store.stats.retries, store.stats.throttled], [4, 3, 3]);
      assert.deepEqual(waits, [50, 100, 200], 'random() × 100 ms, doubling');
      assert.equal((await store.get('k'))?.toString(), 'data');
      proxy.failNext(2, 429, 'TooManyRequests', kindIs('GET object'));
      assert.equal((await store.get('k'))?.toString(), 'data');
      assert.equal(store.stats.throttled, 5, '429 is throttling too');
    });

    it('caps the backoff', async () => {
      const { store, waits } = openBehindProxy({ maxAttempts: 10 }, 0.999);
      proxy.failNext(9, 503, 'SlowDown', kindIs('GET object'));
      assert.equal(await store.get('missing'), undefined);
      assert.deepEqual(waits, [99, 199, 399, 799, 1598, 3196, 6393, 9990, 9990]);
    });

    it('gives up with EIO after maxAttempts on a server error that persists', async () => {
      const { store, waits } = openBehindProxy({ maxAttempts: 4 });
      proxy.clearRequests();
      proxy.failNext(100, 500, 'InternalError', kindIs('GET object'));
      try {
        await rejectsWith(store.get('k'), 'EIO', /InternalError.*gave up after 4 attempts/);
      } finally {
        proxy.clearFaults();
      }
      assert.equal(proxy.count('GET object'), 4);
      assert.equal(waits.length, 3);
      assert.deepEqual([store.stats.get, store.stats.exhausted], [4, 1]);
    });

    it('does not retry 403 or other 4xx errors', async () => {
      const { store } = openBehindProxy();
      proxy.clearRequests();
      proxy.failNext(1, 403, 'AccessDenied', kindIs('PUT object'));
      await rejectsWith(store.put('k', Buffer.from('x')), 'EPERM', /AccessDenied/);
      proxy.failNext(1, 400, 'InvalidRequest', kindIs('PUT object'));
      await rejectsWith(store.put('k', Buffer.from('x')), 'EIO', /InvalidRequest/);
      proxy.failNext(1, 501, 'NotImplemented', kindIs('PUT object'));
      await rejectsWith(store.put('k', Buffer.from('x')), 'EIO', /NotImplemented/);
      assert.equal(proxy.count('PUT object'), 3);
      assert.equal(store.stats.retries, 0);
    });

    it('retries reset connections and requests that time out', async () => {
      const { store } = openBehindProxy({ requestTimeoutMs: 500 });
      await store.put('k', Buffer.from('data'));
      proxy.clearRequests();
      proxy.resetNext(2, kindIs('GET object'));
      assert.equal((await store.get('k'))?.toString(), 'data');
      assert.equal(proxy.count('GET object'), 3);
      proxy.delayNext(1, 2000, kindIs('GET object'));
      const started = Date.now();
      assert.equal((await store.get('k'))?.toString(), 'data');
      assert.ok(Date.now() - started < 1500, 'the slow attempt was abandoned at its time limit');
      assert.equal(proxy.count('GET object'), 5);
      assert.equal(store.stats.retries, 3);
    });

    it('ends a get() within readTimeoutMs, retries included, on a stall or a trickle; a put() has no such budget', async () => {
      const lines: Array<Record<string, unknown>> = [];
      const log = pino({ level: 'warn' }, new Writable({ write(chunk: Buffer, _enc, done) { lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>); done(); } }));
      const stalled = openBehindProxy({ readTimeoutMs: 1200, requestTimeoutMs: 500, stallWarnMs: 300, log }).store;
      await stalled.put('k', randomBytes(256 * 1024));
      proxy.stallNext(1000, kindIs('GET object'));
      let started = Date.now();
      await rejectsWith(stalled.get('k'), 'EIO', /read timeout is 1200 ms/);
      const stallMs = Date.now() - started;
      assert.ok(stallMs >= 1100 && stallMs < 1700, `a stalled get() gave up after ${stallMs} ms (budget 1200, attempts of 500)`);
      const waiting = lines.filter((l) => l.msg === 'waiting for S3: no answer yet');
      assert.equal(waiting.length, 1, `one warn line while it waited (rate-limited): ${JSON.stringify(lines)}`);
      assert.match(String(waiting[0]!.operation), /^GET s3:\/\/.*\/k$/);
      assert.equal(typeof waiting[0]!.givesUpInMs, 'number');
      proxy.clearFaults();
      proxy.releaseStalled();
      proxy.trickleNext(1000, 8192, kindIs('GET object'));
      started = Date.now();
      await rejectsWith(stalled.get('k'), 'EIO', /gave up/);
      assert.ok(Date.now() - started < 1700, `a trickled get() gave up after ${Date.now() - started} ms`);
      proxy.clearFaults();
      // The same budget does not apply to writes: a PUT delayed past it still succeeds.
      const slow = openBehindProxy({ readTimeoutMs: 300 }).store;
      proxy.delayNext(1, 600, kindIs('PUT object'));
      await slow.put('k', Buffer.from('later'));
      assert.equal((await slow.get('k'))?.toString(), 'later');
    });

    it('retries a refused connection', async () => {
      const waits: number[] = [];
      // Nothing listens on the proxy's port once it is closed.
      const closed = await startFaultProxy(server.endpoint);
      await closed.close();
      const store = open({ endpoint: closed.endpoint, maxAttempts: 3, clock: recordingClock({ waits }) });
      await rejectsWith(store.get('k'), 'EIO', /ECONNREFUSED.*gave up after 3 attempts/);
      assert.equal(waits.length, 2);
    });

    it('reads and writes objects without the SDK, signed so that S3 accepts them, and retries a body cut short', async () => {
      const { store } = openBehindProxy({ prefix: 'odd prefix/a+b=c(1)&d' });
      const big = randomBytes(3 * 1024 * 1024 + 5);
      proxy.clearRequests();
      await store.put('extents/x y/1*2', big);
      const tagged = await open({ prefix: 'odd prefix/a+b=c(1)&d' }).getTagged('extents/x y/1*2'); // through the SDK
      assert.ok(tagged?.data.equals(big), 'the SDK finds what the direct PUT stored, under the same key');
      assert.equal(proxy.requests[0]?.userAgent, USER_AGENT, 'the PUT took the direct path');
      await store.putIf('extents/x y/cas', Buffer.from('x'), undefined); // conditional writes stay on the SDK
      assert.notEqual(proxy.requests.at(-1)?.userAgent, USER_AGENT);
      proxy.clearRequests();
      assert.ok((await store.get('extents/x y/1*2'))?.equals(big));
      assert.equal(await store.get('extents/x y/none'), undefined);
      proxy.truncateBodyNext(2, 1024 * 1024, kindIs('GET object'));
      assert.ok((await store.get('extents/x y/1*2'))?.equals(big), 'whole, after two bodies cut after 1 MiB');
      const gets = proxy.requests.filter((r) => r.kind === 'GET object');
      assert.equal(gets.length, 5);
      assert.ok(gets.every((r) => r.userAgent === USER_AGENT), 'every GET took the direct path');
      assert.deepEqual([store.stats.get, store.stats.retries], [5, 2]);
    });

    it('sends PUT bodies over loopback with a CRC-32 that S3 checks, and resends one corrupted on the way', async () => {
      const { store } = openBehindProxy({ prefix: 'crc' });
      const big = randomBytes(2 * 1024 * 1024);
      proxy.clearRequests();
      proxy.corruptBodyNext(1, 1_500_000, kindIs('PUT object'));
      await store.put('crc/1', [big.subarray(0, 64), big.subarray(64)]); // an extent's header and payload
      assert.equal(proxy.count('PUT object'), 2, 'the corrupted body went out again');
      // MinIO refuses it (a retry of the store's); Ceph RGW 16 stores it without looking at the
      // CRC and returns none, so the direct path sends it again, signed (SHA-256, which RGW checks).
      assert.equal(store.stats.retries, ignoresCrc ? 0 : 1);
      assert.ok((await open({ prefix: 'crc' }).get('crc/1'))?.equals(big), 'what S3 keeps is what was sent');
      proxy.corruptBodyNext(1, 1000, kindIs('PUT object'));
      await store.put('crc/2', big);
      assert.equal(store.stats.retries, ignoresCrc ? 1 : 2, 'a later corrupted body is refused, signed or not');
      assert.ok((await open({ prefix: 'crc' }).get('crc/2'))?.equals(big));
    });

    it('signs PUT bodies over plain HTTP to another machine (SHA-256), and S3 accepts them', async () => {
      const credentials = () => Promise.resolve({ accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey });
      const config = { bucket, maxSockets: 2, credentials, region: () => Promise.resolve(server.region) };
      const across = (endpoint: string): boolean => new DirectS3({ ...config, endpoint: new URL(endpoint) }).signsPayloads;
      assert.deepEqual([across('http://10.1.2.3:9000'), across('http://127.0.0.1:9000'), across('http://[::1]:9000'), across('https://s3.example')],
        [true, false, false, false]);
      const signing = new DirectS3({ ...config, endpoint: new URL(server.endpoint), signPayloads: true });
      try {
        const data = randomBytes(100_000);
        const never = new AbortController().signal;
        await signing.put('signed/1', data, never);
        assert.ok((await signing.get('signed/1', never)).data.equals(data));
        await signing.put('signed/2', [data.subarray(0, 64), Buffer.alloc(0), data.subarray(64)], never);
        assert.ok((await signing.get('signed/2', never)).data.equals(data), 'a body in parts, signed whole');
      } finally {
        signing.close();
      }
    });

    it('settles a conditional write whose answer was lost by reading the object back', async () => {
      let duringBackoff = (): Promise<void> => Promise.resolve();
      const prefix = `lost-${randomBytes(4).toString('hex')}`;
      const store = open({ prefix, endpoint: proxy.endpoint, clock: recordingClock({ random: 0, onSleep: () => duringBackoff() }) });
      const direct = open({ prefix });
      proxy.clearRequests();
      proxy.dropResponseNext(1, kindIs('PUT object'));
      const tag = await store.putIf('lease', Buffer.from('mine'), undefined);
      assert.equal(proxy.count('PUT object'), 2, 'the write landed, and the retry found the key taken');
      assert.ok(tag, 'the object holds our bytes: the lost write was ours');
      assert.equal(tag, (await direct.getTagged('lease'))?.tag);

      // The first attempt never arrives, and another writer gets in before the retry.
      proxy.resetNext(1, kindIs('PUT object'));
      duringBackoff = () => direct.put('lease', Buffer.from('theirs'));
      assert.equal(await store.putIf('lease', Buffer.from('mine again'), tag), undefined, 'the condition really failed');
      assert.equal((await direct.get('lease'))?.toString(), 'theirs');
    });

    it('checks conditional writes: passes on the server, refused where they are ignored, through a withRetry view too', async () => {
      const prefix = `cond-${randomBytes(4).toString('hex')}`;
      const direct = open({ prefix });
      const data = Buffer.from('{"volume":1}\n');
      await direct.put('meta', data);
      await direct.checkConditionalWrites('meta', data);
      await direct.withRetry({ maxAttempts: 2 }).checkConditionalWrites!('meta', data);
      const refused = (err: unknown): boolean => err instanceof UserError && err.code === 'S3NBD_NO_CONDITIONAL_WRITES' && /ignores If-None-Match: \*/.test(err.message);
      const { store } = openBehindProxy({ prefix });
      proxy.stripHeaders(['if-match', 'if-none-match'], server.secretAccessKey);
      try {
        await assert.rejects(store.checkConditionalWrites('meta', data), refused);
        await assert.rejects(store.withRetry({ maxAttempts: 2 }).checkConditionalWrites!('meta', data), refused);
      } finally {
        proxy.stripHeaders([]);
      }
      assert.deepEqual(await direct.get('meta'), data, 'the check rewrote the same bytes at most');
    });

    it('sends a checksum with every PutObject, as AWS requires in a bucket with Object Lock: direct, signed, conditional and through the SDK', async () => {
      const prefix = `lock-${randomBytes(4).toString('hex')}`;
      const { store } = openBehindProxy({ prefix });
      // An IP address as the endpoint keeps the SDK's requests path-style, but without
      // forcePathStyle the store has no direct path: every request goes through the SDK, as on AWS.
      const sdkOnly = open({ prefix, endpoint: proxy.endpoint, forcePathStyle: false });
      const credentials = () => Promise.resolve({ accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey });
      const signing = new DirectS3({ bucket, maxSockets: 2, credentials, region: () => Promise.resolve(server.region), endpoint: new URL(proxy.endpoint), signPayloads: true });
      const data = randomBytes(100_000);
      const never = new AbortController().signal;
      proxy.clearRequests();
      proxy.requireChecksums(true);
      try {
        await store.put('direct', data);
        await sdkOnly.put('sdk', data);
        assert.notEqual(proxy.requests.at(-1)?.userAgent, USER_AGENT, 'that PUT went through the SDK');
        // A signed body costs no CRC-32 until the server asks for one; then every later one has it.
        await signing.put(`${prefix}/signed`, data, never);
        await signing.put(`${prefix}/signed-again`, data, never);
        const tag = await sdkOnly.putIf('lease', Buffer.from('first'), undefined);
        assert.ok(tag, 'created');
        assert.ok(await store.putIf('lease', Buffer.from('renewed'), tag), 'replaced');
        await store.checkConditionalWrites('lease', Buffer.from('renewed'));
        await sdkOnly.checkConditionalWrites('lease', Buffer.from('renewed'));
        await store.deleteMany(['sdk']);
        await sdkOnly.deleteMany(['direct']);
      } finally {
        proxy.requireChecksums(false);
        signing.close();
      }
      // Ceph RGW 16 returns no CRC, so the store's direct path signs its bodies from its first
      // PUT on (see DirectS3.put), and is refused once too.
      const refused = proxy.requests.filter((r) => r.fault === 'no checksum').map((r) => r.key.slice(prefix.length + 1));
      assert.deepEqual(refused, ignoresCrc ? ['direct', 'signed'] : ['signed']);
      const check = open({ prefix });
      assert.deepEqual(await keys(check), ['lease', 'signed', 'signed-again']);
      assert.ok((await check.get('signed'))?.equals(data));
      assert.ok((await check.get('signed-again'))?.equals(data));
      assert.equal((await check.get('lease'))?.toString(), 'renewed');
    });

    it('throws on DeleteObjects errors, retrying only the keys whose errors are transient', async () => {
      const prefix = `del-${randomBytes(4).toString('hex')}`;
      const { store } = openBehindProxy({ prefix });
      await store.put('a', Buffer.from('a'));
      await store.put('b', Buffer.from('b'));
      const result = (entries: string): string => `<?xml version="1.0" encoding="UTF-8"?>\n<DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">${entries}</DeleteResult>`;
      const error = (key: string, code: string): string => `<Error><Key>${prefix}/${key}</Key><Code>${code}</Code><Message>injected</Message></Error>`;

      proxy.clearRequests();
      proxy.replyNext(1, 200, result(error('a', 'InternalError') + error('b', 'SlowDown')), kindIs('DELETE objects'));
      await store.deleteMany(['a', 'b']);
      assert.equal(proxy.count('DELETE objects'), 2);
      assert.deepEqual(await keys(store), []);

      await store.put('c', Buffer.from('c'));
      proxy.replyNext(1, 200, result(error('c', 'AccessDenied')), kindIs('DELETE objects'));
      await rejectsWith(store.deleteMany(['c']), 'EPERM', /AccessDenied/);
      proxy.replyNext(1, 200, result(error('c', 'NoSuchKey')), kindIs('DELETE objects'));
      await store.deleteMany(['c']);
      assert.equal(proxy.count('DELETE objects'), 4, 'permanent errors are not retried; NoSuchKey is no error');
    });
  });

  describe('when the server stops answering', () => {
    it('times out and gives up', async (t) => {
      if (!server.controllable) return t.skip('needs a local MinIO to pause (S3NBD_TEST_S3_ENDPOINT is set)');
      const store = open({ requestTimeoutMs: 300, maxAttempts: 2, retryBaseMs: 10, retryCapMs: 50 });
      await store.put('k', Buffer.from('survives'));
      await server.pause();
      try {
        await rejectsWith(store.get('k'), 'EIO', /no answer within 300 ms.*gave up after 2 attempts/);
      } finally {
        server.resume();
      }
      assert.equal((await store.get('k'))?.toString(), 'survives');
    });

    it('ends a withRetry view\'s operation on its abort signal, and every operation on close()', async (t) => {
      if (!server.controllable) return t.skip('needs a local MinIO to pause (S3NBD_TEST_S3_ENDPOINT is set)');
      const store = open({ requestTimeoutMs: 200, retryBaseMs: 10, retryCapMs: 50 });
      await store.put('k', Buffer.from('x'));
      await server.pause();
      try {
        const abort = new AbortController();
        const viaSignal = store.withRetry({ maxAttempts: 1000, signal: abort.signal }).put('k', Buffer.from('y'));
        const viaClose = store.withRetry({ maxAttempts: 1000 }).get('k');
        await new Promise((r) => setTimeout(r, 500));
        abort.abort(new Error('shutting down'));
        await rejectsWith(viaSignal, 'EIO', /shutting down/);
        await store.close();
        await rejectsWith(viaClose, 'EIO', /closed/);
      } finally {
        server.resume();
      }
    });

    it('works again after the server restarts', async (t) => {
      if (!server.controllable) return t.skip('needs a local MinIO to restart (S3NBD_TEST_S3_ENDPOINT is set)');
      const store = open();
      await store.put('k', Buffer.from('persisted'));
      await server.restart();
      assert.equal((await store.get('k'))?.toString(), 'persisted');
    });
  });
});

describe('parseS3Url', () => {
  it('splits bucket and prefix, normalising slashes', () => {
    assert.deepEqual(parseS3Url('s3://my-bucket'), { bucket: 'my-bucket', prefix: '' });
    assert.deepEqual(parseS3Url('s3://my-bucket/'), { bucket: 'my-bucket', prefix: '' });
    assert.deepEqual(parseS3Url('S3://my.bucket.1//vols//disk-a/'), { bucket: 'my.bucket.1', prefix: 'vols/disk-a' });
  });

  it('rejects malformed URLs with S3NBD_BAD_S3_URL', () => {
    for (const [spec, reason] of [
      ['s3://', /no bucket name/],
      ['s3:///prefix', /no bucket name/],
      ['s3://ab', /not a valid bucket name/],
      ['s3://My_Bucket/x', /not a valid bucket name/],
      ['s3://-bucket', /not a valid bucket name/],
      ['s3://a..b', /not a valid bucket name/],
      ['s3://key:secret@bucket/x', /user name, password or port/],
      ['s3://bucket:9000/x', /user name, password or port/],
      ['s3://bucket/x?versionId=1', /query/],
      ['s3://bucket/a/../b', /"\."/],
      ['http://bucket/x', /s3:\/\//],
    ] as const) {
      assert.throws(() => parseS3Url(spec), (err: unknown) => {
        assert.ok(err instanceof UserError, spec);
        assert.equal(err.code, 'S3NBD_BAD_S3_URL');
        assert.match(err.message, reason, spec);
        return true;
      });
    }
  });
});
