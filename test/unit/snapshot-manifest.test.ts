// The snapshot manifest (src/storage/snapshots/manifest.ts): what is written is read back
// exactly, small; a damaged, cut or forged body is refused, never read in part; names that
// could not be a key or an export name are refused with one line and a code.

import assert from 'node:assert/strict';
import { createHash, randomInt } from 'node:crypto';
import { describe, it } from 'node:test';
import { SEQUENCE_SPAN } from '../../src/storage/extents/generations.ts';
import {
  type Manifest, ManifestError, type SnapshotReference, checkSnapshotName, decodeManifest, encodeManifest, manifestKey, snapshotNameOf,
} from '../../src/storage/snapshots/manifest.ts';
import { UserError } from '../../src/errors.ts';

const E = 1 << 20;

function manifest(references: SnapshotReference[], extra: Partial<Manifest> = {}): Manifest {
  return {
    name: 'daily-1', volumeId: '6a0c1f8e-0000-4000-8000-000000000001', createdAt: '2026-12-06T12:00:00.000Z',
    size: 100 * 2 ** 30, extentSize: E, sources: [], references, ...extra,
  };
}

/** What a volume written by a few writers looks like: most extents of one epoch, in upload order. */
function volumeLike(count: number, seed = 1): SnapshotReference[] {
  let x = seed;
  const random = (): number => (x = (x * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const refs: SnapshotReference[] = [];
  let index = 0;
  for (let i = 0; i < count; i++) {
    index += random() < 0.9 ? 1 : 1 + Math.floor(random() * 50);
    const epoch = random() < 0.8 ? 7 : 1 + Math.floor(random() * 6);
    refs.push({ index, generation: epoch * SEQUENCE_SPAN + 1 + i + Math.floor(random() * 3), source: 0 });
  }
  return refs;
}

describe('snapshot manifest', () => {
  it('reads back exactly what it wrote: format 1 objects (generation 0), large epochs, the last extent of a 1 PiB volume', () => {
    const refs: SnapshotReference[] = [
      { index: 0, generation: 0, source: 0 },
      { index: 1, generation: 2 ** 21 * SEQUENCE_SPAN - 1 - SEQUENCE_SPAN, source: 0 },
      { index: 5, generation: SEQUENCE_SPAN + 1, source: 0 },
      { index: 2 ** 38 - 1, generation: 3 * SEQUENCE_SPAN + 2 ** 32 - 1, source: 0 },
    ];
    const m = manifest(refs, { size: 2 ** 50, extentSize: 4096 });
    assert.deepEqual(decodeManifest(encodeManifest(m)), m);
    assert.deepEqual(decodeManifest(encodeManifest(manifest([]))), manifest([]), 'an empty volume');
  });

  it('keeps 100,000 references in a small body, written in order or at random', () => {
    const sequential = manifest(volumeLike(100_000), { size: 2 ** 40 });
    const inOrder = encodeManifest(sequential);
    assert.deepEqual(decodeManifest(inOrder), sequential);
    // Written at random: each extent's sequence unrelated to its neighbours' (the worst case).
    const shuffled = sequential.references.map((r) => ({ ...r, generation: Math.floor(r.generation / SEQUENCE_SPAN) * SEQUENCE_SPAN + randomInt(2 ** 32) }));
    const atRandom = encodeManifest(manifest(shuffled, { size: 2 ** 40 }));
    assert.deepEqual(decodeManifest(atRandom).references, shuffled);
    // 14 bytes a reference, stored plainly.
    assert.ok(inOrder.length < 100_000 && atRandom.length < 1_000_000, `${inOrder.length} and ${atRandom.length} bytes for 100,000 references`);
    console.log(`# manifest of 100,000 references: ${inOrder.length} bytes written in order, ${atRandom.length} written at random`);
  });

  it('refuses every flipped byte and every cut', () => {
    const body = encodeManifest(manifest(volumeLike(500)));
    for (let at = 0; at < body.length; at += 7) {
      const bad = Buffer.from(body);
      bad[at]! ^= 0x10;
      assert.throws(() => decodeManifest(bad), ManifestError, `byte ${at} flipped`);
    }
    for (let cut = 0; cut < body.length; cut += 5) assert.throws(() => decodeManifest(body.subarray(0, cut)), ManifestError, `cut at ${cut}`);
    assert.throws(() => decodeManifest(Buffer.concat([body, Buffer.alloc(1)])), ManifestError, 'a byte more');
  });

  it('refuses a body whose checksum was made to match but whose content is not a manifest of this version', () => {
    const body = encodeManifest(manifest(volumeLike(10)));
    /** The body with its header changed by `change`, and a checksum that matches. */
    const forged = (change: (header: Record<string, unknown>) => void): Buffer => {
      const length = body.readUInt32BE(8);
      const header = JSON.parse(body.subarray(12, 12 + length).toString()) as Record<string, unknown>;
      change(header);
      const json = Buffer.from(JSON.stringify(header));
      const h = Buffer.alloc(4);
      h.writeUInt32BE(json.length);
      const unsummed = Buffer.concat([body.subarray(0, 8), h, json, body.subarray(12 + length, body.length - 32)]);
      return Buffer.concat([unsummed, createHash('sha256').update(unsummed).digest()]);
    };
    assert.doesNotThrow(() => decodeManifest(forged(() => undefined)), 'the forging itself is sound');
    assert.throws(() => decodeManifest(forged((h) => { h.version = 9; })), /version 9/);
    assert.throws(() => decodeManifest(forged((h) => { h.format = 'other'; })), ManifestError);
    assert.throws(() => decodeManifest(forged((h) => { h.count = 11; })), ManifestError);
    assert.throws(() => decodeManifest(forged((h) => { h.count = 9; })), ManifestError);
    assert.throws(() => decodeManifest(forged((h) => { h.count = 0; })), ManifestError);
    assert.throws(() => decodeManifest(forged((h) => { h.size = E; })), /beyond/);
    assert.throws(() => decodeManifest(forged((h) => { delete h.volumeId; })), /lacks/);
  });

  it('refuses to write references out of order, twice, or of an unknown source', () => {
    assert.throws(() => encodeManifest(manifest([{ index: 2, generation: 1, source: 0 }, { index: 1, generation: 1, source: 0 }])), /ascend/);
    assert.throws(() => encodeManifest(manifest([{ index: 2, generation: 1, source: 0 }, { index: 2, generation: 2, source: 0 }])), /ascend/);
    assert.throws(() => encodeManifest(manifest([{ index: 2, generation: 1, source: 1 }])), /source/);
    const clone = manifest([{ index: 2, generation: 1, source: 1 }], { sources: [{ volumeId: 'origin' }] });
    assert.deepEqual(decodeManifest(encodeManifest(clone)), clone, 'room for a clone\'s references to its origin');
  });

  it('takes names that can be a key and an export name, and refuses the others with S3NBD_BAD_SNAPSHOT_NAME', () => {
    for (const good of ['a', 'daily-2026-12-06', 'v1.2_final', 'X'.repeat(100), '0']) {
      assert.equal(checkSnapshotName(good), good);
      assert.equal(snapshotNameOf(manifestKey(good)), good);
    }
    for (const bad of ['', '.', '..', '.hidden', '-x', '_x', 'a/b', 'a b', 'a@b', 'é', 'X'.repeat(101), '.tmp-lock']) {
      assert.throws(() => checkSnapshotName(bad), (err: unknown) => err instanceof UserError && err.code === 'S3NBD_BAD_SNAPSHOT_NAME', JSON.stringify(bad));
    }
    assert.equal(snapshotNameOf('snapshots/.tmp-1234'), undefined, 'the directory store\'s temporary files are no snapshots');
  });
});
