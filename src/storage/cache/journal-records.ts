// The records of the journal (journal.ts) and their encoding. A segment is a plain sequence
// of records; all integers are big-endian:
//
//   offset size  field
//   0      4     magic 0x534e4a31 ("SNJ1")
//   4      1     type: 1 = WRITE, 2 = ZERO, 3 = DISCARD, 4 = UPLOADED
//   5      3     reserved, zero
//   8      8     sequence number, strictly increasing across all segments
//   16     8     extent index (DISCARD: the first extent)
//   24     4     WRITE, ZERO: offset inside the extent; DISCARD: zero;
//                UPLOADED: high 32 bits of the generation now in the store
//   28     4     WRITE: payload length; ZERO: bytes zeroed; DISCARD: number of extents;
//                UPLOADED: low 32 bits of that generation
//   32     4     CRC-32 (IEEE, zlib's) of bytes 0-31 followed by the payload
//   36     n     WRITE only: the payload (n = length)

import { crc32 } from '../../crc32.ts';

export const RecordType = { WRITE: 1, ZERO: 2, DISCARD: 3, UPLOADED: 4 } as const;
export type RecordTypeValue = (typeof RecordType)[keyof typeof RecordType];

export interface JournalRecord {
  readonly type: RecordTypeValue;
  readonly seq: number;
  readonly index: number;
  readonly offset: number;
  /** WRITE: payload bytes; ZERO: bytes zeroed; DISCARD: extents discarded. */
  readonly length: number;
  readonly payload?: Buffer | undefined;
}

const MAGIC = 0x534e4a31;
export const HEADER_SIZE = 36;
/** Largest payload a record may claim; anything bigger is corruption. */
const MAX_PAYLOAD = 64 * 1024 * 1024;

/** The generation an UPLOADED record carries (split over its offset and length fields). */
export function uploadedGeneration(record: JournalRecord): number {
  return record.offset * 2 ** 32 + record.length;
}

export function uploadedRecord(seq: number, index: number, gen: number): JournalRecord {
  return { type: RecordType.UPLOADED, seq, index, offset: Math.floor(gen / 2 ** 32), length: gen % 2 ** 32 };
}

export function encodeHeader(record: JournalRecord): Buffer {
  const h = Buffer.alloc(HEADER_SIZE);
  h.writeUInt32BE(MAGIC, 0);
  h.writeUInt8(record.type, 4);
  h.writeBigUInt64BE(BigInt(record.seq), 8);
  h.writeBigUInt64BE(BigInt(record.index), 16);
  h.writeUInt32BE(record.offset, 24);
  h.writeUInt32BE(record.length, 28);
  let crc = crc32(h.subarray(0, 32));
  if (record.payload) crc = crc32(record.payload, crc);
  h.writeUInt32BE(crc, 32);
  return h;
}

/**
 * Parses the records of one segment, whose name says its first sequence number is `firstSeq`;
 * `validBytes` is where its own intact records end.
 */
export function decodeSegment(data: Buffer, firstSeq: number): { records: JournalRecord[]; validBytes: number } {
  const records: JournalRecord[] = [];
  let pos = 0;
  let previousSeq = firstSeq - 1;
  while (pos + HEADER_SIZE <= data.length) {
    if (data.readUInt32BE(pos) !== MAGIC) break;
    const type = data.readUInt8(pos + 4);
    const length = data.readUInt32BE(pos + 28);
    const payloadLength = type === RecordType.WRITE ? length : 0;
    if (type < RecordType.WRITE || type > RecordType.UPLOADED || payloadLength > MAX_PAYLOAD) break;
    if (pos + HEADER_SIZE + payloadLength > data.length) break;
    const payload = payloadLength > 0 ? data.subarray(pos + HEADER_SIZE, pos + HEADER_SIZE + payloadLength) : undefined;
    let crc = crc32(data.subarray(pos, pos + 32));
    if (payload) crc = crc32(payload, crc);
    if (crc !== data.readUInt32BE(pos + 32)) break;
    const seq = Number(data.readBigUInt64BE(pos + 8));
    if (seq <= previousSeq) break; // left over from the segment's previous life
    previousSeq = seq;
    records.push({
      type: type as RecordTypeValue,
      seq,
      index: Number(data.readBigUInt64BE(pos + 16)),
      offset: data.readUInt32BE(pos + 24),
      length,
      payload,
    });
    pos += HEADER_SIZE + payloadLength;
  }
  return { records, validBytes: pos };
}
