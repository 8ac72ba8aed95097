// A snapshot's manifest (docs/format.md): the one object that says which extent objects the
// snapshot holds. Its key is
//
//   snapshots/<name>       <name>: 1 to 100 of [A-Za-z0-9._-], starting with a letter or digit
//
// written once with a conditional PUT (If-None-Match: *), so a name is taken once, and never
// changed; deleting the snapshot deletes it. A PUT is atomic (S3's, and the directory store's
// rename), so a manifest is whole or absent. The body, big-endian:
//
//   offset  bytes  what
//   0       8      magic "s3nbdsnp"
//   8       4      H, the length of the header
//   12      H      header, UTF-8 JSON: {"format":"s3nbd-snapshot","version":1,"name":"…",
//                  "volumeId":"…","createdAt":"<ISO 8601>","size":<bytes>,"extentSize":<bytes>,
//                  "count":<references>,"sources":[…]}
//   12+H    R      the references, raw DEFLATE (RFC 1951) of four columns of `count` unsigned
//                  LEB128 varints each, in this order:
//                    index     extent number minus the previous reference's (the first: itself);
//                              references are in ascending extent order, one per extent
//                    epoch     zigzag(epoch minus the previous reference's epoch)
//                    sequence  zigzag(sequence minus the previous reference's sequence)
//                    source    0: an object of this volume; i ≥ 1: of header.sources[i - 1]
//   12+H+R  32     SHA-256 of every byte before it
//
// A reference names the object extents/<hh>/<index>.<generation> (extent-keys.ts), generation
// = epoch × 2^32 + sequence (generations.ts). Extents without a reference read as zeros.
// `sources` is empty but for a clone's snapshots (clone.ts), which may name objects of its
// origins: each source {"store":"<URL>","volumeId":"…","snapshot":"…"}, source i ≥ 1 being
// sources[i - 1]. A reader meets a source it has not opened as an error, never as zeros.
//
// Deltas keep the columns small (consecutive extents written in one run differ by 1 in index
// and sequence) and DEFLATE takes the rest: 100,000 references make a body of 6 KB (extents
// written in order) to 460 KB (written at random), one PUT (limit: MAX_OBJECT_BYTES, about 7
// million references written at random).

import { createHash } from 'node:crypto';
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { Errors } from '../../errors.ts';
import { MAX_OBJECT_BYTES } from '../objects/object-store.ts';
import { SEQUENCE_SPAN } from '../extents/generations.ts';

export const SNAPSHOT_PREFIX = 'snapshots/';
export const MANIFEST_FORMAT = 's3nbd-snapshot';
export const MANIFEST_VERSION = 1;
const MAGIC = Buffer.from('s3nbdsnp');
const CHECKSUM_BYTES = 32;
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;
/** Values stay below 2^42 (extent numbers below 2^38, zigzag deltas below 2^34): 6 bytes of 7 bits. */
const MAX_VARINT_BYTES = 6;

/** One extent object the snapshot holds. */
export interface SnapshotReference {
  readonly index: number;
  readonly generation: number;
  /** 0: this volume's object; i: header.sources[i - 1]'s (a clone's origins). */
  readonly source: number;
}

export interface ManifestHeader {
  readonly name: string;
  readonly volumeId: string;
  readonly createdAt: string;
  readonly size: number;
  readonly extentSize: number;
  /** Other volumes whose objects references may name (a clone's origins, clone.ts); else empty. */
  readonly sources: readonly unknown[];
}

export interface Manifest extends ManifestHeader {
  /** Ascending by index, one per extent. */
  readonly references: readonly SnapshotReference[];
}

/** Throws S3NBD_BAD_SNAPSHOT_NAME unless `name` can name a snapshot (and be part of a key and an export name). */
export function checkSnapshotName(name: string): string {
  if (!NAME.test(name)) throw Errors.badSnapshotName(name);
  return name;
}

export function manifestKey(name: string): string {
  return `${SNAPSHOT_PREFIX}${checkSnapshotName(name)}`;
}

/** The snapshot a key names, or undefined for keys under snapshots/ that are not manifests. */
export function snapshotNameOf(key: string): string | undefined {
  if (!key.startsWith(SNAPSHOT_PREFIX)) return undefined;
  const name = key.slice(SNAPSHOT_PREFIX.length);
  return NAME.test(name) ? name : undefined;
}

/** A manifest that cannot be read: damaged, cut short, or not a manifest at all. */
export class ManifestError extends Error {
  override readonly name = 'ManifestError';
}

export function encodeManifest(manifest: Manifest): Buffer {
  checkSnapshotName(manifest.name);
  const refs = manifest.references;
  const header = Buffer.from(JSON.stringify({
    format: MANIFEST_FORMAT, version: MANIFEST_VERSION, name: manifest.name, volumeId: manifest.volumeId,
    createdAt: manifest.createdAt, size: manifest.size, extentSize: manifest.extentSize, count: refs.length, sources: manifest.sources,
  }));
  const columns = new VarintWriter(refs.length * 4 * MAX_VARINT_BYTES);
  let previous = { index: 0, epoch: 0, sequence: 0 };
  const split = refs.map((r, i) => {
    if (!Number.isSafeInteger(r.index) || r.index < (i === 0 ? 0 : refs[i - 1]!.index + 1)) throw new Error(`reference ${i}: extents must ascend, one reference each`);
    if (!Number.isSafeInteger(r.generation) || r.generation < 0) throw new Error(`reference ${i}: bad generation ${r.generation}`);
    if (r.source < 0 || r.source > manifest.sources.length) throw new Error(`reference ${i}: unknown source ${r.source}`);
    return { index: r.index, epoch: Math.floor(r.generation / SEQUENCE_SPAN), sequence: r.generation % SEQUENCE_SPAN };
  });
  for (const s of split) {
    columns.write(s.index - previous.index);
    previous = { ...previous, index: s.index };
  }
  for (const s of split) {
    columns.write(zigzag(s.epoch - previous.epoch));
    previous = { ...previous, epoch: s.epoch };
  }
  for (const s of split) {
    columns.write(zigzag(s.sequence - previous.sequence));
    previous = { ...previous, sequence: s.sequence };
  }
  for (const r of refs) columns.write(r.source);
  const length = Buffer.alloc(4);
  length.writeUInt32BE(header.length);
  const unsummed = Buffer.concat([MAGIC, length, header, deflateRawSync(columns.bytes())]);
  const body = Buffer.concat([unsummed, sha256(unsummed)]);
  if (body.length > MAX_OBJECT_BYTES) throw new Error(`the manifest would be ${body.length} bytes, more than the ${MAX_OBJECT_BYTES} an object may have`);
  return body;
}

/** The manifest a body holds; throws ManifestError when it is damaged or not one. */
export function decodeManifest(body: Buffer): Manifest {
  if (body.length < MAGIC.length + 4 + CHECKSUM_BYTES || !body.subarray(0, MAGIC.length).equals(MAGIC)) {
    throw new ManifestError('not a snapshot manifest (no magic)');
  }
  const end = body.length - CHECKSUM_BYTES;
  if (!sha256(body.subarray(0, end)).equals(body.subarray(end))) throw new ManifestError('checksum mismatch (damaged or cut short)');
  const headerLength = body.readUInt32BE(MAGIC.length);
  const start = MAGIC.length + 4;
  if (start + headerLength > end) throw new ManifestError('header longer than the body');
  const header = parseHeader(body.subarray(start, start + headerLength));
  const count = header.count;
  let columns: Buffer;
  try {
    columns = inflateRawSync(body.subarray(start + headerLength, end), { maxOutputLength: Math.max(1, count * 4 * MAX_VARINT_BYTES) });
  } catch (err) {
    throw new ManifestError(`references unreadable: ${(err as Error).message}`);
  }
  const reader = varintReader(columns);
  const indexes: number[] = [];
  const generations: number[] = [];
  let index = 0;
  for (let i = 0; i < count; i++) {
    const delta = reader.read();
    if (i > 0 && delta === 0) throw new ManifestError(`reference ${i}: extent ${index} twice`);
    indexes.push(index += delta);
  }
  const epochs: number[] = [];
  let epoch = 0;
  for (let i = 0; i < count; i++) epochs.push(epoch += unzigzag(reader.read()));
  let sequence = 0;
  for (let i = 0; i < count; i++) {
    sequence += unzigzag(reader.read());
    if (epochs[i]! < 0 || sequence < 0 || sequence >= SEQUENCE_SPAN) throw new ManifestError(`reference ${i}: bad generation`);
    generations.push(epochs[i]! * SEQUENCE_SPAN + sequence);
  }
  const extentCount = Math.ceil(header.size / header.extentSize);
  const references: SnapshotReference[] = [];
  for (let i = 0; i < count; i++) {
    const source = reader.read();
    if (source > header.sources.length) throw new ManifestError(`reference ${i}: unknown source ${source}`);
    if (indexes[i]! >= extentCount) throw new ManifestError(`reference ${i}: extent ${indexes[i]} beyond the volume's ${extentCount}`);
    if (!Number.isSafeInteger(generations[i])) throw new ManifestError(`reference ${i}: bad generation`);
    references.push({ index: indexes[i]!, generation: generations[i]!, source });
  }
  if (!reader.done()) throw new ManifestError('trailing bytes after the references');
  const { count: _count, ...rest } = header;
  return { ...rest, references };
}

function parseHeader(bytes: Buffer): ManifestHeader & { count: number } {
  let h: Record<string, unknown>;
  try {
    h = JSON.parse(bytes.toString('utf8')) as Record<string, unknown>;
  } catch {
    throw new ManifestError('header is not JSON');
  }
  if (h.format !== MANIFEST_FORMAT) throw new ManifestError('header is not a snapshot manifest\'s');
  if (h.version !== MANIFEST_VERSION) throw new ManifestError(`manifest version ${String(h.version)} is not supported (this build reads ${MANIFEST_VERSION})`);
  const { name, volumeId, createdAt, size, extentSize, count, sources } = h;
  if (typeof name !== 'string' || typeof volumeId !== 'string' || typeof createdAt !== 'string' || !Array.isArray(sources)
    || !isCount(size) || !isCount(extentSize) || extentSize === 0 || !isCount(count)) {
    throw new ManifestError('header lacks name, volumeId, createdAt, size, extentSize, count or sources');
  }
  return { name, volumeId, createdAt, size, extentSize, count, sources: sources as unknown[] };
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function sha256(data: Buffer): Buffer {
  return createHash('sha256').update(data).digest();
}

/** Every delta here lies in (-2^34, 2^34): doubled, still a safe integer, so plain arithmetic. */
function zigzag(n: number): number {
  return n >= 0 ? n * 2 : -n * 2 - 1;
}

function unzigzag(n: number): number {
  return n % 2 === 0 ? n / 2 : -(n + 1) / 2;
}

class VarintWriter {
  private readonly buffer: Buffer;
  private pos = 0;
  constructor(capacity: number) {
    this.buffer = Buffer.allocUnsafe(capacity);
  }

  write(value: number): void {
    let v = value;
    while (v >= 0x80) {
      this.buffer[this.pos++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    this.buffer[this.pos++] = v;
  }

  bytes(): Buffer {
    return this.buffer.subarray(0, this.pos);
  }
}

/** Reads the varints of `data` in turn; `done` once every byte was read. */
function varintReader(data: Buffer): { read(): number; done(): boolean } {
  let pos = 0;
  return {
    read(): number {
      let value = 0;
      let scale = 1;
      for (let i = 0; i < MAX_VARINT_BYTES; i++) {
        if (pos >= data.length) throw new ManifestError('references cut short');
        const byte = data[pos++]!;
        value += (byte & 0x7f) * scale;
        if (byte < 0x80) return value;
        scale *= 0x80;
      }
      throw new ManifestError(`a varint longer than ${MAX_VARINT_BYTES} bytes`);
    },
    done: () => pos === data.length,
  };
}

/** What is said of a snapshot just taken (a manifest without its references). */
export interface SnapshotSummary {
  readonly name: string;
  readonly createdAt: string;
  readonly size: number;
  readonly extentSize: number;
  /** Extents the snapshot holds objects for (the others are zeros). */
  readonly extents: number;
}

export function summaryOf(manifest: Manifest): SnapshotSummary {
  const { name, createdAt, size, extentSize } = manifest;
  return { name, createdAt, size, extentSize, extents: manifest.references.length };
}
