// Per-extent mutual exclusion. A read-modify-write of an extent must not interleave with
// another change to the same extent, or one of the two would be lost. Locks exist only while
// held or awaited, so memory does not grow with the device.

export class ExtentLocks {
  private readonly tails = new Map<number, Promise<void>>();

  /** True while someone holds or awaits the extent's lock. */
  isBusy(index: number): boolean {
    return this.tails.has(index);
  }

  /** Waits for the extent's lock; resolves with the function that releases it. */
  async acquire(index: number): Promise<() => void> {
    const previous = this.tails.get(index);
    let release!: () => void;
    const mine = new Promise<void>((resolve) => { release = resolve; });
    const tail = previous ? previous.then(() => mine) : mine;
    this.tails.set(index, tail);
    if (previous) await previous;
    return () => {
      release();
      if (this.tails.get(index) === tail) this.tails.delete(index);
    };
  }

  /** Runs `fn` once every earlier holder of the extent's lock is done. */
  async with<T>(index: number, fn: () => Promise<T>): Promise<T> {
    const release = await this.acquire(index);
    try {
      return await fn();
    } finally {
      release();
    }
  }

  /** Runs `fn` holding the locks of all `indexes` (taken in ascending order, so never deadlocking). */
  async withAll<T>(indexes: readonly number[], fn: () => Promise<T>): Promise<T> {
    const releases: Array<() => void> = [];
    try {
      for (const index of [...indexes].sort((a, b) => a - b)) releases.push(await this.acquire(index));
      return await fn();
    } finally {
      for (const release of releases) release();
    }
  }
}
