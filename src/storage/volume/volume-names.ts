// Volumes under a store prefix (`serve --volumes URL`): `<prefix>/<name>/` holds one volume, as
// `--store <prefix>/<name>` would, and `<name>` is its export name. A volume's name is 1 to 63
// letters, digits, '.', '-' and '_', starting with a letter or digit: it is a part of S3 keys
// and of a directory path, never '.' or '..', and has no '@' (which separates a volume from
// its snapshot in an export name, `<name>@<snapshot>`) and no '/'.
//
// A sub-prefix is a volume when its metadata object (VOLUME_KEY) is there; anything else under
// the prefix (a half-deleted volume, another program's objects) is ignored.

import { join } from 'node:path';
import { Errors } from '../../errors.ts';
import { FileObjectStore } from '../objects/file-object-store.ts';
import { MemoryObjectStore } from '../objects/memory-object-store.ts';
import type { ObjectStore } from '../objects/object-store.ts';
import { normalisePrefix } from '../objects/s3/s3-object-store.ts';
import { VOLUME_KEY } from './volume.ts';

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

export function isVolumeName(name: string): boolean {
  return NAME.test(name);
}

/** Throws S3NBD_BAD_VOLUME_NAME unless `name` can name a volume. */
export function checkVolumeName(name: string): string {
  if (!isVolumeName(name)) throw Errors.badVolumeName(name);
  return name;
}

/** The store of volume `name` under `prefixUrl` (an s3:// URL or a directory store), as --store takes it. */
export function volumeStoreUrl(prefixUrl: string, name: string, store: ObjectStore): string {
  checkVolumeName(name);
  if (store instanceof FileObjectStore) return join(store.root, name);
  const match = /^(s3:\/\/[^/]*)(\/.*)?$/i.exec(prefixUrl);
  if (!match) return `${prefixUrl.replace(/\/+$/, '')}/${name}`; // memory: (tests)
  const prefix = normalisePrefix(match[2] ?? '');
  return `${match[1]!}/${prefix === '' ? '' : `${prefix}/`}${name}`;
}

/** Refuses a store that cannot hold volumes under it: memory: (one volume, in this process), or a volume itself. */
export async function checkVolumesStore(url: string, store: ObjectStore): Promise<void> {
  if (store instanceof MemoryObjectStore) {
    throw Errors.badVolumes(url, 'a memory: store is one volume of this process', 'use s3://BUCKET/PREFIX or a directory');
  }
  if (await hasKey(store, VOLUME_KEY)) {
    throw Errors.badVolumes(url, `it is a volume itself (it holds ${VOLUME_KEY})`, `serve it with --store ${url}, or give the prefix above it`);
  }
}

export interface Discovered {
  /** Sub-prefixes holding a volume's metadata, in name order. */
  readonly volumes: readonly string[];
  /** Sub-prefixes holding one but whose names are not volume names (they cannot be exports). */
  readonly badNames: readonly string[];
}

/** The volumes under the store's root: one LIST of names, and one of each name's metadata key. */
export async function discoverVolumes(store: ObjectStore): Promise<Discovered> {
  const volumes: string[] = [];
  const badNames: string[] = [];
  for (const name of await childNames(store)) {
    if (!await hasKey(store, `${name}/${VOLUME_KEY}`)) continue;
    (isVolumeName(name) ? volumes : badNames).push(name);
  }
  return { volumes, badNames };
}

/**
 * The names one level below the store's root, sorted: one delimiter LIST where the store has
 * one (listPrefixes), every key listed otherwise.
 */
export async function childNames(store: ObjectStore): Promise<string[]> {
  const children = new Set<string>();
  if (store.listPrefixes) {
    for await (const name of store.listPrefixes('')) children.add(name);
  } else {
    for await (const key of store.list('')) if (key.includes('/')) children.add(key.slice(0, key.indexOf('/')));
  }
  return [...children].sort();
}

/** Whether the key exists, without reading it (a corrupt metadata object may be large). */
async function hasKey(store: ObjectStore, key: string): Promise<boolean> {
  for await (const found of store.list(key)) if (found === key) return true;
  return false;
}
