// Whole extents kept in memory, least recently used evicted first, within a byte budget (never
// less than one extent). Used by the object extent layer and the write-back cache alike.

import { LRUCache } from 'lru-cache';

/** `onEvict` hears of extents pushed out to make room (not of ones deleted or replaced). */
export function extentMemory(budgetBytes: number, extentSize: number, onEvict?: (index: number, data: Buffer) => void): LRUCache<number, Buffer> {
  return new LRUCache<number, Buffer>({
    maxSize: Math.max(budgetBytes, extentSize),
    sizeCalculation: () => extentSize,
    ...(onEvict ? { dispose: (data: Buffer, index: number, reason: string) => { if (reason === 'evict') onEvict(index, data); } } : {}),
  });
}
