// The store options every command shares, turned into the storage layer's S3Options.

import type { S3Options } from '../storage/objects/store-url.ts';
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
