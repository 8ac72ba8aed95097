// One bit per extent: set when the extent's object exists. Kept in memory so reads of holes,
// BLOCK_STATUS and whole-device discards never ask the object store about empty extents.

import type { ExtentRun } from '../extent-store.ts';

export class AllocationMap {
  private bits: Uint8Array;
  private allocated = 0;
  private extents: number;

  constructor(size: number) {
    this.extents = size;
    this.bits = new Uint8Array(Math.ceil(size / 8));
  }

  /** Number of extents the map covers. */
  get size(): number {
    return this.extents;
  }

  /** Covers `size` extents from now on (a volume grown at runtime); the new ones are not allocated. */
  grow(size: number): void {
    if (size <= this.extents) return;
    const bits = new Uint8Array(Math.ceil(size / 8));
    bits.set(this.bits);
    this.bits = bits;
    this.extents = size;
  }

  /** Number of extents marked allocated. */
  get count(): number {
    return this.allocated;
  }

  has(index: number): boolean {
    return (this.bits[index >>> 3]! & (1 << (index & 7))) !== 0;
  }

  set(index: number): void {
    if (this.has(index)) return;
    this.bits[index >>> 3]! |= 1 << (index & 7);
    this.allocated++;
  }

  clear(index: number): void {
    if (!this.has(index)) return;
    this.bits[index >>> 3]! &= ~(1 << (index & 7));
    this.allocated--;
  }

  /** Allocated indexes in [first, first + count), ascending; skips empty bytes quickly. */
  *allocatedIn(first: number, count: number): Generator<number> {
    const end = first + count;
    for (let i = first; i < end;) {
      if ((i & 7) === 0 && this.bits[i >>> 3] === 0) {
        i += 8;
        continue;
      }
      if (this.has(i)) yield i;
      i++;
    }
  }

  /** Runs of equal state covering [first, first + count), at most `maxRuns`. */
  runs(first: number, count: number, maxRuns: number): ExtentRun[] {
    const end = first + count;
    const runs: ExtentRun[] = [];
    let i = first;
    while (i < end && runs.length < maxRuns) {
      const allocated = this.has(i);
      let j = i + 1;
      while (j < end) {
        // Whole bytes of the same state are skipped at once.
        const byte = this.bits[j >>> 3];
        if ((j & 7) === 0 && j + 8 <= end && byte === (allocated ? 0xff : 0)) {
          j += 8;
          continue;
        }
        if (this.has(j) !== allocated) break;
        j++;
      }
      runs.push({ count: j - i, allocated });
      i = j;
    }
    return runs;
  }
}
