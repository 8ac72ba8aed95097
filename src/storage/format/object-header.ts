// The header every extent object of format 2 starts with (docs/format.md, docs/s3.md). It says
// how to turn the object's body back into the extent, and carries the check that the body is
// the one this gateway wrote for this extent: the bytes of a damaged, cut short or misplaced
// object are refused, never served as data.
//
// All numbers big-endian. 64 bytes, then the payload:
//
//   offset size  field
//        0    4  magic            0x89 'S' '3' 'N' (the high bit: not text, not another format)
//        4    1  version          1 (a reader refuses any other)
//        5    1  flags            bit 0: the payload is zstd-compressed; bit 1: it is encrypted;
//                                 the other bits are zero
//        6    1  cipher           0 none, 1 AES-256-GCM, 2 ChaCha20-Poly1305; 0 exactly when not encrypted
//        7    1  header length    64
//        8    4  extent length    bytes of the extent once decoded (1 to 32 MiB)
//       12    4  payload length   bytes after the header: the object is exactly 64 + this
//       16   12  nonce            the AEAD's nonce (random per object); zeros when not encrypted
//       28    4  reserved         zeros
//       32   32  checksum         not encrypted: SHA-256 of (bytes 0-31, identity, payload);
//                                 encrypted: the AEAD's 16-byte tag, then 16 zero bytes
//       64    …  payload          the extent, zstd-compressed when flag 0 (then encrypted when flag 1)
//
// The identity is the extent the object belongs to: "s3nbd extent", a zero byte, the volume
// id's length (1 byte) and UTF-8 bytes, the extent number and the generation (8 bytes each).
// It is not stored: a reader computes it from the key it asked for. An encrypted payload is
// sealed with bytes 0-31 and the identity as the AEAD's associated data, so the header's
// fields are authenticated too; the compression happens before the encryption (a sealed
// payload does not compress).

import type { ExtentIdentity } from './extent-codec.ts';

export const HEADER_BYTES = 64;
export const MAGIC = Buffer.from([0x89, 0x53, 0x33, 0x4e]);
export const OBJECT_VERSION = 1;
/** The part of the header the checksum or the AEAD covers: everything before the checksum. */
export const COVERED_BYTES = 32;
export const NONCE_BYTES = 12;
export const TAG_BYTES = 16;
/** The largest extent a header may announce (the largest --extent-size). */
export const MAX_EXTENT_BYTES = 32 * 1024 * 1024;

export const Flags = { compressed: 1, encrypted: 2 } as const;
const KNOWN_FLAGS = Flags.compressed | Flags.encrypted;

export const CIPHERS = ['aes-256-gcm', 'chacha20-poly1305'] as const;
export type Cipher = (typeof CIPHERS)[number];
/** The cipher byte: 0 none, then CIPHERS in order. */
export function cipherId(cipher: Cipher): number {
  return CIPHERS.indexOf(cipher) + 1;
}

export interface ObjectHeader {
  readonly version: number;
  readonly compressed: boolean;
  /** Undefined when the payload is not encrypted. */
  readonly cipher: Cipher | undefined;
  readonly extentLength: number;
  readonly payloadLength: number;
  readonly nonce: Buffer;
  /** The 32 checksum bytes (for an encrypted payload: the tag and 16 zeros). */
  readonly checksum: Buffer;
}

/** Writes the header's first 32 bytes (the covered part) into `body`; the checksum is left to the caller. */
export function writeHeader(body: Buffer, fields: { compressed: boolean; cipher: Cipher | undefined; extentLength: number; payloadLength: number; nonce?: Buffer }): void {
  MAGIC.copy(body, 0);
  body[4] = OBJECT_VERSION;
  body[5] = (fields.compressed ? Flags.compressed : 0) | (fields.cipher ? Flags.encrypted : 0);
  body[6] = fields.cipher ? cipherId(fields.cipher) : 0;
  body[7] = HEADER_BYTES;
  body.writeUInt32BE(fields.extentLength, 8);
  body.writeUInt32BE(fields.payloadLength, 12);
  if (fields.nonce) fields.nonce.copy(body, 16);
  else body.fill(0, 16, 28);
  body.fill(0, 28, HEADER_BYTES);
}

/**
 * The header of `body`, checked for consistency (not yet for authenticity: that is the
 * checksum's or the AEAD's job). Returns the reason instead when the body is not an object of
 * this format, is cut short, or its header contradicts itself or the body's length.
 */
export function readHeader(body: Buffer): ObjectHeader | string {
  if (body.length < HEADER_BYTES) return `the object has ${body.length} bytes, fewer than its ${HEADER_BYTES}-byte header`;
  if (!body.subarray(0, 4).equals(MAGIC)) return 'the object does not start with the s3nbd object magic';
  const version = body[4]!;
  if (version !== OBJECT_VERSION) return `object version ${version} is not supported (this build reads ${OBJECT_VERSION})`;
  const flags = body[5]!;
  if ((flags & ~KNOWN_FLAGS) !== 0) return `unknown flags 0x${flags.toString(16)}`;
  const cipherByte = body[6]!;
  const encrypted = (flags & Flags.encrypted) !== 0;
  if (encrypted !== (cipherByte !== 0) || cipherByte > CIPHERS.length) return `cipher ${cipherByte} does not match flags 0x${flags.toString(16)}`;
  if (body[7] !== HEADER_BYTES) return `header length ${body[7]} is not ${HEADER_BYTES}`;
  const extentLength = body.readUInt32BE(8);
  const payloadLength = body.readUInt32BE(12);
  if (extentLength === 0 || extentLength > MAX_EXTENT_BYTES) return `extent length ${extentLength} is out of range`;
  if (payloadLength !== body.length - HEADER_BYTES) return `payload length ${payloadLength} does not match the object's ${body.length - HEADER_BYTES} bytes after the header`;
  const compressed = (flags & Flags.compressed) !== 0;
  // A compressed payload is only ever stored when it is smaller than the extent.
  if (compressed ? payloadLength >= extentLength : payloadLength !== extentLength) {
    return `payload length ${payloadLength} is impossible for a${compressed ? ' compressed' : 'n uncompressed'} extent of ${extentLength} bytes`;
  }
  if (body.readUInt32BE(28) !== 0) return 'reserved header bytes are not zero';
  const nonce = body.subarray(16, 28);
  if (!encrypted && nonce.some((b) => b !== 0)) return 'an unencrypted object has a nonce';
  const checksum = body.subarray(COVERED_BYTES, HEADER_BYTES);
  if (encrypted && checksum.subarray(TAG_BYTES).some((b) => b !== 0)) return 'the bytes after the tag are not zero';
  return { version, compressed, cipher: encrypted ? CIPHERS[cipherByte - 1] : undefined, extentLength, payloadLength, nonce, checksum };
}

const IDENTITY_LABEL = Buffer.from('s3nbd extent\0');

/** The identity's bytes, as the checksum and the AEAD's associated data bind them. */
export function identityBytes(id: ExtentIdentity): Buffer {
  const volume = Buffer.from(id.volumeId, 'utf8');
  if (volume.length > 255) throw new RangeError('volume id longer than 255 bytes');
  const out = Buffer.alloc(IDENTITY_LABEL.length + 1 + volume.length + 16);
  let at = IDENTITY_LABEL.copy(out, 0);
  out[at++] = volume.length;
  at += volume.copy(out, at);
  out.writeBigUInt64BE(BigInt(id.index), at);
  out.writeBigUInt64BE(BigInt(id.generation), at + 8);
  return out;
}
