// Where extent N lives in the object store (docs/format.md):
//
//   extents/<hh>/<nnnnnnnnnnnn>.<gggggggggggggg>        extent N as of generation G
//   extents/<hh>/<nnnnnnnnnnnn>.<gggggggggggggg>.zero   tombstone: N reads as zeros from G on
//   extents/<hh>/<nnnnnnnnnnnn>                         format 1: extent N, read as generation 0
//
// <nnnnnnnnnnnn> is N in 12 lowercase hex digits, <gggggggggggggg> the generation in 14. <hh>
// is two hex digits of a multiplicative hash of N, so neighbouring extents land under
// different prefixes: S3 scales request rates per prefix, and a sequential write would
// otherwise hammer one. In a local directory <hh> keeps each folder to 1/256th of the extents.
//
// A generation is epoch × 2^32 + sequence (generations.ts): every upload makes a new key, so
// no object is ever overwritten, and the highest generation of an extent is its content.

export const EXTENT_PREFIX = 'extents/';
const KEY = /^extents\/([0-9a-f]{2})\/([0-9a-f]{12})(?:\.([0-9a-f]{14})(\.zero)?)?$/;

/** An extent object named by its key. */
export interface ExtentObjectName {
  readonly index: number;
  /** 0 for a format 1 object. */
  readonly generation: number;
  /** A tombstone: the extent reads as zeros from this generation on. */
  readonly zero: boolean;
  /**
   * Absent or 0: an object of this volume. i ≥ 1: a clone's origin object, in the store of its
   * i-th source (extent-objects.ts); the key is the same, the store another.
   */
  readonly source?: number;
}

function spread(index: number): string {
  return ((Math.imul(index, 0x9e3779b1) >>> 24) & 0xff).toString(16).padStart(2, '0');
}

/** The part of every key of extent N, whatever its generation (format 1's whole key). */
export function extentKeyStem(index: number): string {
  return `${EXTENT_PREFIX}${spread(index)}/${index.toString(16).padStart(12, '0')}`;
}

export function extentKey(index: number, generation: number, zero = false): string {
  if (generation === 0) return extentKeyStem(index);
  return `${extentKeyStem(index)}.${generation.toString(16).padStart(14, '0')}${zero ? '.zero' : ''}`;
}

/** What a key names, or undefined for keys that are not extent keys. */
export function parseExtentKey(key: string): ExtentObjectName | undefined {
  const match = KEY.exec(key);
  if (!match) return undefined;
  const index = parseInt(match[2]!, 16);
  if (spread(index) !== match[1]) return undefined;
  const generation = match[3] === undefined ? 0 : parseInt(match[3], 16);
  // Generation 0 has the format 1 key; above 2^53 a generation would not be exact.
  if (match[3] !== undefined && (generation === 0 || !Number.isSafeInteger(generation))) return undefined;
  return { index, generation, zero: match[4] !== undefined };
}
