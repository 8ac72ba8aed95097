// SHA-256 on the hashing thread (src/storage/format/off-thread-hash.ts): the same digest as on
// this thread, the body's bytes back intact, small and shared bodies hashed here, and a thread
// that dies failing its callers with EIO once, then everything hashed here.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { hashHere, hashOffThread, HashWorker, OFF_THREAD_MIN_BYTES } from '../../src/storage/format/off-thread-hash.ts';
import { StorageError } from '../../src/storage/storage-error.ts';

const parts = { coveredEnd: 32, identity: Buffer.from('volume/7/3'), payloadStart: 64 };

describe('off-thread hashing', () => {
  it('gives the digest of this thread, and the body back with its bytes, for large bodies that own their memory', async () => {
    const bodies = Array.from({ length: 8 }, () => randomBytes(1024 * 1024 + 64));
    const copies = bodies.map((b) => Buffer.from(b));
    const results = await Promise.all(bodies.map((b) => hashOffThread(b, parts)));
    results.forEach((r, i) => {
      assert.deepEqual(r.digest, hashHere(copies[i]!, parts));
      assert.ok(r.body.equals(copies[i]!), 'the same bytes back');
      assert.equal(bodies[i]!.length, 0, 'the memory went to the thread: the Buffer given is empty');
    });
  });

  it('hashes small bodies and views of larger memory on this thread, and gives the same Buffer back', async () => {
    const small = randomBytes(OFF_THREAD_MIN_BYTES - 1);
    const larger = randomBytes(2 * OFF_THREAD_MIN_BYTES);
    const view = larger.subarray(1);
    for (const body of [small, view]) {
      const copy = Buffer.from(body);
      const r = await hashOffThread(body, parts);
      assert.equal(r.body, body);
      assert.deepEqual(r.digest, hashHere(copy, parts));
    }
    assert.equal(larger.length, 2 * OFF_THREAD_MIN_BYTES, 'memory shared with a view never moves');
  });

  it('stops a thread that does not answer and fails its callers with EIO, then hashes on this thread', async () => {
    const worker = new HashWorker("require('node:worker_threads').parentPort.on('message', () => {});", 200);
    const started = performance.now();
    await assert.rejects(worker.hash(randomBytes(OFF_THREAD_MIN_BYTES), parts), (err: unknown) => err instanceof StorageError && err.errno === 'EIO');
    assert.ok(performance.now() - started < 5000, 'within the timeout, not for ever');
    const body = randomBytes(OFF_THREAD_MIN_BYTES);
    assert.equal((await worker.hash(body, parts)).body, body, 'hashed here from then on');
  });

  it('fails the callers of a thread that dies with EIO, then hashes on this thread', async () => {
    const worker = new HashWorker("require('node:worker_threads').parentPort.on('message', () => process.exit(3));");
    await assert.rejects(worker.hash(randomBytes(OFF_THREAD_MIN_BYTES), parts), (err: unknown) => err instanceof StorageError && err.errno === 'EIO');
    const body = randomBytes(OFF_THREAD_MIN_BYTES);
    const r = await worker.hash(body, parts);
    assert.equal(r.body, body, 'hashed here from then on');
    assert.deepEqual(r.digest, hashHere(body, parts));
  });
});
