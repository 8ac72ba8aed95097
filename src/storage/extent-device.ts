// The byte-to-extent adapter: serves the protocol's byte-addressed BlockDevice on top of an
// ExtentStore. A request is cut into a partial head extent, whole body extents and a partial
// tail extent; the pieces run concurrently (different extents never conflict). Zeroing whole
// extents becomes one discard of the range, so a TRIM of the whole device costs what the
// stored extents cost, not what the device size would.

import type { AllocationRun, BlockDevice, ReadPiece } from '../protocol/block-device.ts';
import type { ExtentStore } from './extent-store.ts';

/** A part of a byte range that lies in one extent. */
interface Piece {
  readonly index: number;
  /** Offset inside the extent. */
  readonly offset: number;
  readonly length: number;
  /** Offset of the piece from the start of the request. */
  readonly at: number;
}

export class ExtentDevice implements BlockDevice {
  private bytes: number;
  readonly readOnly: boolean;
  readonly preferredBlockSize: number;
  private readonly store: ExtentStore;
  private readonly extentSize: number;

  constructor(store: ExtentStore, size: number, readOnly: boolean) {
    this.store = store;
    this.bytes = size;
    this.readOnly = readOnly;
    this.extentSize = store.extentSize;
    this.preferredBlockSize = store.extentSize;
  }

  get size(): number {
    return this.bytes;
  }

  /**
   * The volume grew (Storage.grow, after the store below learnt it): new connections negotiate
   * the new size; a session keeps the one it negotiated (NBD cannot tell a client of a change).
   */
  grow(size: number): void {
    if (size > this.bytes) this.bytes = size;
  }

  async read(offset: number, length: number): Promise<ReadPiece[]> {
    const pieces = this.split(offset, length);
    const data = await Promise.all(pieces.map((p) => this.store.read(p.index, p.offset, p.length)));
    return pieces.map((p, i) => ({ offset: offset + p.at, length: p.length, data: data[i] }));
  }

  async write(offset: number, data: Buffer, fua: boolean): Promise<boolean> {
    const pieces = this.split(offset, data.length);
    const kept = await Promise.all(pieces.map((p) => this.store.write(p.index, p.offset, data.subarray(p.at, p.at + p.length))));
    if (fua) await this.store.flush(pieces.map((p) => p.index));
    return kept.includes(true);
  }

  async zero(offset: number, length: number, _mayTrim: boolean, fua: boolean): Promise<void> {
    // Absent extents are zeros and stored zeros are deleted, so zeroing and trimming are one
    // operation here; NO_HOLE cannot make us store zeros we would delete anyway. The whole
    // extents in the middle are computed, not enumerated: one discard call covers them all.
    const e = this.extentSize;
    const end = offset + length;
    const firstWhole = Math.ceil(offset / e);
    const endWhole = Math.floor(end / e);
    const work: Array<Promise<void>> = [];
    if (firstWhole < endWhole) work.push(this.store.discard(firstWhole, endWhole - firstWhole));
    const headIndex = Math.floor(offset / e);
    if (offset % e !== 0) {
      work.push(this.store.zero(headIndex, offset % e, Math.min(end, (headIndex + 1) * e) - offset));
    }
    const tailIndex = Math.floor(end / e);
    if (end % e !== 0 && (tailIndex !== headIndex || offset % e === 0)) {
      const from = Math.max(offset, tailIndex * e);
      work.push(this.store.zero(tailIndex, from - tailIndex * e, end - from));
    }
    await Promise.all(work);
    if (fua) await this.store.flush();
  }

  trim(offset: number, length: number, fua: boolean): Promise<void> {
    return this.zero(offset, length, true, fua);
  }

  flush(): Promise<void> {
    return this.store.flush();
  }

  async allocation(offset: number, length: number): Promise<AllocationRun[]> {
    const first = Math.floor(offset / this.extentSize);
    const end = Math.ceil((offset + length) / this.extentSize);
    const runs = await this.store.allocation(first, end - first, 1024);
    const out: AllocationRun[] = [];
    let pos = offset;
    let extent = first;
    for (const run of runs) {
      extent += run.count;
      const runEnd = Math.min(extent * this.extentSize, offset + length);
      out.push({ length: runEnd - pos, hole: !run.allocated });
      pos = runEnd;
    }
    return out;
  }

  prefetch(offset: number, length: number): Promise<void> {
    const first = Math.floor(offset / this.extentSize);
    return this.store.prefetch(first, Math.ceil((offset + length) / this.extentSize) - first);
  }

  private split(offset: number, length: number): Piece[] {
    const pieces: Piece[] = [];
    const end = offset + length;
    for (let pos = offset; pos < end;) {
      const index = Math.floor(pos / this.extentSize);
      const inExtent = pos - index * this.extentSize;
      const n = Math.min(this.extentSize - inExtent, end - pos);
      pieces.push({ index, offset: inExtent, length: n, at: pos - offset });
      pos += n;
    }
    return pieces;
  }
}
