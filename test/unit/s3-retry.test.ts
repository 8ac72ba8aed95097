// The S3 store's retry loop on its own (s3/s3-retry.ts), on an injected clock (src/clock.ts): no server, no real waiting.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { realClock } from '../../src/clock.ts';
import { type S3RequestStats, S3Retry } from '../../src/storage/objects/s3/s3-retry.ts';
import { StorageError } from '../../src/storage/storage-error.ts';

// Operations go through these names: test-deps.test.ts takes a quoted first argument of run() for a tool it runs.
const GET = 'get';
const PUT = 'put';
const LIST = 'list';
const s3Error = (Code: string, status: number): Error => Object.assign(new Error(Code), { Code, $metadata: { httpStatusCode: status } });

function retryLoop(random = 0.5): { retry: S3Retry; stats: S3RequestStats; waits: number[]; clock: { now: number } } {
  const stats = { get: 0, put: 0, delete: 0, list: 0, retries: 0, throttled: 0, exhausted: 0 };
  const waits: number[] = [];
  const clock = { now: 1000 };
  const retry = new S3Retry({
    stats, closing: new AbortController().signal, requestTimeoutMs: 1000, stallWarnMs: 60_000, retryBaseMs: 100, retryCapMs: 300,
    clock: {
      ...realClock,
      sleep: (ms: number) => { waits.push(ms); clock.now += ms; return Promise.resolve(); },
      random: () => random, now: () => clock.now,
    },
  });
  return { retry, stats, waits, clock };
}

describe('S3Retry', () => {
  it('retries with full-jitter waits under a doubling, capped ceiling, then gives up with EIO', async () => {
    const { retry, stats, waits } = retryLoop();
    const failing = retry.run(GET, 'GET s3://b/k', { maxAttempts: 5, signal: undefined }, () => Promise.reject(s3Error('SlowDown', 503)));
    await assert.rejects(failing, (err) => err instanceof StorageError && err.errno === 'EIO' && /^GET s3:\/\/b\/k: SlowDown \(HTTP 503\).*gave up after 5 attempts/.test(err.message));
    assert.deepEqual(waits, [50, 100, 150, 150]);
    assert.deepEqual(stats, { get: 5, put: 0, delete: 0, list: 0, retries: 4, throttled: 4, exhausted: 1 });
  });

  it('returns what an attempt returns once one succeeds', async () => {
    const { retry, stats } = retryLoop();
    let n = 0;
    const value = await retry.run(PUT, 'PUT', { maxAttempts: 6, signal: undefined }, () => (++n < 3 ? Promise.reject(s3Error('InternalError', 500)) : Promise.resolve('done')));
    assert.equal(value, 'done');
    assert.equal(stats.put, 3);
    assert.equal(stats.exhausted, 0);
  });

  it('does not retry what retrying cannot fix: 403 is EPERM at once', async () => {
    const { retry, stats } = retryLoop();
    await assert.rejects(retry.run(LIST, 'LIST', { maxAttempts: 6, signal: undefined }, () => Promise.reject(s3Error('AccessDenied', 403))),
      (err) => err instanceof StorageError && err.errno === 'EPERM');
    assert.equal(stats.list, 1);
  });

  it('marks a refusal no retry changes as permanent (403, a missing bucket, another 4xx), and nothing it gave up on after retries', async () => {
    const { retry } = retryLoop();
    const outcome = (err: Error) => retry.run(PUT, 'PUT', { maxAttempts: 3, signal: undefined }, () => Promise.reject(err))
      .catch((e: unknown) => e instanceof StorageError ? [e.errno, e.permanent] : ['not a StorageError']);
    assert.deepEqual(await outcome(s3Error('AccessDenied', 403)), ['EPERM', true]);
    assert.deepEqual(await outcome(s3Error('NoSuchBucket', 404)), ['EIO', true]);
    assert.deepEqual(await outcome(s3Error('InvalidArgument', 400)), ['EIO', true]);
    assert.deepEqual(await outcome(s3Error('InternalError', 500)), ['EIO', false]);
    assert.deepEqual(await outcome(s3Error('SlowDown', 503)), ['EIO', false]);
    assert.deepEqual(await outcome(Object.assign(new Error('reset'), { code: 'ECONNRESET' })), ['EIO', false]);
    assert.deepEqual(await outcome(Object.assign(new Error('odd'), { name: 'SomethingElse' })), ['EIO', false]);
  });

  it('gives up when the next wait would pass the time budget', async () => {
    const { retry, waits } = retryLoop(0.99);
    const failing = retry.run(GET, 'GET', { maxAttempts: 100, signal: undefined, budgetMs: 400 }, () => Promise.reject(s3Error('InternalError', 500)));
    await assert.rejects(failing, /gave up after 3 attempts in 297 ms: the read timeout is 400 ms/);
    assert.deepEqual(waits, [99, 198]);
  });

  it('ends on the policy\'s abort signal, with its reason', async () => {
    const { retry } = retryLoop();
    const abort = new AbortController();
    abort.abort(new Error('first contact timed out'));
    await assert.rejects(retry.run(GET, 'GET', { maxAttempts: 6, signal: abort.signal }, () => Promise.resolve(1)),
      (err) => err instanceof StorageError && err.errno === 'EIO' && /first contact timed out/.test(err.message));
  });
});
