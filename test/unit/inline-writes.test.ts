import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InlineWrites, MAX_POOLED_MS, POOLED_MS, SLOW_MS } from '../../src/storage/cache/inline-writes.ts';

describe('inline writes (small cache writes from the event loop, the thread pool after a slow one)', () => {
  function rig(maxBytes = 4096) {
    let now = 0;
    const calls: string[] = [];
    const writes = new InlineWrites(maxBytes, () => now);
    const write = (bytes: number, takes = 0): Promise<string> => writes.write(bytes, () => {
      now += takes;
      calls.push('inline');
      return 'inline';
    }, () => {
      calls.push('pooled');
      return Promise.resolve('pooled');
    });
    return { writes, write, calls, advance: (ms: number) => { now += ms; } };
  }

  it('writes up to the size inline and larger ones through the pool', async () => {
    const r = rig();
    assert.equal(await r.write(4096), 'inline');
    assert.equal(await r.write(4097), 'pooled');
    assert.deepEqual(r.calls, ['inline', 'pooled']);
  });

  it('after a write that blocked, small writes go through the pool for a while, then inline again', async () => {
    const r = rig();
    assert.equal(await r.write(512, SLOW_MS), 'inline'); // not slower than SLOW_MS: still quick
    assert.equal(await r.write(512, SLOW_MS + 1), 'inline'); // this one blocked
    assert.equal(await r.write(512), 'pooled');
    r.advance(POOLED_MS - 1);
    assert.equal(await r.write(512), 'pooled');
    r.advance(1);
    assert.equal(await r.write(512), 'inline');
  });

  it('a disk that stays slow sends writes through the pool for twice as long each time, up to a limit; a quick write resets it', async () => {
    const r = rig();
    const pooledFor = async (): Promise<number> => {
      let ms = 0;
      while (await r.write(512) === 'pooled') {
        r.advance(1000);
        ms += 1000;
      }
      return ms;
    };
    const spans: number[] = [];
    for (let i = 0; i < 9; i++) {
      await r.write(512, SLOW_MS + 1);
      spans.push(await pooledFor());
    }
    // pooledFor()'s last write went inline (and was quick): the next slow one starts over.
    assert.deepEqual(spans, [1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000]);
    let now = 0;
    const slowInARow = new InlineWrites(4096, () => now);
    const slow = () => slowInARow.write(1, () => { now += SLOW_MS + 1; }, () => Promise.resolve());
    const waits: number[] = [];
    for (let i = 0; i < 9; i++) {
      await slow();
      const from = now;
      while (!slowInARow.inline(1)) now += 1000;
      waits.push(now - from);
    }
    assert.deepEqual(waits, [1000, 2000, 4000, 8000, 16000, 32000, 64000, MAX_POOLED_MS, MAX_POOLED_MS]);
  });

  it('a failing inline write is a rejection, and its time still counts', async () => {
    let now = 0;
    const writes = new InlineWrites(4096, () => now);
    await assert.rejects(writes.write(10, () => {
      now += SLOW_MS + 5;
      throw Object.assign(new Error('no space left on device'), { code: 'ENOSPC' });
    }, () => Promise.resolve(0)), { code: 'ENOSPC' });
    assert.equal(writes.inline(10), false);
  });
});
