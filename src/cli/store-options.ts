// The store options every command shares, turned into the storage layer's S3Options.

import type { S3Options } from '../storage/objects/store-url.ts';
import type { Cipher } from '../storage/format/object-header.ts';
import type { Compression, ObjectRequest } from '../storage/format/object-settings.ts';
import { readKeySource } from '../storage/format/volume-keys.ts';
import { parseFlag } from './parse.ts';

export interface StoreOptions {
  store: string;
  s3Endpoint?: string;
  s3Region?: string;
  s3ForcePathStyle?: boolean;
}

export function s3OptionsOf(opts: StoreOptions): S3Options {
  return {
    endpoint: opts.s3Endpoint,
    region: opts.s3Region,
    forcePathStyle: opts.s3ForcePathStyle ?? parseFlag('S3NBD_S3_FORCE_PATH_STYLE', process.env.S3NBD_S3_FORCE_PATH_STYLE),
  };
}

/** What every command that creates or serves a volume takes about its objects (format/object-settings.ts). */
export interface ObjectOptions {
  compression?: Compression;
  encryption?: Cipher | 'off';
  passphraseFile?: string;
  keyFile?: string;
}

/** The object settings asked for, with the key read from its file or S3NBD_PASSPHRASE (then removed from the environment). */
export async function objectRequestOf(opts: ObjectOptions): Promise<ObjectRequest> {
  return { compression: opts.compression, encryption: opts.encryption, key: await readKeySource(opts, process.env) };
}
