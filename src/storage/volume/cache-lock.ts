// One process per cache directory. A gateway that writes through a cache directory holds an
// operating-system lock on `<cache-dir>/lock` for its whole life; a second one is refused
// before it touches anything (the bucket, the lease, the journal).
//
// Why a kernel lock and not a lock file with a pid: two containers that share one volume see
// each other's pids as meaningless numbers (PID namespaces differ), and a paused process
// (SIGSTOP, a frozen VM) renews nothing, yet still has its journal open and will carry on
// when it resumes. The lock is an open file description lock (fcntl F_OFD_SETLK, through
// fs-native-extensions): it belongs to the open file, whatever mount or PID namespace the
// process is in, it holds while the process is stopped, and the kernel drops it the moment
// the process dies, so a restart after kill -9 starts at once. Node opens files with
// O_CLOEXEC, so a child process never inherits it.
//
// The lock file also holds, for the error message of a refused gateway, who holds it (pid and
// host as the holder sees them). That text is information, never what decides: the lock does.

import { mkdir, open, readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { tryLock } from 'fs-native-extensions';
import { Errors } from '../../errors.ts';

export const LOCK_FILE = 'lock';

export interface CacheDirLock {
  readonly path: string;
  /**
   * Names this lock for everyone who can share it: the kernel's boot id (shared by all the
   * containers of one host), the file system and the lock file's inode. A lease written by a
   * process that held the same lock is a lease of a process that is gone now.
   */
  readonly id: string;
  /** Drops the lock (closing the file). The kernel does the same when the process exits. */
  release(): Promise<void>;
}

/**
 * Locks the cache directory (creating it if needed), or throws S3NBD_CACHE_DIR_LOCKED at once
 * if another process holds it. Nothing in the directory is changed when it is refused.
 */
export async function lockCacheDir(dir: string): Promise<CacheDirLock> {
  await mkdir(dir, { recursive: true });
  const path = join(dir, LOCK_FILE);
  // 'a+' creates the file without truncating it: a refused process must not erase the
  // holder's description. An exclusive lock needs a file open for writing.
  const file = await open(path, 'a+');
  let locked: boolean;
  try {
    locked = tryLock(file.fd);
  } catch (err) {
    await file.close();
    throw Errors.cacheDirLockFailed(dir, (err as NodeJS.ErrnoException).code ?? (err as Error).message);
  }
  if (!locked) {
    const holder = await readFile(path, 'utf8').then((text) => describeHolder(text), () => '');
    await file.close();
    throw Errors.cacheDirLocked(dir, holder);
  }
  try {
    await file.truncate(0);
    await file.write(`${JSON.stringify({ pid: process.pid, host: hostname(), since: new Date().toISOString() })}\n`, 0);
  } catch {
    // Only information for a refused gateway's message: the lock is what counts.
  }
  const st = await file.stat();
  const boot = await readFile('/proc/sys/kernel/random/boot_id', 'utf8').then((t) => t.trim(), () => hostname());
  return {
    path,
    id: `${boot}:${st.dev}:${st.ino}`,
    async release() {
      await file.close();
    },
  };
}

function describeHolder(text: string): string {
  try {
    const v = JSON.parse(text) as { pid?: unknown; host?: unknown; since?: unknown };
    if (typeof v.pid === 'number' && typeof v.host === 'string') {
      return `pid ${v.pid} on ${v.host}${typeof v.since === 'string' ? ` since ${v.since}` : ''}`;
    }
  } catch {
    // Written by a gateway that died half-way, or by something else: no description.
  }
  return '';
}
