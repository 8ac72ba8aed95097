// src/crc32.ts: the addon's CRC-32 must be zlib's to the bit (journals written before it, and
// S3's check of x-amz-checksum-crc32, depend on it), on both sides of the short-input cutoff
// and when continued from an earlier CRC.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { crc32 as zlibCrc32 } from 'node:zlib';
import fc from 'fast-check';
import { crc32, crc32Implementation } from '../../src/crc32.ts';

describe('crc32', () => {
  it('uses the addon on this platform (the benchmark and CI machines have its prebuilt binary)', () => {
    assert.equal(crc32Implementation, 'addon');
  });

  it('gives zlib\'s value for any bytes and any starting CRC', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 4096 }), fc.integer({ min: 0, max: 0xffffffff }), (bytes, previous) => {
      const data = Buffer.from(bytes);
      assert.equal(crc32(data, previous), zlibCrc32(data, previous));
      assert.equal(crc32(data), zlibCrc32(data));
    }), { numRuns: 500 });
  });

  it('continues a CRC across pieces of any length, as the journal does (header, then payload)', () => {
    const whole = randomBytes(1024 * 1024 + 13);
    for (const cut of [0, 1, 32, 127, 128, 129, 4096, 1024 * 1024]) {
      assert.equal(crc32(whole.subarray(cut), crc32(whole.subarray(0, cut))), zlibCrc32(whole), `cut at ${cut}`);
    }
  });

  it('answers the standard check value', () => {
    assert.equal(crc32(Buffer.from('123456789')), 0xcbf43926);
    assert.equal(crc32(Buffer.from('123456789'.repeat(20))), zlibCrc32(Buffer.from('123456789'.repeat(20))));
  });
});
