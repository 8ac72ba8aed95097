// CRC-32 (IEEE 802.3, the one zlib computes) of the journal's records and of PutObject bodies
// (x-amz-checksum-crc32).
//
// Node's zlib.crc32 has no carry-less-multiply path: 207 µs per MiB on the benchmark machine,
// where @node-rs/crc32 (the crc32fast crate, PCLMULQDQ) takes 77 µs. A sequential write pays
// two per MiB (its journal record, then its PUT body): 0.26 CPU-s per GiB less with the addon
// (bench/results/crc32-19.md). Below SHORT_BYTES the call into the addon costs more than
// zlib's whole CRC (32 bytes: about 170 ns against 100), so short inputs stay with zlib. On a
// platform without a prebuilt addon zlib does everything: the same values, more CPU.

import { createRequire } from 'node:module';
import { crc32 as zlibCrc32 } from 'node:zlib';

type Crc32 = (data: Buffer, previous?: number) => number;

const SHORT_BYTES = 128;

function loadAddon(): Crc32 | undefined {
  try {
    const addon = createRequire(import.meta.url)('@node-rs/crc32') as { crc32: (data: Buffer, initialState?: number) => number };
    // Checked once against zlib: a wrong value here would make every journal record unreadable.
    const probe = Buffer.from('123456789');
    if (addon.crc32(probe) !== zlibCrc32(probe) || addon.crc32(probe, 1) !== zlibCrc32(probe, 1)) return undefined;
    return addon.crc32;
  } catch {
    return undefined;
  }
}

const addon = loadAddon();

/** Which code computes the CRCs of large inputs: the addon, or zlib where it could not load. */
export const crc32Implementation: 'addon' | 'zlib' = addon ? 'addon' : 'zlib';

/** The CRC-32 of `data`, continuing from `previous` (the CRC of the bytes before it) if given. */
export function crc32(data: Buffer, previous = 0): number {
  return addon && data.length >= SHORT_BYTES ? addon(data, previous) : zlibCrc32(data, previous);
}
