// The codec of format 2 (object-header.ts has the byte layout): every object gets the header
// and its checksum; the payload is compressed with zstd when the volume says so and that
// saves something, and sealed with the volume's data key when the volume is encrypted.
//
// encode: compress (zlib's zstd, on the thread pool: the event loop goes on serving; an extent
//         whose sample does not shrink is not tried: sampleOf()), then
//         seal with a random nonce (AEAD, the header's first 32 bytes and the identity as
//         associated data) or hash (SHA-256 over the same bytes and the payload).
// decode: check the header, then the tag or the hash, and only then decompress, into at most
//         the extent's announced length: a body that fails any step is a StorageError EIO.
//
// An encrypted volume refuses unencrypted objects and objects of another cipher, even with a
// correct SHA-256 (anyone can compute one): only the key's holder can write what it serves.

import {
  type CipherChaCha20Poly1305, type CipherGCM, createCipheriv, createDecipheriv, type DecipherChaCha20Poly1305, type DecipherGCM,
  randomBytes, timingSafeEqual,
} from 'node:crypto';
import { promisify } from 'node:util';
import { constants, zstdCompress, zstdCompressSync, zstdDecompress } from 'node:zlib';
import { StorageError } from '../storage-error.ts';
import type { ExtentCodec, ExtentIdentity } from './extent-codec.ts';
import { type HashedParts, hashHere, hashOf, hashOffThread } from './off-thread-hash.ts';
import {
  type Cipher, COVERED_BYTES, HEADER_BYTES, identityBytes, NONCE_BYTES, readHeader, TAG_BYTES, writeHeader,
} from './object-header.ts';

const compress = promisify(zstdCompress);
const decompress = promisify(zstdDecompress);

export const DATA_KEY_BYTES = 32;
export const MIN_ZSTD_LEVEL = 1;
export const MAX_ZSTD_LEVEL = 19;

export interface CodecSettings {
  /** The zstd level, or undefined: extents are stored uncompressed. */
  readonly compressionLevel: number | undefined;
  /** The volume's cipher and data key, or undefined: not encrypted. */
  readonly encryption?: { readonly cipher: Cipher; readonly key: Buffer } | undefined;
}

/**
 * Stored compressed only when that saves at least 1/32 of the extent: for less, every read
 * would pay for the decompression to save next to nothing (an extent of photos and archives
 * shrinks by a fraction of a percent, if at all).
 */
export function worthCompressing(extentLength: number, compressedLength: number): boolean {
  return compressedLength <= extentLength - Math.ceil(extentLength / 32);
}

/** Samples compressed to tell whether an extent is worth compressing at all (see sampleOf). */
const SAMPLES = 8;
const SAMPLE_BYTES = 4096;

/**
 * SAMPLES pieces of SAMPLE_BYTES spread evenly over the extent, one after another, or
 * undefined for an extent too small to sample. Compressing an extent that does not shrink
 * (random, already compressed or encrypted data) costs zstd about five times what its SHA-256
 * does; compressing this 32 KiB first costs 1/32 of that, and an extent whose sample does not
 * shrink by 1/32 is stored raw without trying the rest (the early abort of ZFS and btrfs).
 * Repetition farther apart than a sample is missed: such an extent is stored raw.
 */
export function sampleOf(extent: Buffer): Buffer | undefined {
  if (extent.length < 4 * SAMPLES * SAMPLE_BYTES) return undefined;
  const sample = Buffer.allocUnsafe(SAMPLES * SAMPLE_BYTES);
  const stride = Math.floor(extent.length / SAMPLES);
  for (let i = 0; i < SAMPLES; i++) extent.copy(sample, i * SAMPLE_BYTES, i * stride, i * stride + SAMPLE_BYTES);
  return sample;
}

function corrupt(reason: string): StorageError {
  return new StorageError('EIO', reason);
}

export class ObjectCodec implements ExtentCodec {
  readonly compressionLevel: number | undefined;
  readonly cipher: Cipher | undefined;
  // A private field: never enumerated, so never logged or serialised by accident.
  readonly #key: Buffer | undefined;

  constructor(settings: CodecSettings) {
    const level = settings.compressionLevel;
    if (level !== undefined && (!Number.isInteger(level) || level < MIN_ZSTD_LEVEL || level > MAX_ZSTD_LEVEL)) {
      throw new RangeError(`zstd level ${level} is not from ${MIN_ZSTD_LEVEL} to ${MAX_ZSTD_LEVEL}`);
    }
    if (settings.encryption && settings.encryption.key.length !== DATA_KEY_BYTES) throw new RangeError(`a data key has ${DATA_KEY_BYTES} bytes`);
    this.compressionLevel = level;
    this.cipher = settings.encryption?.cipher;
    this.#key = settings.encryption ? Buffer.from(settings.encryption.key) : undefined;
  }

  maxBodyBytes(extentSize: number): number {
    return HEADER_BYTES + extentSize;
  }

  async encode(id: ExtentIdentity, extent: Buffer): Promise<readonly Buffer[]> {
    if (id.generation < 1) throw new RangeError('format 2 objects have a generation of at least 1');
    let payload = extent;
    let compressed = false;
    if (this.compressionLevel !== undefined) {
      const params = { params: { [constants.ZSTD_c_compressionLevel]: this.compressionLevel } };
      const sample = sampleOf(extent);
      // On the event loop: about 100 µs of CPU, a quarter of what the thread pool's stream
      // machinery costs for a buffer this small.
      const promising = !sample || worthCompressing(sample.length, zstdCompressSync(sample, params).length);
      const z = promising ? await compress(extent, params) : undefined;
      if (z && worthCompressing(extent.length, z.length)) {
        payload = z;
        compressed = true;
      }
    }
    // The header and the payload go to the store as two parts: joining them was a copy of
    // every extent uploaded (ObjectBody).
    const header = Buffer.allocUnsafe(HEADER_BYTES);
    const nonce = this.cipher ? randomBytes(NONCE_BYTES) : undefined;
    writeHeader(header, { compressed, cipher: this.cipher, extentLength: extent.length, payloadLength: payload.length, nonce });
    const covered = header.subarray(0, COVERED_BYTES);
    if (this.cipher && nonce) {
      const cipher = sealer(this.cipher, this.#key!, nonce);
      cipher.setAAD(Buffer.concat([covered, identityBytes(id)]), { plaintextLength: payload.length });
      const sealed = cipher.update(payload);
      const final = cipher.final();
      cipher.getAuthTag().copy(header, COVERED_BYTES);
      header.fill(0, COVERED_BYTES + TAG_BYTES, HEADER_BYTES);
      return final.length > 0 ? [header, sealed, final] : [header, sealed];
    }
    // Hashed here, not on the hashing thread: sequential writes keep both cores busy, and
    // there it bought nothing (bench/results/cold-read-19.md).
    hashOf(covered, identityBytes(id), payload).copy(header, COVERED_BYTES);
    return [header, payload];
  }

  async decode(id: ExtentIdentity, body: Buffer, fresh = false): Promise<Buffer> {
    if (id.generation === 0) {
      // A format 1 object (raw bytes, no header): only a volume upgraded from format 1 has
      // them, and such a volume is never encrypted.
      if (this.cipher) throw corrupt('an object without a header (format 1) in an encrypted volume');
      return body;
    }
    const header = readHeader(body);
    if (typeof header === 'string') throw corrupt(header);
    if (header.cipher !== this.cipher) {
      throw corrupt(this.cipher ? `the object is ${header.cipher ? `sealed with ${header.cipher}` : 'not encrypted'}, but the volume is encrypted with ${this.cipher}`
        : 'the object is encrypted, but the volume is not');
    }
    const covered = body.subarray(0, COVERED_BYTES);
    const stored = body.subarray(HEADER_BYTES);
    let payload: Buffer;
    if (this.cipher) {
      const decipher = opener(this.cipher, this.#key!, header.nonce);
      decipher.setAAD(Buffer.concat([covered, identityBytes(id)]), { plaintextLength: stored.length });
      decipher.setAuthTag(header.checksum.subarray(0, TAG_BYTES));
      const opened = decipher.update(stored);
      try {
        decipher.final();
      } catch {
        throw corrupt('the object fails authentication: altered, another extent\'s or generation\'s object, or sealed with another key');
      }
      payload = opened;
    } else {
      // A body that is the caller's alone may go to the hashing thread and back (the header's
      // views would be empty meanwhile: the checksum is copied first).
      const expected = Buffer.from(header.checksum);
      const hashed = fresh ? await hashOffThread(body, checksumParts(id)) : { digest: checksumOf(body, id), body };
      if (!timingSafeEqual(hashed.digest, expected)) {
        throw corrupt('checksum mismatch: the object is altered, or is another extent\'s or generation\'s object');
      }
      payload = hashed.body.subarray(HEADER_BYTES);
    }
    // The caller owns the extent (it may patch it in place): a view of the body only when the
    // body is the caller's alone, else a copy (the memory store shares its buffers). The copy
    // into memory never touched before was an eighth of the CPU of a cold read.
    if (!header.compressed) return this.cipher || fresh ? payload : Buffer.from(payload);
    let extent: Buffer;
    try {
      extent = await decompress(payload, { maxOutputLength: header.extentLength });
    } catch (err) {
      throw corrupt(`the compressed payload does not decompress to ${header.extentLength} bytes (${(err as Error).message})`);
    }
    if (extent.length !== header.extentLength) throw corrupt(`the payload decompresses to ${extent.length} bytes, not ${header.extentLength}`);
    return extent;
  }
}

// Two calls, as node:crypto's types have one overload per family of AEAD.
function sealer(cipher: Cipher, key: Buffer, nonce: Buffer): CipherGCM | CipherChaCha20Poly1305 {
  return cipher === 'aes-256-gcm' ? createCipheriv(cipher, key, nonce, { authTagLength: TAG_BYTES })
    : createCipheriv(cipher, key, nonce, { authTagLength: TAG_BYTES });
}

function opener(cipher: Cipher, key: Buffer, nonce: Buffer): DecipherGCM | DecipherChaCha20Poly1305 {
  return cipher === 'aes-256-gcm' ? createDecipheriv(cipher, key, nonce, { authTagLength: TAG_BYTES })
    : createDecipheriv(cipher, key, nonce, { authTagLength: TAG_BYTES });
}

/** What an unencrypted object's SHA-256 covers: the covered header bytes, the identity and the payload. */
function checksumParts(id: ExtentIdentity): HashedParts {
  return { coveredEnd: COVERED_BYTES, identity: identityBytes(id), payloadStart: HEADER_BYTES };
}

/** The SHA-256 of an unencrypted object's body (header and payload in place), on this thread. */
export function checksumOf(body: Buffer, id: ExtentIdentity): Buffer {
  return hashHere(body, checksumParts(id));
}
