// The byte-addressed device that an NBD session serves. This is the only thing the protocol
// layer knows about storage: it validates every request once (range, flags, read-only) before
// calling in, so implementations may assume offsets and lengths are inside the device.

/** One piece of a read: `data` holds `length` bytes, or is undefined for a hole (zeros). */
export interface ReadPiece {
  readonly offset: number;
  readonly length: number;
  readonly data: Buffer | undefined;
}

/** One run of the base:allocation map. */
export interface AllocationRun {
  readonly length: number;
  /** True when the run is not stored (reads as zeros). */
  readonly hole: boolean;
}

export interface BlockDevice {
  /**
   * Size in bytes, read at each handshake. It may grow while served (a volume resized at
   * runtime); a session keeps the size it negotiated.
   */
  readonly size: number;
  /** Size a client should align to for efficiency: the storage extent size. */
  readonly preferredBlockSize: number;
  readonly readOnly: boolean;

  /** Returns pieces covering exactly [offset, offset + length) in ascending order. */
  read(offset: number, length: number): Promise<ReadPiece[]>;

  /**
   * Stores `data` at `offset`. Resolves once later reads see it; with `fua`, once it is also
   * durable. Resolves true when the device kept `data` itself (it is the device's from then
   * on), false when it is done with it and the session may recycle it; after a rejection the
   * session must assume it was kept. Keeping the buffer saves a device a copy of the bytes.
   */
  write(offset: number, data: Buffer, fua: boolean): Promise<boolean>;

  /**
   * Makes the range read as zeros. `mayTrim` allows releasing storage (it is false for
   * WRITE_ZEROES with NO_HOLE, which the storage may still honour by storing nothing: absent
   * data reads as zeros everywhere in s3nbd).
   */
  zero(offset: number, length: number, mayTrim: boolean, fua: boolean): Promise<void>;

  /** Discards the range. s3nbd makes trimmed ranges read back as zeros. */
  trim(offset: number, length: number, fua: boolean): Promise<void>;

  /** Resolves once every write that resolved before this call is durable. */
  flush(): Promise<void>;

  /** Allocation runs starting at `offset`, covering at most `length` bytes (at least one run). */
  allocation(offset: number, length: number): Promise<AllocationRun[]>;

  /** Hint that the range will be read soon. */
  prefetch(offset: number, length: number): Promise<void>;
}
