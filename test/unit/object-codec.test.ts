// The object format of format 2 (src/storage/format/): every codec setting round-trips; every
// single flipped byte of a body, a body cut short, a header whose lengths lie (even with a
// checksum made to match), and a body read under another identity are refused with EIO, never
// returned as data; extents that zstd does not shrink are stored raw.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { zstdCompress } from 'node:zlib';
import { checksumOf, ObjectCodec, sampleOf, worthCompressing } from '../../src/storage/format/object-codec.ts';
import { COVERED_BYTES, Flags, HEADER_BYTES, readHeader, writeHeader } from '../../src/storage/format/object-header.ts';
import { objectSettingsJson, parseCompression, parseObjectSettings } from '../../src/storage/format/object-settings.ts';
import type { ExtentIdentity } from '../../src/storage/format/extent-codec.ts';
import { joinedBody } from '../../src/storage/objects/object-store.ts';
import { StorageError } from '../../src/storage/storage-error.ts';

const E = 4096;
const id: ExtentIdentity = { volumeId: '0b5c7a8e-1d2f-4e3a-9b8c-7d6e5f4a3b2c', index: 7, generation: 1 };
const key = randomBytes(32);

const CODECS: Record<string, ObjectCodec> = {
  'checksum only': new ObjectCodec({ compressionLevel: undefined }),
  'zstd:1': new ObjectCodec({ compressionLevel: 1 }),
  'aes-256-gcm': new ObjectCodec({ compressionLevel: undefined, encryption: { cipher: 'aes-256-gcm', key } }),
  'chacha20-poly1305': new ObjectCodec({ compressionLevel: undefined, encryption: { cipher: 'chacha20-poly1305', key } }),
  'zstd:3 + aes-256-gcm': new ObjectCodec({ compressionLevel: 3, encryption: { cipher: 'aes-256-gcm', key } }),
  'zstd:3 + chacha20-poly1305': new ObjectCodec({ compressionLevel: 3, encryption: { cipher: 'chacha20-poly1305', key } }),
};

/** Text that compresses, and random bytes that do not. */
function extents(): { text: Buffer; random: Buffer; zeros: Buffer } {
  const text = Buffer.alloc(E, 'the quick brown fox jumps over the lazy dog; ');
  return { text, random: randomBytes(E), zeros: Buffer.alloc(E) };
}

/** The body the codec makes, joined as a store would keep it. */
async function encoded(codec: ObjectCodec, extent: Buffer): Promise<Buffer> {
  return joinedBody(await codec.encode(id, extent));
}

const isEio = (err: unknown): boolean => err instanceof StorageError && err.errno === 'EIO';

describe('object codec', () => {
  for (const [name, codec] of Object.entries(CODECS)) {
    it(`${name}: round-trips, and refuses every flipped byte, a cut body and another identity`, async () => {
      for (const [kind, extent] of Object.entries(extents())) {
        const body = await encoded(codec, extent);
        assert.ok(body.length <= codec.maxBodyBytes(E), `${kind}: within maxBodyBytes`);
        const decoded = await codec.decode(id, body);
        assert.deepEqual(decoded, extent, `${kind}: round trip`);
        decoded.fill(0xee); // the caller owns what decode returns: the body stays intact
        assert.deepEqual(await codec.decode(id, body), extent, `${kind}: the body is not a view of the result`);
        const header = readHeader(body);
        assert.ok(typeof header !== 'string', typeof header === 'string' ? header : '');
        assert.equal(header.cipher, codec.cipher);
        assert.equal(header.compressed, codec.compressionLevel !== undefined && kind !== 'random', `${kind}: compressed unless random`);
        if (codec.cipher) assert.equal(body.indexOf(extent.subarray(0, 32)), -1, `${kind}: no plaintext in the body`);
        for (let i = 0; i < body.length; i++) {
          const bad = Buffer.from(body);
          bad[i]! ^= 1 << (i % 8);
          await assert.rejects(codec.decode(id, bad), isEio, `${kind}: byte ${i} flipped`);
        }
        for (const length of [0, 1, HEADER_BYTES - 1, HEADER_BYTES, body.length - 1]) {
          await assert.rejects(codec.decode(id, body.subarray(0, length)), isEio, `${kind}: cut to ${length} bytes`);
        }
        await assert.rejects(codec.decode(id, Buffer.concat([body, Buffer.alloc(1)])), isEio, `${kind}: a byte added`);
        for (const other of [{ ...id, index: 8 }, { ...id, generation: 2 }, { ...id, volumeId: 'another' }]) {
          await assert.rejects(codec.decode(other, body), isEio, `${kind}: read as ${JSON.stringify(other)}`);
        }
      }
    });
  }

  it('stores an extent raw when zstd does not shrink it by 1/32', async () => {
    const codec = CODECS['zstd:1']!;
    const random = randomBytes(E);
    const body = await encoded(codec, random);
    assert.equal(body.length, HEADER_BYTES + E);
    assert.equal(body[5]! & Flags.compressed, 0);
    assert.deepEqual(body.subarray(HEADER_BYTES), random, 'stored as it is');
    const text = Buffer.alloc(E, 'abc');
    const small = await encoded(codec, text);
    assert.ok(small.length < 200, `a repetitive extent shrinks (${small.length} bytes)`);
    assert.equal(worthCompressing(1024, 992), true);
    assert.equal(worthCompressing(1024, 993), false);
  });

  it('returns a view of a fresh body, and a copy of one that may be shared', async () => {
    const codec = CODECS['checksum only']!;
    const extent = randomBytes(E);
    const body = await encoded(codec, extent);
    const view = await codec.decode(id, body, true);
    assert.deepEqual(view, extent);
    assert.equal(view.buffer, body.buffer, 'a fresh body: no copy');
    const copy = await codec.decode(id, body);
    copy.fill(0);
    assert.deepEqual(await codec.decode(id, body), extent, 'a shared body is never changed through the extent');
  });

  it('hands the store the header and the payload as parts: an extent stored raw is not copied', async () => {
    for (const [name, codec] of Object.entries(CODECS)) {
      const extent = randomBytes(E);
      const parts = await codec.encode(id, extent);
      assert.ok(!Buffer.isBuffer(parts), `${name}: parts`);
      assert.equal(parts[0]!.length, HEADER_BYTES, `${name}: the header first`);
      if (!codec.cipher) assert.equal(parts[1], extent, `${name}: the extent itself follows`);
      assert.deepEqual(await codec.decode(id, Buffer.concat(parts)), extent, `${name}: joined, they decode`);
    }
  });

  it('checks a large fresh body on the hashing thread: the extent comes back, and a flipped byte anywhere is refused', async () => {
    const codec = CODECS['checksum only']!;
    const extent = randomBytes(1024 * 1024);
    const body = await encoded(codec, extent);
    assert.equal(body.length, HEADER_BYTES + extent.length);
    const fresh = Buffer.from(body);
    assert.deepEqual(await codec.decode(id, fresh, true), extent);
    assert.equal(fresh.length, 0, 'checked on the hashing thread: its memory moved');
    for (const at of [0, COVERED_BYTES, HEADER_BYTES, body.length - 1]) {
      const bad = Buffer.from(body);
      bad[at]! ^= 0x10;
      await assert.rejects(codec.decode(id, bad, true), isEio, `byte ${at} flipped`);
    }
    await assert.rejects(codec.decode({ ...id, generation: 9 }, Buffer.from(body), true), isEio, 'another identity');
  });

  it('judges an extent by a sample before compressing all of it', async () => {
    const codec = CODECS['zstd:1']!;
    const M = 2 ** 20;
    const compressedFlag = async (extent: Buffer): Promise<boolean> => {
      const body = await encoded(codec, extent);
      assert.deepEqual(await codec.decode(id, body), extent, 'reads back');
      return (body[5]! & Flags.compressed) !== 0;
    };
    // Text with random bytes where the samples are taken (8 pieces of 4 KiB, every 128 KiB):
    // the sample does not shrink, so the extent is stored raw without a try.
    const textAroundRandom = Buffer.alloc(M, 'the quick brown fox ');
    for (let i = 0; i < 8; i++) randomBytes(4096).copy(textAroundRandom, i * (M / 8));
    assert.equal(await compressedFlag(textAroundRandom), false, 'judged by the sample alone');
    // Half random, half text: the sample shrinks, so the whole extent is compressed.
    const halfText = Buffer.concat([randomBytes(M / 2), Buffer.alloc(M / 2, 'the quick brown fox ')]);
    assert.equal(await compressedFlag(halfText), true, 'compressed when the sample shrinks');
    assert.equal(await compressedFlag(randomBytes(M)), false, 'random: raw');
    assert.equal(sampleOf(Buffer.alloc(64 * 1024)), undefined, 'an extent too small to sample is compressed and judged whole');
  });

  it('an encrypted volume refuses an unencrypted object and one of another cipher or key, even with a valid checksum', async () => {
    const extent = extents().text;
    const aes = CODECS['aes-256-gcm']!;
    for (const other of [CODECS['checksum only']!, CODECS['zstd:1']!, CODECS['chacha20-poly1305']!,
      new ObjectCodec({ compressionLevel: undefined, encryption: { cipher: 'aes-256-gcm', key: randomBytes(32) } })]) {
      await assert.rejects(aes.decode(id, await encoded(other, extent)), isEio);
    }
    await assert.rejects(CODECS['checksum only']!.decode(id, await encoded(aes, extent)), isEio, 'and the other way round');
    await assert.rejects(aes.decode({ ...id, generation: 0 }, extent), isEio, 'no format 1 object in an encrypted volume');
    assert.equal(await CODECS['checksum only']!.decode({ ...id, generation: 0 }, extent), extent, 'format 1 objects are raw');
  });

  it('refuses headers whose lengths lie, even when the checksum is made to match', async () => {
    const codec = CODECS['zstd:1']!;
    /** An unencrypted body with any header fields, and a checksum that matches them. */
    const forge = (fields: { compressed: boolean; extentLength: number; payloadLength?: number }, payload: Buffer): Buffer => {
      const body = Buffer.alloc(HEADER_BYTES + payload.length);
      writeHeader(body, { cipher: undefined, payloadLength: payload.length, ...fields });
      payload.copy(body, HEADER_BYTES);
      checksumOf(body, id).copy(body, COVERED_BYTES);
      return body;
    };
    const honest = forge({ compressed: false, extentLength: E }, extents().random);
    assert.equal((await codec.decode(id, honest)).length, E, 'the forger works');
    const big = Buffer.alloc(1 << 20, 'abc');
    const bomb = await promisify(zstdCompress)(big);
    // Announces 4 KiB, decompresses to 1 MiB: refused without making the 1 MiB.
    await assert.rejects(codec.decode(id, forge({ compressed: true, extentLength: E }, bomb)), isEio);
    // Announces 2 MiB, decompresses to 1 MiB.
    await assert.rejects(codec.decode(id, forge({ compressed: true, extentLength: 2 << 20 }, bomb)), isEio);
    // Lengths that do not add up, or out of range.
    await assert.rejects(codec.decode(id, forge({ compressed: false, extentLength: E, payloadLength: E + 1 }, randomBytes(E))), isEio);
    await assert.rejects(codec.decode(id, forge({ compressed: false, extentLength: E - 1 }, randomBytes(E))), isEio);
    await assert.rejects(codec.decode(id, forge({ compressed: true, extentLength: 100 }, randomBytes(200))), isEio);
    await assert.rejects(codec.decode(id, forge({ compressed: false, extentLength: 0 }, Buffer.alloc(0))), isEio);
    await assert.rejects(codec.decode(id, forge({ compressed: true, extentLength: 64 << 20 }, bomb)), isEio);
    // Garbage that claims to be compressed.
    await assert.rejects(codec.decode(id, forge({ compressed: true, extentLength: E }, randomBytes(100))), isEio);
  });
});

describe('object settings in the volume metadata', () => {
  const good = {
    checksum: 'sha256', compression: 'zstd:3',
    encryption: { cipher: 'chacha20-poly1305', kek: { kind: 'scrypt', salt: randomBytes(16).toString('base64'), N: 1024, r: 8, p: 1 }, wrappedKey: randomBytes(60).toString('base64') },
  };

  it('round-trips, and says what is wrong with settings it cannot use', () => {
    assert.deepEqual(objectSettingsJson(parseObjectSettings(good)), good);
    const plain = { checksum: 'sha256', compression: 'off', encryption: 'off' };
    assert.deepEqual(objectSettingsJson(parseObjectSettings(plain)), plain);
    const bad: Array<[unknown, RegExp]> = [
      [null, /not an object/],
      [{ ...good, checksum: 'md5' }, /checksum/],
      [{ ...good, compression: 'zstd:99' }, /compression/],
      [{ ...good, compression: 'zstd' }, /compression/], // stored with its level, always
      [{ ...good, encryption: 'on' }, /encryption/],
      [{ ...good, encryption: { ...good.encryption, cipher: 'aes-128-gcm' } }, /cipher/],
      [{ ...good, encryption: { ...good.encryption, wrappedKey: 'not base64!' } }, /wrappedKey/],
      [{ ...good, encryption: { ...good.encryption, kek: { kind: 'pbkdf2' } } }, /kind/],
      [{ ...good, encryption: { ...good.encryption, kek: { ...good.encryption.kek, N: 2 ** 30 } } }, /out of range/],
      [{ ...good, encryption: { ...good.encryption, kek: { ...good.encryption.kek, N: 1000 } } }, /out of range/],
      [{ ...good, encryption: { ...good.encryption, kek: { ...good.encryption.kek, salt: 'c2hvcnQ=' } } }, /salt/],
    ];
    for (const [value, reason] of bad) assert.throws(() => parseObjectSettings(value), reason, JSON.stringify(value));
  });

  it('parses --compression', () => {
    assert.deepEqual(parseCompression('zstd'), { kind: 'zstd', level: 1 });
    assert.deepEqual(parseCompression('zstd:19'), { kind: 'zstd', level: 19 });
    assert.deepEqual(parseCompression('off'), { kind: 'off' });
    for (const text of ['zstd:0', 'zstd:20', 'gzip', 'zstd:', 'ZSTD', '']) assert.equal(parseCompression(text), undefined, text);
  });
});
