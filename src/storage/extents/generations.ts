// Generations number the uploads of a volume (docs/format.md): epoch × 2^32 + sequence. The
// epoch is the writer's, one more than any before it (the lease hands it out, volume/lease.ts),
// so a later writer's objects always win over an earlier one's; the sequence counts the
// writer's uploads. Every generation is a safe integer (below 2^53), so it is a plain number.

export const SEQUENCE_SPAN = 2 ** 32;
export const MAX_EPOCH = 2 ** 21 - 1;

export function epochOf(generation: number): number {
  return Math.floor(generation / SEQUENCE_SPAN);
}

export class GenerationCounter {
  private epochValue: number;
  private sequence = 0;

  constructor(epoch: number) {
    this.epochValue = GenerationCounter.check(epoch);
  }

  get epoch(): number {
    return this.epochValue;
  }

  /** Moves to a new epoch (the lease's); generations go on from its first. */
  use(epoch: number): void {
    if (epoch <= this.epochValue && this.sequence > 0) throw new Error(`epoch ${epoch} is not after ${this.epochValue}`);
    this.epochValue = GenerationCounter.check(epoch);
    this.sequence = 0;
  }

  next(): number {
    // 2^32 uploads in one run of a gateway: 4 PiB of 1 MiB extents. A restart takes a new epoch.
    if (this.sequence >= SEQUENCE_SPAN - 1) throw new Error('generations of this epoch used up: restart the gateway');
    return this.epochValue * SEQUENCE_SPAN + ++this.sequence;
  }

  private static check(epoch: number): number {
    if (!Number.isSafeInteger(epoch) || epoch < 1 || epoch > MAX_EPOCH) throw new Error(`epoch ${epoch} out of range 1..${MAX_EPOCH}`);
    return epoch;
  }
}
