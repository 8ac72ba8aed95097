// All-zero detection. Zero extents are never stored, so this runs on the write path; it
// compares against a zero buffer, which Node does with memcmp.

const ZERO = Buffer.alloc(64 * 1024);

export function isAllZero(data: Buffer): boolean {
  for (let pos = 0; pos < data.length; pos += ZERO.length) {
    const n = Math.min(ZERO.length, data.length - pos);
    if (!data.subarray(pos, pos + n).equals(n === ZERO.length ? ZERO : ZERO.subarray(0, n))) return false;
  }
  return true;
}
