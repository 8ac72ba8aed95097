// The local disk cache: one file of fixed-size slots, each able to hold one extent. Which
// extent a slot holds is the write-back cache's business (kept in memory, rebuilt from the
// journal after a crash); this file only reads and writes bytes at slot offsets.

import { constants } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { InlineWrites, syncCalls } from './inline-writes.ts';

/** Slot writes this small go inline (inline-writes.ts): what a small random write copies into its slot. */
const INLINE_WRITE_BYTES = 64 * 1024;

export class SlotFile {
  readonly slotCount: number;
  private readonly extentSize: number;
  private readonly handle: FileHandle;
  private readonly free: number[] = [];
  private readonly inline = new InlineWrites(INLINE_WRITE_BYTES);

  private constructor(handle: FileHandle, slotCount: number, extentSize: number) {
    this.handle = handle;
    this.slotCount = slotCount;
    this.extentSize = extentSize;
    for (let slot = slotCount - 1; slot >= 0; slot--) this.free.push(slot);
  }

  /** Opens (creating or resizing) the slot file; every slot starts free. */
  static async open(path: string, slotCount: number, extentSize: number): Promise<SlotFile> {
    const handle = await open(path, constants.O_RDWR | constants.O_CREAT, 0o600);
    // Sparse: disk space is only used by slots that were written.
    await handle.truncate(slotCount * extentSize);
    return new SlotFile(handle, slotCount, extentSize);
  }

  get freeCount(): number {
    return this.free.length;
  }

  /** A free slot, or undefined when all are taken. */
  take(): number | undefined {
    return this.free.pop();
  }

  release(slot: number): void {
    this.free.push(slot);
  }

  async read(slot: number, offset: number, length: number): Promise<Buffer> {
    const out = Buffer.allocUnsafe(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.handle.read(out, done, length - done, slot * this.extentSize + offset + done);
      if (bytesRead === 0) {
        out.fill(0, done);
        break;
      }
      done += bytesRead;
    }
    return out;
  }

  async write(slot: number, offset: number, data: Buffer): Promise<void> {
    const position = slot * this.extentSize + offset;
    const fd = this.handle.fd;
    let done = await this.inline.write(data.length, () => syncCalls.writeSync(fd, data, 0, data.length, position), async () => (await this.handle.write(data, 0, data.length, position)).bytesWritten);
    while (done < data.length) {
      const { bytesWritten } = await this.handle.write(data, done, data.length - done, position + done);
      done += bytesWritten;
    }
  }

  close(): Promise<void> {
    return this.handle.close();
  }
}
