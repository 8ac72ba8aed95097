// Random workloads checked against a plain Buffer model of the device: the storage stack must
// read back exactly what the model holds, whatever the alignment and concurrency.

import type { BlockDevice } from '../../src/protocol/block-device.ts';
import { assertSameBytes } from './bytes.ts';

/** A deterministic random source, so a failure can be replayed from its seed. */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** A position-dependent pattern, so bytes written at the wrong place show. */
export function pattern(length: number, base: number): Buffer {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i++) b[i] = (base + i * 7 + (i >> 9)) & 0xff || 1;
  return b;
}

export async function readAll(dev: BlockDevice, offset: number, length: number): Promise<Buffer> {
  const pieces = await dev.read(offset, length);
  return Buffer.concat(pieces.map((p) => p.data ?? Buffer.alloc(p.length)));
}

/**
 * Runs `rounds` batches of random writes, zeroes, trims (and flushes, if `flushes`) of any
 * alignment, each batch non-overlapping and concurrent as pipelined requests are, and checks
 * the device against the model every ten rounds. Returns the model.
 */
export async function runRandomWorkload(dev: BlockDevice, options: {
  seed: number; rounds: number; maxLength: number; flushes: boolean;
  /** Called as each operation completes (others of its batch may still run) and after each batch: an invariant check. */
  afterStep?: () => void;
  /** Called after each batch, when no request is in flight, with the model as it is then. */
  afterBatch?: (model: Buffer) => void;
}): Promise<Buffer> {
  const model = Buffer.alloc(dev.size);
  const random = rng(options.seed);
  for (let round = 0; round < options.rounds; round++) {
    const ops: Array<Promise<void>> = [];
    const taken: Array<[number, number]> = [];
    for (let k = 0; k < 6; k++) {
      const offset = Math.floor(random() * dev.size);
      const length = 1 + Math.floor(random() * Math.min(dev.size - offset, options.maxLength));
      if (taken.some(([a, b]) => offset < b && a < offset + length)) continue;
      taken.push([offset, offset + length]);
      const kind = random();
      if (kind < 0.6) {
        const data = pattern(length, Math.floor(random() * 256));
        data.copy(model, offset);
        // As the NBD session does, reuse the buffer once the device says it did not keep it:
        // scribbling on it then catches a device that keeps what it said it did not.
        ops.push(dev.write(offset, data, random() < 0.1).then((kept) => { if (!kept) data.fill(0xee); }));
      } else if (kind < 0.75) {
        model.fill(0, offset, offset + length);
        ops.push(dev.zero(offset, length, true, false));
      } else if (kind < 0.9 || !options.flushes) {
        model.fill(0, offset, offset + length);
        ops.push(dev.trim(offset, length, false));
      } else {
        ops.push(dev.flush());
      }
    }
    await Promise.all(options.afterStep ? ops.map((op) => op.then(options.afterStep)) : ops);
    options.afterStep?.();
    options.afterBatch?.(model);
    if (round % 10 === 9) assertSameBytes(await readAll(dev, 0, dev.size), model, `seed ${options.seed} round ${round}`);
  }
  return model;
}
