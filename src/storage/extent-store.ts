// The interface every storage layer implements: a device cut into fixed-size extents, each
// addressed by its index. Layers are stacked in stack.ts; the byte-addressed NBD device sits
// on top (extent-device.ts) and splits requests into per-extent calls.
//
// Callers guarantee 0 <= index < extentCount and offset + length <= extentSize; layers may
// assume it. Writes may cover part of an extent: a layer decides how to merge it with the
// extent's previous contents (read-modify-write at the bottom, or deferred merging in a cache).
// Every method rejects with an Error whose `errno` is a POSIX name ('EIO', 'EPERM', 'ENOSPC')
// when it cannot do its job; the protocol layer turns that into the client's error reply.

/** A run of consecutive extents with the same allocation state. */
export interface ExtentRun {
  readonly count: number;
  readonly allocated: boolean;
}

export interface ExtentStore {
  readonly extentSize: number;
  readonly extentCount: number;

  /**
   * Bytes [offset, offset + length) of the extent, or undefined when the extent is a hole
   * (reads as zeros). The buffer must not be modified by the caller, and is only valid until
   * the next write to the extent.
   */
  read(index: number, offset: number, length: number): Promise<Buffer | undefined>;

  /**
   * Stores `data` at `offset`; resolves once later reads return it. Not yet durable. Resolves
   * true when the layer kept `data` itself (nobody may modify or reuse it from then on), false
   * when it copied what it needed; after a rejection the caller must assume it was kept.
   */
  write(index: number, offset: number, data: Buffer): Promise<boolean>;

  /** Makes [offset, offset + length) of the extent read as zeros. */
  zero(index: number, offset: number, length: number): Promise<void>;

  /**
   * Drops the extents [first, first + count): they read as zeros and use no storage. Costs
   * grow with the extents that hold data, not with `count`, so a whole-device discard is cheap.
   */
  discard(first: number, count: number): Promise<void>;

  /** Runs covering [first, first + count) in order; at most `maxRuns` (the last may be cut short). */
  allocation(first: number, count: number, maxRuns: number): Promise<ExtentRun[]>;

  /** Hint: these extents will be read soon. */
  prefetch(first: number, count: number): Promise<void>;

  /**
   * Resolves once every write, zero and discard that resolved before the call is durable;
   * with `indexes` (FUA), only the changes to those extents need to be.
   */
  flush(indexes?: readonly number[]): Promise<void>;

  /** Flushes and releases resources. */
  close(): Promise<void>;
}
