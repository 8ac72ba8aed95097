// The cache directory belongs to one volume and one gateway identity:
//
//   <cache-dir>/cache.json     {"volume":"<volume id>","gateway":"<gateway id>","extentSize":<bytes>}
//   <cache-dir>/journal/       the dirty-extent journal (journal.ts)
//   <cache-dir>/extents.cache  the slot file (slot-file.ts)
//   <cache-dir>/status.json    what the running gateway is doing (for `s3nbd info`)
//   <cache-dir>/lock           held (fcntl) by the running gateway: one per directory (cache-lock.ts)
//
// The gateway id is the lease owner (lease.ts): a gateway restarted on its own cache directory
// is the same gateway, and resumes without waiting for its old lease to expire.

import { randomUUID } from 'node:crypto';
import { constants } from 'node:fs';
import { access, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Errors } from '../../errors.ts';
import type { Volume } from './volume.ts';

export interface CacheIdentity {
  readonly volume: string;
  readonly gateway: string;
  readonly extentSize: number;
}

export async function claimCacheDir(dir: string, volume: Volume): Promise<CacheIdentity> {
  await mkdir(dir, { recursive: true });
  const path = join(dir, 'cache.json');
  const existing = await readFile(path, 'utf8').then((text) => JSON.parse(text) as CacheIdentity, () => undefined);
  if (existing && existing.volume !== volume.id) throw Errors.cacheDirMismatch(dir, existing.volume, volume.id);
  if (existing) return existing;
  const identity: CacheIdentity = { volume: volume.id, gateway: randomUUID(), extentSize: volume.extentSize };
  await writeAtomically(path, `${JSON.stringify(identity)}\n`);
  return identity;
}

/**
 * Checked before anything is written to the store: the directory exists or can be made, this
 * process may write in it, and which volume it already belongs to, if any. A start refused
 * here has created nothing in the bucket.
 */
export async function prepareCacheDir(dir: string): Promise<CacheIdentity | undefined> {
  await mkdir(dir, { recursive: true });
  await access(dir, constants.R_OK | constants.W_OK | constants.X_OK);
  const text = await readFile(join(dir, 'cache.json'), 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  });
  try {
    return text === undefined ? undefined : JSON.parse(text) as CacheIdentity;
  } catch {
    return undefined; // Torn by a crash while first written: claimCacheDir writes it anew.
  }
}

export async function writeAtomically(path: string, text: string): Promise<void> {
  await writeFile(`${path}.tmp`, text);
  await rename(`${path}.tmp`, path);
}
