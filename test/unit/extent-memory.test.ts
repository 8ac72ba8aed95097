// Elastic memory caches (src/storage/extents/extent-memory.ts): the room the memory governor
// takes back is evicted at once, least recently used first, never below half the budget, and
// comes back; resizeElasticMemory() shares a move among the elastic caches alone.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { extentMemory, resizeElasticMemory } from '../../src/storage/extents/extent-memory.ts';

const E = 1024;

function filled(extents: number, budgetExtents: number, elastic: boolean, evicted: number[] = []) {
  const memory = extentMemory(budgetExtents * E, E, { onEvict: (index) => evicted.push(index), elastic });
  for (let i = 0; i < extents; i++) memory.set(i, Buffer.alloc(E, i));
  return memory;
}

describe('elastic memory caches', () => {
  it('evict the least recently used extents down to a lowered ceiling, hold no more until it rises, and never go below half', () => {
    const evicted: number[] = [];
    const memory = filled(8, 8, false, evicted);
    memory.get(0); // now the most recently used
    assert.equal(memory.resize(-3 * E), -3 * E);
    assert.equal(memory.ceiling, 5 * E);
    assert.deepEqual(evicted, [1, 2, 3], 'the least recently used, told as evictions (to go to the disk cache)');
    memory.set(100, Buffer.alloc(E));
    assert.equal(memory.calculatedSize, 5 * E, 'a new extent pushes another out while the ceiling is low');
    assert.equal(memory.resize(-8 * E), -E, 'no lower than half the budget');
    assert.equal(memory.ceiling, 4 * E);
    assert.equal(memory.resize(100 * E), 4 * E, 'no higher than the budget');
    for (let i = 200; i < 210; i++) memory.set(i, Buffer.alloc(E));
    assert.equal(memory.calculatedSize, 8 * E, 'the room is back');
  });

  it('keep room for one extent however small their budget', () => {
    const memory = filled(1, 1, false);
    memory.resize(-E);
    assert.equal(memory.ceiling, E);
    assert.equal(memory.size, 1);
  });

  it('share a move among the elastic caches only: taken in proportion to what each holds, given in proportion to what each lacks', () => {
    const big = filled(8, 8, true);
    const small = filled(2, 4, true);
    const plain = filled(8, 8, false);
    resizeElasticMemory(-5 * E);
    assert.equal(big.ceiling, 8 * E - 4 * E, 'a cache holding 8 of the 10 extents gives 4/5');
    assert.equal(big.calculatedSize, 4 * E);
    assert.equal(small.ceiling, 2 * E, 'the other gives 1/5 of what it holds, down to its floor (half its budget)');
    assert.equal(small.calculatedSize, 2 * E);
    assert.equal(plain.ceiling, 8 * E, 'a cache not made elastic keeps its budget');
    const given = resizeElasticMemory(6 * E);
    assert.ok(given > 0 && given <= 6 * E);
    resizeElasticMemory(100 * E);
    assert.deepEqual([big.ceiling, small.ceiling], [8 * E, 4 * E], 'everything back');
  });
});
