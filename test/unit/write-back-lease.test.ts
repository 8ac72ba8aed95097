// The write-back cache and the writer lease: an upload that failed while the lease was valid
// is not retried once the lease is no longer known to be ours (after a long S3 outage another
// gateway may own the volume, and the retry would overwrite its data); writes are still
// acknowledged meanwhile, and the upload goes on once the lease is valid again.

import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { MemoryObjectStore } from '../../src/storage/objects/memory-object-store.ts';
import { E, open } from '../helpers/cache.ts';
import { FaultyStore } from '../helpers/faulty-store.ts';
import { tempDir } from '../helpers/gateway.ts';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('WriteBackCache under the writer lease', () => {
  const dir = tempDir('wbc-lease');
  after(() => dir.remove());

  it('retries no failed upload while the lease is not valid, and uploads once it is again', async () => {
    const objects = new FaultyStore(new MemoryObjectStore());
    let leaseValid = true;
    const { dev, cache } = await open(objects, 8 * E, `${dir.path}/c`, { mayUpload: () => leaseValid });
    try {
      objects.failAll('put'); // S3 away: the first attempt fails while the lease is still valid
      await dev.write(0, Buffer.alloc(E, 1), false);
      for (const deadline = Date.now() + 5000; objects.calls.put === 0;) {
        assert.ok(Date.now() < deadline, 'the upload was attempted');
        await sleep(5);
      }
      leaseValid = false; // no renewal for 80% of the lifetime
      await sleep(50); // let the attempt in flight fail
      const attempts = objects.calls.put;
      objects.failAll('put', false); // S3 answers again, but the lease is not verified yet
      await sleep(1500); // longer than the cache's first backoffs
      assert.equal(objects.calls.put, attempts, 'no upload attempt without a valid lease');
      await dev.write(E, Buffer.alloc(E, 2), false); // writes are still acknowledged
      leaseValid = true; // renewed
      await dev.flush();
      assert.ok(objects.calls.put > attempts, 'uploaded after the renewal');
      assert.equal(cache.status().dirtyExtents, 0);
    } finally {
      await cache.close();
    }
  });
});
