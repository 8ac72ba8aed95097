// The writer lease on a real store (a directory, FileObjectStore), with a short lifetime. The
// faults are a thin wrapper that loses answers or makes the store unreachable; every write
// that it lets through is the store's own.

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { pino } from 'pino';
import { FileObjectStore } from '../../src/storage/objects/file-object-store.ts';
import { LEASE_KEY, Lease, type LeaseOptions } from '../../src/storage/volume/lease.ts';
import type { ObjectStore } from '../../src/storage/objects/object-store.ts';
import { tempDir } from '../helpers/gateway.ts';

const TTL = 600;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Faulty extends ObjectStore {
  /** Lets the next `n` lease writes through, then throws as if their answers were lost. */
  loseAnswers(n: number): void;
  /** Every operation fails without reaching the store, until set back to false. */
  down: boolean;
  lostAnswers: number;
}

function faulty(store: ObjectStore): Faulty {
  let lose = 0;
  const f: Faulty = {
    description: store.description,
    down: false,
    lostAnswers: 0,
    loseAnswers: (n) => { lose = n; },
    get: (k) => (f.down ? Promise.reject(new Error('connect ECONNREFUSED')) : store.get(k)),
    getTagged: (k) => (f.down ? Promise.reject(new Error('connect ECONNREFUSED')) : store.getTagged(k)),
    put: (k, d) => store.put(k, d),
    async putIf(k, d, tag) {
      if (f.down) throw new Error('connect ECONNREFUSED');
      const written = await store.putIf(k, d, tag);
      if (lose > 0 && k === LEASE_KEY) {
        lose--;
        f.lostAnswers++;
        throw new Error('socket hang up (the answer was lost)');
      }
      return written;
    },
    deleteMany: (keys) => store.deleteMany(keys),
    list: (p) => store.list(p),
    flush: () => store.flush(),
    close: () => store.close(),
  };
  return f;
}

function options(owner: string, lost: string[], extra: Partial<LeaseOptions> = {}): LeaseOptions {
  return { owner, ttlMs: TTL, takeOver: false, log: pino({ level: 'silent' }), onLost: (by) => lost.push(by), ...extra };
}

async function leaseBody(store: ObjectStore): Promise<Record<string, unknown>> {
  return JSON.parse((await store.get(LEASE_KEY))!.toString()) as Record<string, unknown>;
}

describe('Lease', () => {
  const dir = tempDir('lease');
  after(() => dir.remove());
  let n = 0;
  const store = (): FileObjectStore => new FileObjectStore(join(dir.path, `store${++n}`));

  it('carries a token of the running process: two processes with one gateway id never both hold the lease', async () => {
    // Two copies of one cache directory: the same gateway id, past any lock.
    const objects = store();
    const lostA: string[] = [];
    const lostB: string[] = [];
    const a = await Lease.acquire(objects, options('gw-1', lostA));
    const tokenA = (await leaseBody(objects)).token;
    assert.equal(typeof tokenA, 'string', 'the lease body names the process that wrote it');
    assert.equal(tokenA, a.token);
    const b = await Lease.acquire(objects, options('gw-1', lostB));
    assert.notEqual(b.token, a.token, 'each process makes its own token');
    await sleep(TTL); // several renewals of both
    assert.equal(lostA.length, 1, 'the first process learns at its next renewal that it lost the lease');
    assert.match(lostA[0]!, /another process with this gateway's id/);
    assert.equal(a.isValid(), false);
    assert.deepEqual(lostB, [], 'the second keeps it');
    assert.equal(b.isValid(), true);
    assert.equal((await leaseBody(objects)).token, b.token);
    await a.release(); // fenced: must not touch the lease
    assert.equal((await leaseBody(objects)).token, b.token);
    await b.release();
  });

  it('uploads only once a replaced holder\'s lease would have lapsed, unless that one held the same cache directory lock', async () => {
    const objects = store();
    const lostA: string[] = [];
    const a = await Lease.acquire(objects, options('gw-7', lostA, { lockId: 'boot:1:100' }));
    await sleep(TTL / 3 + 50); // a renewal: a's lease is valid until 80% of TTL after it
    // A copy of the cache directory (another lock): serves at once, uploads only later.
    const b = await Lease.acquire(objects, options('gw-7', [], { lockId: 'boot:1:200' }));
    assert.equal(b.isValid(), false, 'the first may still be uploading');
    await sleep(TTL * 0.8);
    assert.equal(b.isValid(), true, 'the first one\'s lease has lapsed for it too');
    assert.equal(lostA.length, 1, 'and it has been fenced');
    assert.equal(a.isValid(), false);
    await b.release();
    // A restart on the same cache directory after kill -9 (the same lock): at once.
    const c = await Lease.acquire(objects, options('gw-8', [], { lockId: 'boot:1:300' }));
    const d = await Lease.acquire(objects, options('gw-8', [], { lockId: 'boot:1:300' }));
    assert.equal(d.isValid(), true);
    await d.release();
    await c.release(); // fenced by d meanwhile, or not yet: either way it must not throw
  });

  it('recognises its own renewal whose answer was lost, and keeps the lease', async () => {
    const objects = faulty(store());
    const lost: string[] = [];
    const lease = await Lease.acquire(objects, options('gw-2', lost));
    // The next renewals reach the store, but their answers never come back: the lease
    // then has a tag the lease never saw.
    objects.loseAnswers(2);
    await sleep(TTL * 2);
    assert.equal(objects.lostAnswers, 2);
    assert.deepEqual(lost, [], 'not fenced by its own writes');
    assert.equal(lease.isValid(), true, 'renewed on top of its own write');
    assert.equal((await leaseBody(objects)).token, lease.token);
    await lease.release();
    assert.equal(Date.parse((await leaseBody(objects)).expiresAt as string), 0, 'released: the tag it adopted is the real one');
  });

  it('survives a store that is unreachable for many lifetimes: invalid meanwhile, valid again after, never fenced', async () => {
    const objects = faulty(store());
    const lost: string[] = [];
    const lease = await Lease.acquire(objects, options('gw-3', lost));
    objects.down = true;
    await sleep(TTL * 4);
    assert.equal(lease.isValid(), false, 'uploads must pause: the lease may have expired');
    assert.deepEqual(lost, []);
    objects.down = false;
    await sleep(TTL / 2);
    assert.equal(lease.isValid(), true, 'nobody took it meanwhile: renewed, uploads resume');
    assert.deepEqual(lost, []);
    await lease.release();
  });

  it('is fenced by a real other owner, even one that took over an expired lease during an outage', async () => {
    const real = store();
    const objects = faulty(real);
    const lost: string[] = [];
    const lease = await Lease.acquire(objects, options('gw-4', lost));
    objects.down = true;
    await sleep(TTL * 1.5);
    const other = await Lease.acquire(real, options('gw-5', []));
    objects.down = false;
    await sleep(TTL / 2);
    assert.equal(lost.length, 1);
    assert.match(lost[0]!, /^gw-5 on /);
    assert.equal(lease.isValid(), false);
    assert.equal(other.isValid(), true);
    await other.release();
  });

  it('counts its validity from when a renewal was sent, not from when its answer came', async () => {
    const real = store();
    let slow = 0;
    const objects: ObjectStore = Object.assign(Object.create(real) as ObjectStore, {
      putIf: async (k: string, d: Buffer, tag: string | undefined) => {
        const written = await real.putIf(k, d, tag);
        if (slow > 0) await sleep(slow);
        return written;
      },
    });
    const lost: string[] = [];
    const lease = await Lease.acquire(objects, options('gw-6', lost));
    // A renewal that takes 70% of the lifetime to answer: the lease it wrote expires 30%
    // after the answer came, so the lease may only be trusted for 10% more.
    slow = TTL * 0.7;
    await sleep(TTL / 3 + TTL * 0.7 + TTL * 0.15);
    slow = 0;
    assert.equal(lease.isValid(), false, 'the renewal was sent 85% of a lifetime ago');
    assert.deepEqual(lost, [], 'a slow renewal is no reason to give up the lease');
    await lease.release();
  });
});
