// The volume's object settings: the `objects` field of s3nbd-volume.json (format 2), chosen
// when the volume is created and never changed afterwards (but for the wrapped key, which
// `s3nbd key change` rewraps):
//
//   "objects": {"checksum":"sha256","compression":"zstd:3"|"off",
//               "encryption":"off"|{"cipher":"aes-256-gcm"|"chacha20-poly1305",
//                                   "kek":{"kind":"scrypt","salt":"<base64>","N":131072,"r":8,"p":1}|{"kind":"key-file"},
//                                   "wrappedKey":"<base64>"}}
//
// The metadata never holds a key in the clear: wrappedKey is the data key sealed by the KEK
// (volume-keys.ts). A volume without the field is format 1: raw extents, no header (rawCodec).
// Here too: what a gateway was asked for (--compression, --encryption, a key) against what
// the volume has, and the codec it then reads and writes the volume's objects with.

import { randomBytes } from 'node:crypto';
import { Errors } from '../../errors.ts';
import { type ExtentCodec, rawCodec } from './extent-codec.ts';
import { DATA_KEY_BYTES, MAX_ZSTD_LEVEL, MIN_ZSTD_LEVEL, ObjectCodec } from './object-codec.ts';
import { type Cipher, CIPHERS } from './object-header.ts';
import { type KekSpec, type KeySource, parseKekSpec, unwrapDataKey, wrapDataKey } from './volume-keys.ts';

export type Compression = { readonly kind: 'zstd'; readonly level: number } | { readonly kind: 'off' };

export interface EncryptionSettings {
  readonly cipher: Cipher;
  readonly kek: KekSpec;
  readonly wrappedKey: string;
}

export interface ObjectSettings {
  readonly checksum: 'sha256';
  readonly compression: Compression;
  /** Undefined: not encrypted. */
  readonly encryption: EncryptionSettings | undefined;
}

/**
 * The compression of a new volume when none is asked for. Level 1: on a backup tree of text,
 * source code, photos and archives it stored half the extents' bytes, 1.2% more than level 3,
 * for about 10% less CPU per GiB written (bench/results/objects-17.md).
 */
export const DEFAULT_ZSTD_LEVEL = 1;
export const DEFAULT_COMPRESSION: Compression = { kind: 'zstd', level: DEFAULT_ZSTD_LEVEL };
export const ENCRYPTION_CHOICES = ['off', ...CIPHERS] as const;

export function compressionText(c: Compression): string {
  return c.kind === 'off' ? 'off' : `zstd:${c.level}`;
}

/** `--compression zstd[:LEVEL]|off`; undefined for text that is neither. */
export function parseCompression(text: string): Compression | undefined {
  if (text === 'off') return { kind: 'off' };
  if (text === 'zstd') return { kind: 'zstd', level: DEFAULT_ZSTD_LEVEL };
  const m = /^zstd:(\d{1,2})$/.exec(text);
  const level = m ? Number(m[1]) : NaN;
  return level >= MIN_ZSTD_LEVEL && level <= MAX_ZSTD_LEVEL ? { kind: 'zstd', level } : undefined;
}

export const COMPRESSION_CHOICES = ['zstd', `zstd:${MIN_ZSTD_LEVEL}`, '…', `zstd:${MAX_ZSTD_LEVEL}`, 'off'] as const;

/** The settings in a volume's metadata; throws the reason when they are not usable. */
export function parseObjectSettings(value: unknown): ObjectSettings {
  if (typeof value !== 'object' || value === null) throw new Error('objects is not an object');
  const o = value as Record<string, unknown>;
  if (o.checksum !== 'sha256') throw new Error(`objects.checksum ${JSON.stringify(o.checksum)} is not sha256`);
  const compression = typeof o.compression === 'string' ? parseCompression(o.compression) : undefined;
  if (!compression || o.compression === 'zstd') throw new Error(`objects.compression ${JSON.stringify(o.compression)} is not zstd:LEVEL or off`);
  if (o.encryption === 'off') return { checksum: 'sha256', compression, encryption: undefined };
  if (typeof o.encryption !== 'object' || o.encryption === null) throw new Error('objects.encryption is not off or an object');
  const e = o.encryption as Record<string, unknown>;
  if (!(CIPHERS as readonly unknown[]).includes(e.cipher)) throw new Error(`objects.encryption.cipher ${JSON.stringify(e.cipher)} is not one of ${CIPHERS.join(', ')}`);
  if (typeof e.wrappedKey !== 'string' || !/^[A-Za-z0-9+/]+=*$/.test(e.wrappedKey)) throw new Error('objects.encryption.wrappedKey is not base64');
  return { checksum: 'sha256', compression, encryption: { cipher: e.cipher as Cipher, kek: parseKekSpec(e.kek), wrappedKey: e.wrappedKey } };
}

/** The `objects` field of the metadata. */
export function objectSettingsJson(s: ObjectSettings): Record<string, unknown> {
  return {
    checksum: s.checksum,
    compression: compressionText(s.compression),
    encryption: s.encryption ? { cipher: s.encryption.cipher, kek: s.encryption.kek, wrappedKey: s.encryption.wrappedKey } : 'off',
  };
}

/** What `s3nbd info` shows: the choices, never the wrapped key or the salt. */
export function describeObjectSettings(s: ObjectSettings | undefined): { format: number; checksum: string; compression: string; encryption: string; key?: string } {
  if (!s) return { format: 1, checksum: 'none', compression: 'off', encryption: 'off' };
  const e = s.encryption;
  return {
    format: 2, checksum: s.checksum, compression: compressionText(s.compression), encryption: e ? e.cipher : 'off',
    ...e ? { key: e.kek.kind === 'scrypt' ? `passphrase (scrypt N=${e.kek.N}, r=${e.kek.r}, p=${e.kek.p})` : 'key file (32 bytes)' } : {},
  };
}

/** What the gateway was asked for: each field undefined when not given. */
export interface ObjectRequest {
  readonly compression?: Compression | undefined;
  readonly encryption?: Cipher | 'off' | undefined;
  readonly key?: KeySource | undefined;
}

/** The cipher a new volume gets: as asked, or AES-256-GCM when only a key was given. Checked before anything is written. */
export function newVolumeCipher(request: ObjectRequest): Cipher | undefined {
  if (request.encryption === 'off') {
    if (request.key) throw Errors.keyWithoutEncryption(request.key.origin);
    return undefined;
  }
  const cipher = request.encryption ?? (request.key ? 'aes-256-gcm' : undefined);
  if (cipher && !request.key) throw Errors.keyRequiredToCreate(cipher);
  return cipher;
}

/** The settings of a volume about to be created, with a new data key wrapped by the request's key. */
export async function newObjectSettings(request: ObjectRequest, volumeId: string): Promise<ObjectSettings> {
  const compression = request.compression ?? DEFAULT_COMPRESSION;
  const cipher = newVolumeCipher(request);
  if (!cipher || !request.key) return { checksum: 'sha256', compression, encryption: undefined };
  const kek = request.key.newKekSpec();
  const dataKey = randomBytes(DATA_KEY_BYTES);
  const wrappedKey = wrapDataKey(await request.key.kek(kek), dataKey, { volumeId, cipher });
  dataKey.fill(0);
  return { checksum: 'sha256', compression, encryption: { cipher, kek, wrappedKey } };
}

/**
 * The codec for the volume's objects, once what was asked for is checked against what the
 * volume has: a compression or encryption other than the volume's, a key for a volume without
 * one, or no key for one with one, is a UserError, as is a key that does not unwrap the data
 * key. `request` undefined: inspection (`info`), which reads no extent and needs no key.
 */
export async function openCodec(volume: { readonly id: string; readonly objects?: ObjectSettings | undefined }, request: ObjectRequest | undefined,
  store: string): Promise<ExtentCodec> {
  const s = volume.objects;
  if (!request) return s ? new ObjectCodec({ compressionLevel: undefined }) : rawCodec;
  const theirs = s ? compressionText(s.compression) : 'off (format 1)';
  if (request.compression && compressionText(request.compression) !== compressionText(s?.compression ?? { kind: 'off' })) {
    throw Errors.objectsConflict(store, 'compression', theirs, compressionText(request.compression), '--compression');
  }
  const cipher = s?.encryption?.cipher;
  if (request.encryption && request.encryption !== (cipher ?? 'off')) {
    throw Errors.objectsConflict(store, 'encryption', cipher ?? (s ? 'off' : 'off (format 1)'), request.encryption, '--encryption');
  }
  if (!s) {
    if (request.key) throw Errors.keyForUnencrypted(store, request.key.origin);
    return rawCodec;
  }
  const compressionLevel = s.compression.kind === 'zstd' ? s.compression.level : undefined;
  if (!s.encryption) {
    if (request.key) throw Errors.keyForUnencrypted(store, request.key.origin);
    return new ObjectCodec({ compressionLevel });
  }
  const key = await unlock(s.encryption, volume.id, request.key, store);
  const codec = new ObjectCodec({ compressionLevel, encryption: { cipher: s.encryption.cipher, key } });
  key.fill(0);
  return codec;
}

/** The data key, unwrapped by `key`; a UserError when there is no key, the wrong kind, or the wrong key. */
export async function unlock(e: EncryptionSettings, volumeId: string, key: KeySource | undefined, store: string): Promise<Buffer> {
  const kind = e.kek.kind === 'scrypt' ? 'passphrase' : 'key-file';
  if (!key) throw Errors.keyRequired(store, e.cipher, kind);
  if (key.kind !== kind) throw Errors.wrongKeyKind(store, key.origin, kind);
  const dataKey = unwrapDataKey(await key.kek(e.kek), e.wrappedKey, { volumeId, cipher: e.cipher });
  if (!dataKey) throw Errors.wrongKey(store, key.origin);
  return dataKey;
}

/** The settings with the data key wrapped by `newKey` instead of `oldKey` (`s3nbd key change`): the data key itself stays. */
export async function rewrapKey(s: ObjectSettings, volumeId: string, oldKey: KeySource | undefined, newKey: KeySource, store: string): Promise<ObjectSettings> {
  if (!s.encryption) throw Errors.notEncrypted(store);
  const dataKey = await unlock(s.encryption, volumeId, oldKey, store);
  const kek = newKey.newKekSpec();
  const wrappedKey = wrapDataKey(await newKey.kek(kek), dataKey, { volumeId, cipher: s.encryption.cipher });
  dataKey.fill(0);
  return { ...s, encryption: { ...s.encryption, kek, wrappedKey } };
}
