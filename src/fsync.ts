// fsync by path, for files and directories that may be gone by the time we get to them.

import { constants } from 'node:fs';
import { open } from 'node:fs/promises';

/**
 * Makes what was written to `path` durable: a file's data, or a directory's entries (files
 * created, renamed or removed in it). A path that no longer exists has nothing to make
 * durable: it resolves without error.
 */
export async function fsyncPath(path: string, kind: 'file' | 'directory'): Promise<void> {
  let handle;
  try {
    handle = await open(path, constants.O_RDONLY | (kind === 'directory' ? constants.O_DIRECTORY : 0));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
