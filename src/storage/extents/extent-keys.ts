// Where extent N lives in the object store:
//
//   extents/<hh>/<nnnnnnnnnnnn>
//
// <nnnnnnnnnnnn> is N in 12 lowercase hex digits. <hh> is two hex digits of a multiplicative
// hash of N, so neighbouring extents land under different prefixes: S3 scales request rates
// per prefix, and a sequential write would otherwise hammer one. In a local directory <hh>
// keeps each folder to 1/256th of the extents.

export const EXTENT_PREFIX = 'extents/';
const KEY = /^extents\/([0-9a-f]{2})\/([0-9a-f]{12})$/;

function spread(index: number): string {
  return ((Math.imul(index, 0x9e3779b1) >>> 24) & 0xff).toString(16).padStart(2, '0');
}

export function extentKey(index: number): string {
  return `${EXTENT_PREFIX}${spread(index)}/${index.toString(16).padStart(12, '0')}`;
}

/** The extent index a key names, or undefined for keys that are not extent keys. */
export function extentIndexOf(key: string): number | undefined {
  const match = KEY.exec(key);
  if (!match) return undefined;
  const index = parseInt(match[2]!, 16);
  return spread(index) === match[1] ? index : undefined;
}
