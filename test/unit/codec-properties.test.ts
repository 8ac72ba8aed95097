// Property tests of the two codecs whose bytes outlive a single call: the NBD transmission
// messages (what crosses the wire) and the journal's records (what survives a crash). Random
// inputs from fast-check; a failure prints the seed and the smallest input that fails.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { REPLY_FLAG_DONE, ReplyType, SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC } from '../../src/protocol/constants.ts';
import {
  blockStatusChunk, CHUNK_HEADER_SIZE, decodeRequest, encodeRequest, errorChunk, noneChunk, offsetDataHeader, offsetHoleChunk, simpleReply,
} from '../../src/protocol/wire.ts';
import { decodeSegment, encodeHeader, HEADER_SIZE, type JournalRecord, RecordType } from '../../src/storage/cache/journal.ts';

const u16 = fc.integer({ min: 0, max: 0xffff });
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const handle = fc.uint8Array({ minLength: 8, maxLength: 8 }).map((a) => Buffer.from(a));
/** Offsets the decoder keeps exact (below 2^53). */
const offset = fc.maxSafeNat();

/** A structured reply chunk as a client reads it: the 20-byte header and its payload. */
function decodeChunk(b: Buffer): { flags: number; type: number; handle: Buffer; payload: Buffer } {
  assert.equal(b.readUInt32BE(0), STRUCTURED_REPLY_MAGIC);
  const length = b.readUInt32BE(16);
  return { flags: b.readUInt16BE(4), type: b.readUInt16BE(6), handle: b.subarray(8, 16), payload: b.subarray(CHUNK_HEADER_SIZE, CHUNK_HEADER_SIZE + length) };
}

describe('NBD wire codec', () => {
  it('decodes every request it encodes', () => {
    fc.assert(fc.property(u16, u16, handle, offset, u32, (flags, type, h, off, length) => {
      const decoded = decodeRequest(encodeRequest({ flags, type, handle: h, offset: off, length }));
      assert.deepEqual({ ...decoded, handle: Buffer.from(decoded.handle) }, { flags, type, handle: h, offset: off, length });
    }));
  });

  it('reads offsets from 2^53 up as out of range, never as a smaller offset', () => {
    fc.assert(fc.property(fc.bigInt({ min: 2n ** 53n, max: 2n ** 64n - 1n }), (big) => {
      const b = encodeRequest({ flags: 0, type: 0, handle: Buffer.alloc(8), offset: 0, length: 0 });
      b.writeBigUInt64BE(big, 16);
      assert.equal(decodeRequest(b).offset, Infinity);
    }));
  });

  it('encodes simple replies and every chunk type so that a client reads back what was meant', () => {
    fc.assert(fc.property(handle, u32, (h, errno) => {
      const r = simpleReply(h, errno);
      assert.equal(r.readUInt32BE(0), SIMPLE_REPLY_MAGIC);
      assert.equal(r.readUInt32BE(4), errno);
      assert.deepEqual(r.subarray(8, 16), h);
    }));
    fc.assert(fc.property(handle, fc.boolean(), offset, fc.integer({ min: 0, max: 2 ** 20 }), (h, done, off, length) => {
      const data = decodeChunk(Buffer.concat([offsetDataHeader(h, done, off, length), Buffer.alloc(length)]));
      assert.deepEqual([data.type, data.flags, data.handle, data.payload.length], [ReplyType.OFFSET_DATA, done ? REPLY_FLAG_DONE : 0, h, 8 + length]);
      assert.equal(Number(data.payload.readBigUInt64BE(0)), off);
      const hole = decodeChunk(offsetHoleChunk(h, done, off, length));
      assert.deepEqual([hole.type, hole.flags, Number(hole.payload.readBigUInt64BE(0)), hole.payload.readUInt32BE(8)],
        [ReplyType.OFFSET_HOLE, done ? REPLY_FLAG_DONE : 0, off, length]);
      const none = decodeChunk(noneChunk(h));
      assert.deepEqual([none.type, none.flags, none.payload.length], [ReplyType.NONE, REPLY_FLAG_DONE, 0]);
    }));
    fc.assert(fc.property(handle, u32, fc.string({ maxLength: 3000 }), (h, errno, message) => {
      const e = decodeChunk(errorChunk(h, errno, message));
      const textLength = e.payload.readUInt16BE(4);
      assert.equal(e.type, ReplyType.ERROR);
      assert.equal(e.payload.readUInt32BE(0), errno);
      assert.equal(e.payload.length, 6 + textLength);
      assert.equal(e.payload.toString('utf8', 6), message.slice(0, 1024));
    }));
    fc.assert(fc.property(handle, u32, fc.array(fc.tuple(u32, u32), { maxLength: 64 }), (h, context, descriptors) => {
      const s = decodeChunk(blockStatusChunk(h, context, descriptors));
      assert.equal(s.type, ReplyType.BLOCK_STATUS);
      assert.equal(s.payload.readUInt32BE(0), context);
      const back = Array.from({ length: (s.payload.length - 4) / 8 }, (_, i) => [s.payload.readUInt32BE(4 + 8 * i), s.payload.readUInt32BE(8 + 8 * i)]);
      assert.deepEqual(back, descriptors);
    }));
  });
});

/** Records of one segment: sequence numbers strictly increasing from `firstSeq`, payloads on WRITEs. */
const segmentRecords = fc.tuple(
  fc.integer({ min: 1, max: 2 ** 40 }),
  fc.array(fc.record({
    type: fc.constantFrom(RecordType.WRITE, RecordType.ZERO, RecordType.DISCARD, RecordType.UPLOADED),
    gap: fc.integer({ min: 0, max: 3 }),
    index: fc.integer({ min: 0, max: 2 ** 40 }),
    offset: u32,
    length: u32,
    payload: fc.uint8Array({ maxLength: 300 }),
  }), { maxLength: 12 }),
).map(([firstSeq, drafts]) => {
  let seq = firstSeq - 1;
  const records: JournalRecord[] = drafts.map((d) => {
    seq += 1 + d.gap;
    if (d.type !== RecordType.WRITE) return { type: d.type, seq, index: d.index, offset: d.offset, length: d.length };
    const payload = Buffer.from(d.payload);
    return { type: d.type, seq, index: d.index, offset: d.offset, length: payload.length, payload };
  });
  return { firstSeq, records };
});

function encodeSegment(records: readonly JournalRecord[]): { data: Buffer; ends: number[] } {
  const parts: Buffer[] = [];
  const ends: number[] = [];
  let at = 0;
  for (const r of records) {
    parts.push(encodeHeader(r));
    if (r.payload) parts.push(r.payload);
    at += HEADER_SIZE + (r.payload?.length ?? 0);
    ends.push(at);
  }
  return { data: Buffer.concat(parts), ends };
}

/** Comparable records: an empty payload reads back as none. */
const plain = (records: readonly JournalRecord[]): unknown[] => records.map((r) => ({ ...r, payload: r.payload?.length ? Buffer.from(r.payload) : undefined }));

describe('journal record codec', () => {
  it('replays every segment it writes, record for record', () => {
    fc.assert(fc.property(segmentRecords, ({ firstSeq, records }) => {
      const { data } = encodeSegment(records);
      const replayed = decodeSegment(data, firstSeq);
      assert.equal(replayed.validBytes, data.length);
      assert.deepEqual(plain(replayed.records), plain(records));
    }));
  });

  it('replays every truncation of a segment to a prefix of its records, ending where that prefix ends', () => {
    fc.assert(fc.property(segmentRecords, ({ firstSeq, records }) => {
      const { data, ends } = encodeSegment(records);
      for (let cut = 0; cut <= data.length; cut++) {
        const replayed = decodeSegment(data.subarray(0, cut), firstSeq);
        const whole = ends.filter((end) => end <= cut).length;
        assert.deepEqual(plain(replayed.records), plain(records.slice(0, whole)), `cut at ${cut}`);
        assert.equal(replayed.validBytes, whole === 0 ? 0 : ends[whole - 1]);
      }
    }), { numRuns: 60 });
  });

  it('replays a segment with one flipped bit only up to the record that holds it', () => {
    fc.assert(fc.property(segmentRecords.filter((s) => s.records.length > 0), fc.nat(), fc.integer({ min: 0, max: 7 }), ({ firstSeq, records }, where, bit) => {
      const { data, ends } = encodeSegment(records);
      const at = where % data.length;
      const damaged = Buffer.from(data);
      damaged[at]! ^= 1 << bit;
      const hit = ends.findIndex((end) => at < end);
      const replayed = decodeSegment(damaged, firstSeq);
      assert.deepEqual(plain(replayed.records), plain(records.slice(0, hit)));
    }));
  });
});
