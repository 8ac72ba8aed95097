// Per-extent mutual exclusion. A read-modify-write of an extent must not interleave with
// another change to the same extent, or one of the two would be lost. Locks exist only while
// held or awaited, so memory does not grow with the device.

export class ExtentLocks {
  private readonly tails = new Map<number, Promise<void>>();

  /** Runs `fn` once every earlier holder of the extent's lock is done. */
  async with<T>(index: number, fn: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(index);
    let release!: () => void;
    const mine = new Promise<void>((resolve) => { release = resolve; });
    const tail = previous ? previous.then(() => mine) : mine;
    this.tails.set(index, tail);
    if (previous) await previous;
    try {
      return await fn();
    } finally {
      release();
      if (this.tails.get(index) === tail) this.tails.delete(index);
    }
  }
}
