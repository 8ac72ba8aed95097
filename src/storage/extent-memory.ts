// Whole extents kept in memory, least recently used evicted first, within a byte budget (never
// less than one extent). Used by the object extent layer and the write-back cache alike.

import { LRUCache } from 'lru-cache';

export function extentMemory(budgetBytes: number, extentSize: number): LRUCache<number, Buffer> {
  return new LRUCache<number, Buffer>({
    maxSize: Math.max(budgetBytes, extentSize),
    sizeCalculation: () => extentSize,
  });
}
