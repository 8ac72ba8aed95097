// Encoding and decoding of transmission-phase messages. Pure functions over Buffers, so the
// codec is tested on its own, without sockets.

import {
  REPLY_FLAG_DONE, REQUEST_HEADER_SIZE, REQUEST_MAGIC, ReplyType, SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC,
} from './constants.ts';
import { ProtocolError } from './errors.ts';

export interface Request {
  readonly flags: number;
  readonly type: number;
  /** The client's 8-byte handle, echoed in every reply. */
  readonly handle: Buffer;
  /** Byte offset; beyond Number.MAX_SAFE_INTEGER it is reported as Infinity (always out of range). */
  readonly offset: number;
  readonly length: number;
}

export function decodeRequest(header: Buffer): Request {
  if (header.length !== REQUEST_HEADER_SIZE) throw new ProtocolError('short request header');
  const magic = header.readUInt32BE(0);
  if (magic !== REQUEST_MAGIC) throw new ProtocolError(`bad request magic 0x${magic.toString(16)}`);
  const high = header.readUInt32BE(16);
  const low = header.readUInt32BE(20);
  // 2^53 is far beyond any device we serve; above it a Number would lose precision.
  const offset = high >= 0x200000 ? Infinity : high * 0x100000000 + low;
  return {
    flags: header.readUInt16BE(4),
    type: header.readUInt16BE(6),
    handle: header.subarray(8, 16),
    offset,
    length: header.readUInt32BE(24),
  };
}

export function encodeRequest(req: { flags: number; type: number; handle: Buffer; offset: number; length: number }): Buffer {
  const b = Buffer.allocUnsafe(REQUEST_HEADER_SIZE);
  b.writeUInt32BE(REQUEST_MAGIC, 0);
  b.writeUInt16BE(req.flags, 4);
  b.writeUInt16BE(req.type, 6);
  req.handle.copy(b, 8, 0, 8);
  b.writeBigUInt64BE(BigInt(req.offset), 16);
  b.writeUInt32BE(req.length, 24);
  return b;
}

export function simpleReply(handle: Buffer, errno: number): Buffer {
  const b = Buffer.allocUnsafe(16);
  b.writeUInt32BE(SIMPLE_REPLY_MAGIC, 0);
  b.writeUInt32BE(errno, 4);
  handle.copy(b, 8, 0, 8);
  return b;
}

export const CHUNK_HEADER_SIZE = 20;

function chunkHeader(b: Buffer, handle: Buffer, flags: number, type: number, length: number): void {
  b.writeUInt32BE(STRUCTURED_REPLY_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  handle.copy(b, 8, 0, 8);
  b.writeUInt32BE(length, 16);
}

/** Header of an OFFSET_DATA chunk; the caller sends `dataLength` bytes right after it. */
export function offsetDataHeader(handle: Buffer, done: boolean, offset: number, dataLength: number): Buffer {
  const b = Buffer.allocUnsafe(CHUNK_HEADER_SIZE + 8);
  chunkHeader(b, handle, done ? REPLY_FLAG_DONE : 0, ReplyType.OFFSET_DATA, 8 + dataLength);
  b.writeBigUInt64BE(BigInt(offset), CHUNK_HEADER_SIZE);
  return b;
}

export function offsetHoleChunk(handle: Buffer, done: boolean, offset: number, length: number): Buffer {
  const b = Buffer.allocUnsafe(CHUNK_HEADER_SIZE + 12);
  chunkHeader(b, handle, done ? REPLY_FLAG_DONE : 0, ReplyType.OFFSET_HOLE, 12);
  b.writeBigUInt64BE(BigInt(offset), CHUNK_HEADER_SIZE);
  b.writeUInt32BE(length, CHUNK_HEADER_SIZE + 8);
  return b;
}

export function noneChunk(handle: Buffer): Buffer {
  const b = Buffer.allocUnsafe(CHUNK_HEADER_SIZE);
  chunkHeader(b, handle, REPLY_FLAG_DONE, ReplyType.NONE, 0);
  return b;
}

export function errorChunk(handle: Buffer, errno: number, message: string): Buffer {
  // Messages are for humans and optional; keep them short and within the 16-bit length field.
  const text = Buffer.from(message.slice(0, 1024));
  const b = Buffer.allocUnsafe(CHUNK_HEADER_SIZE + 6 + text.length);
  chunkHeader(b, handle, REPLY_FLAG_DONE, ReplyType.ERROR, 6 + text.length);
  b.writeUInt32BE(errno, CHUNK_HEADER_SIZE);
  b.writeUInt16BE(text.length, CHUNK_HEADER_SIZE + 4);
  text.copy(b, CHUNK_HEADER_SIZE + 6);
  return b;
}

/** A BLOCK_STATUS chunk for one metadata context: (length, flags) descriptors. */
export function blockStatusChunk(handle: Buffer, contextId: number, descriptors: ReadonlyArray<readonly [number, number]>): Buffer {
  const b = Buffer.allocUnsafe(CHUNK_HEADER_SIZE + 4 + 8 * descriptors.length);
  chunkHeader(b, handle, REPLY_FLAG_DONE, ReplyType.BLOCK_STATUS, 4 + 8 * descriptors.length);
  b.writeUInt32BE(contextId, CHUNK_HEADER_SIZE);
  let pos = CHUNK_HEADER_SIZE + 4;
  for (const [length, flags] of descriptors) {
    b.writeUInt32BE(length, pos);
    b.writeUInt32BE(flags, pos + 4);
    pos += 8;
  }
  return b;
}
