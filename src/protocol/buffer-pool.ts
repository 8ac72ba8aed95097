// Recycled buffers for write payloads. A fresh 1 MiB allocation costs several times more than
// copying 1 MiB into memory that is already mapped (page faults, then garbage collection), so
// payloads are read into buffers that go back to the pool once the write has completed.
// Small payloads are not worth pooling. The pool keeps at most MAX_POOLED_BYTES in total.

const MIN_POOLED = 64 * 1024;
export const MAX_POOLED_BYTES = 128 * 1024 * 1024;

export class BufferPool {
  private readonly free = new Map<number, ArrayBuffer[]>();
  private pooledBytes = 0;

  /** The memory acquire(size) takes: pooled buffers are rounded up to a power of two. */
  static footprint(size: number): number {
    return size < MIN_POOLED ? size : 2 ** Math.ceil(Math.log2(size));
  }

  /** A buffer of exactly `size` bytes, with unspecified contents. */
  acquire(size: number): Buffer {
    if (size < MIN_POOLED) return Buffer.allocUnsafe(size);
    const capacity = BufferPool.footprint(size);
    const recycled = this.free.get(capacity)?.pop();
    if (recycled) {
      this.pooledBytes -= capacity;
      return Buffer.from(recycled, 0, size);
    }
    return Buffer.from(new ArrayBuffer(capacity), 0, size);
  }

  /** Gives a buffer from acquire() back; nobody may use it afterwards. */
  release(buffer: Buffer): void {
    const whole = buffer.buffer;
    if (!(whole instanceof ArrayBuffer) || buffer.length < MIN_POOLED || whole.byteLength !== 2 ** Math.ceil(Math.log2(buffer.length))) return;
    if (this.pooledBytes + whole.byteLength > MAX_POOLED_BYTES) return;
    let list = this.free.get(whole.byteLength);
    if (!list) this.free.set(whole.byteLength, (list = []));
    list.push(whole);
    this.pooledBytes += whole.byteLength;
  }
}

/** One pool for the whole process: every connection's payloads come and go through it. */
export const payloadPool = new BufferPool();
