import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AllocationMap } from '../../src/storage/extents/allocation-map.ts';

describe('AllocationMap', () => {
  it('tracks bits, counts and runs, including across whole bytes', () => {
    const map = new AllocationMap(100);
    for (const i of [3, 4, 5, 40, 41, 42, 43, 44, 45, 46, 47, 48, 99]) map.set(i);
    map.set(3);
    assert.equal(map.count, 13);
    assert.deepEqual([...map.allocatedIn(0, 100)], [3, 4, 5, 40, 41, 42, 43, 44, 45, 46, 47, 48, 99]);
    assert.deepEqual([...map.allocatedIn(5, 36)], [5, 40]);
    assert.deepEqual(map.runs(0, 100, 100), [
      { count: 3, allocated: false }, { count: 3, allocated: true }, { count: 34, allocated: false },
      { count: 9, allocated: true }, { count: 50, allocated: false }, { count: 1, allocated: true },
    ]);
    assert.deepEqual(map.runs(4, 10, 1), [{ count: 2, allocated: true }]);
    map.clear(4);
    map.clear(4);
    assert.equal(map.count, 12);
    assert.equal(map.has(4), false);
  });
});
