// Whole extents kept in memory, least recently used evicted first, within a byte budget (never
// less than one extent). Used by the object extent layer and the write-back cache alike.
//
// A memory cache made `elastic` may be asked to hold less than its budget for a while: the
// memory governor (src/memory-budget.ts) takes room back from every elastic cache when the
// gateway's other buffers (uploads, payloads in flight, fetches) would otherwise carry its
// memory past --memory-cache + its headroom, and gives it back once they are gone. A cache
// never gives up more than half of its budget: below that it would stop being a cache.

import { LRUCache } from 'lru-cache';

/**
 * `onEvict` hears of extents pushed out to make room (not of ones deleted or replaced);
 * `elastic`: the memory governor may take room back (see the header).
 */
export function extentMemory(budgetBytes: number, extentSize: number, { onEvict, elastic = false }: { onEvict?: (index: number, data: Buffer) => void; elastic?: boolean } = {}): ExtentMemory {
  const memory = new ExtentMemory({
    maxSize: Math.max(budgetBytes, extentSize),
    sizeCalculation: () => extentSize,
    ...(onEvict ? { dispose: (data: Buffer, index: number, reason: string) => { if (reason === 'evict') onEvict(index, data); } } : {}),
  }, extentSize);
  if (elastic) elasticCaches.add(new WeakRef(memory));
  return memory;
}

export class ExtentMemory extends LRUCache<number, Buffer> {
  /** What the cache may hold now: its maxSize, less what the memory governor took back. */
  #ceiling = this.maxSize;
  /** The least it may be made to hold: half of its budget, and one extent. */
  readonly floor: number;

  constructor(options: LRUCache.Options<number, Buffer, unknown>, extentSize: number) {
    super(options);
    this.floor = Math.min(this.maxSize, Math.max(Math.ceil(this.maxSize / 2), extentSize));
  }

  get ceiling(): number {
    return this.#ceiling;
  }

  override set(...args: Parameters<LRUCache<number, Buffer>['set']>): this {
    super.set(...args);
    this.fit();
    return this;
  }

  /**
   * Moves the ceiling by `delta` bytes, within [floor, maxSize]: a negative one from what the
   * cache holds (room it does not use is no room to give), evicting the least recently used
   * extents down to it. Returns the move made.
   */
  resize(delta: number): number {
    const before = this.#ceiling;
    const from = delta < 0 ? Math.min(before, this.calculatedSize) : before;
    this.#ceiling = Math.min(this.maxSize, Math.max(this.floor, from + delta));
    this.fit();
    return this.#ceiling - before;
  }

  private fit(): void {
    while (this.calculatedSize > this.#ceiling && this.size > 0) this.pop();
  }
}

const elasticCaches = new Set<WeakRef<ExtentMemory>>();

/**
 * Moves the ceilings of the elastic memory caches by `delta` bytes in all (negative: takes room
 * back, from each in proportion to what it holds; positive: gives room back, to each in
 * proportion to what it lacks); returns the move made.
 */
export function resizeElasticMemory(delta: number): number {
  const caches = liveElasticCaches();
  const share = (c: ExtentMemory): number => (delta < 0 ? c.calculatedSize : c.maxSize - c.ceiling);
  const total = caches.reduce((sum, c) => sum + share(c), 0);
  if (total === 0) return 0;
  let moved = 0;
  for (const c of caches) moved += c.resize(delta * share(c) / total);
  return moved;
}

/** The room the governor has taken back from the elastic memory caches, in all. */
export function elasticMemoryTakenBack(): number {
  return liveElasticCaches().reduce((sum, c) => sum + c.maxSize - c.ceiling, 0);
}

function liveElasticCaches(): ExtentMemory[] {
  const caches: ExtentMemory[] = [];
  for (const ref of elasticCaches) {
    const cache = ref.deref();
    if (cache) caches.push(cache);
    else elasticCaches.delete(ref);
  }
  return caches;
}
