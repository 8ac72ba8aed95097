// Turns the --store argument into an ObjectStore:
//   ./dir, /abs/dir, file:///abs/dir   a local directory (the embedded default)
//   memory:                            volatile, in this process (tests, benchmarks)

import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Errors } from '../errors.ts';
import { FileObjectStore } from './file-object-store.ts';
import { MemoryObjectStore } from './memory-object-store.ts';
import type { ObjectStore } from './object-store.ts';

export const DEFAULT_STORE = './s3nbd-data';

export function openObjectStore(spec: string): Promise<ObjectStore> {
  if (spec === 'memory:') return Promise.resolve(new MemoryObjectStore());
  if (/^s3:\/\//i.test(spec)) throw Errors.s3NotYet(spec);
  let dir: string;
  if (/^file:/i.test(spec)) {
    try {
      dir = fileURLToPath(spec);
    } catch {
      throw Errors.badStore(spec);
    }
  } else if (/^[a-z][a-z0-9+.-]*:/i.test(spec) || spec === '') {
    throw Errors.badStore(spec);
  } else {
    dir = resolve(spec);
  }
  // The directory is created by the first write, so `info` on a wrong path leaves nothing behind.
  return Promise.resolve(new FileObjectStore(dir));
}
