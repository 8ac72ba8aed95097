// Objects as files under one directory: the embedded default store. A key's slashes become
// subdirectories. Replacing an object writes a temporary file, fsyncs it and renames it over
// the old one, so a crash leaves either version, never a torn one. A rename is only durable
// once its directory is fsynced, which flush() does for every directory changed since the
// last flush. A conditional put checks and replaces under a kernel lock (withLock()). Every
// failure leaves as a StorageError carrying the errno the NBD client will see (errnoOf()
// below), with the file system's own error as its cause.

import { randomBytes } from 'node:crypto';
import { type BigIntStats, constants } from 'node:fs';
import { link, mkdir, open, readdir, readFile, rename, rm, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join, sep } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { tryLock } from 'fs-native-extensions';
import { fsyncPath } from '../../fsync.ts';
import { StorageError } from '../storage-error.ts';
import type { ObjectBody, ObjectStore, TaggedObject } from './object-store.ts';

/** Temporary and lock files start with this; list() skips them. */
const TEMP_PREFIX = '.tmp-';
/**
 * How long a putIf waits for its lock before it fails. A holder keeps it for a check, a
 * write with its fsync and a rename; one that keeps it longer is stopped (SIGSTOP, a frozen
 * VM) or on a disk that does not answer, and the caller had better hear of it.
 */
const LOCK_WAIT_MS = 30_000;
/** The longest pause between two tries for a lock that is held. */
const LOCK_POLL_MAX_MS = 50;
const VALID_KEY = /^[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+)*$/;

export class FileObjectStore implements ObjectStore {
  readonly description: string;
  /** Every get() reads the file into a buffer of its own. */
  readonly freshBodies = true;
  /** The directory, for errors that name it (first-run-errors.ts). */
  readonly root: string;
  /** Directories known to exist, so put() does not mkdir every time. */
  private readonly knownDirs = new Set<string>();
  /** Directories whose entries changed since the last flush. */
  private dirtyDirs = new Set<string>();
  private readonly tempTag = randomBytes(4).toString('hex');
  private tempCounter = 0;
  private readonly lockWaitMs: number;

  /** `lockWaitMs`: see LOCK_WAIT_MS (tests shorten it). */
  constructor(root: string, options: { lockWaitMs?: number } = {}) {
    this.root = root;
    this.description = `directory ${root}`;
    this.lockWaitMs = options.lockWaitMs ?? LOCK_WAIT_MS;
  }

  get(key: string): Promise<Buffer | undefined> {
    return this.translated('get', key, async () => {
      try {
        return await readFile(this.path(key));
      } catch (err) {
        if (isNotFound(err)) return undefined;
        throw err;
      }
    });
  }

  put(key: string, data: ObjectBody): Promise<void> {
    return this.translated('put', key, async () => {
      const target = this.path(key);
      const temp = await this.writeTemp(target, data);
      try {
        await rename(temp, target);
      } catch (err) {
        await rm(temp, { force: true });
        throw err;
      }
      this.dirtyDirs.add(dirname(target));
    });
  }

  getTagged(key: string): Promise<TaggedObject | undefined> {
    return this.translated('get', key, async () => {
      let handle;
      try {
        handle = await open(this.path(key), constants.O_RDONLY);
      } catch (err) {
        if (isNotFound(err)) return undefined;
        throw err;
      }
      try {
        // Tag and bytes from one open file: a concurrent replace swaps the inode, not this one.
        const stats = await handle.stat({ bigint: true });
        return { data: await handle.readFile(), tag: tagOf(stats) };
      } finally {
        await handle.close();
      }
    });
  }

  putIf(key: string, data: Buffer, expectedTag: string | undefined): Promise<string | undefined> {
    return this.translated('conditional put', key, () => {
      const target = this.path(key);
      // Check-then-replace must be atomic against other calls and other processes.
      return this.withLock(target, async () => {
        if (await currentTag(target) !== expectedTag) return undefined;
        const temp = await this.writeTemp(target, data);
        try {
          // link() refuses to replace an existing file: a create-only-if-absent.
          if (expectedTag === undefined) await link(temp, target);
          else await rename(temp, target);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'EEXIST') return undefined;
          throw err;
        } finally {
          await rm(temp, { force: true });
        }
        this.dirtyDirs.add(dirname(target));
        return currentTag(target);
      });
    });
  }

  /**
   * Runs fn holding the key's lock, against other calls of this process and other processes
   * (another gateway on the same directory) alike. The lock is an open file description lock
   * (fcntl F_OFD_SETLK, through fs-native-extensions, as cache-lock.ts) on a lock file that is
   * never removed: each call opens the file anew, and two open file descriptions exclude each
   * other even within one process. The kernel drops the lock when its holder closes the file
   * or dies, so no lock goes stale, and none is ever removed. Removing stale lock files is
   * what went wrong before: two waiters both judged one stale, and the second removed the
   * lock the first had just created, so both compare-and-swaps ran at once.
   * Polled, not waited for in the kernel (F_OFD_SETLKW): a blocking wait would hold a libuv
   * thread and could not be given up.
   */
  private async withLock<T>(target: string, fn: () => Promise<T>): Promise<T> {
    await this.ensureDir(dirname(target));
    const lock = join(dirname(target), `${TEMP_PREFIX}lock-${basename(target)}`);
    // 'a' creates without truncating; an exclusive lock needs a file open for writing. A lock
    // file an older version left (it held a pid) is simply locked now.
    const handle = await open(lock, 'a', 0o644);
    try {
      const deadline = Date.now() + this.lockWaitMs;
      for (let pause = 1; !tryLock(handle.fd); pause = Math.min(pause * 2, LOCK_POLL_MAX_MS)) {
        if (Date.now() > deadline) {
          throw new Error(`lock ${lock} still held after ${this.lockWaitMs / 1000} s, by another gateway or by a process stopped in a conditional put`);
        }
        await sleep(pause);
      }
      return await fn();
    } finally {
      await handle.close();
    }
  }

  async deleteMany(keys: readonly string[]): Promise<void> {
    await Promise.all(keys.map((key) => this.translated('delete', key, async () => {
      const target = this.path(key);
      try {
        await unlink(target);
        this.dirtyDirs.add(dirname(target));
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
    })));
  }

  async *list(prefix: string): AsyncIterable<string> {
    try {
      yield* this.walk('', prefix);
    } catch (err) {
      throw this.failure('list', `keys under "${prefix}"`, err);
    }
  }

  async *listPrefixes(prefix: string): AsyncIterable<string> {
    let entries;
    try {
      entries = prefix === '' ? await readdir(this.root, { withFileTypes: true }) : await readdir(this.path(prefix.replace(/\/$/, '')), { withFileTypes: true });
    } catch (err) {
      if (isNotFound(err)) return;
      throw this.failure('list', `names under "${prefix}"`, err);
    }
    for (const entry of entries) if (entry.isDirectory() && !entry.name.startsWith(TEMP_PREFIX)) yield entry.name;
  }

  flush(): Promise<void> {
    return this.translated('flush', 'of changed directories', async () => {
      const dirs = this.dirtyDirs;
      this.dirtyDirs = new Set();
      try {
        await Promise.all([...dirs].map((dir) => fsyncPath(dir, 'directory')));
      } catch (err) {
        for (const dir of dirs) this.dirtyDirs.add(dir);
        throw err;
      }
    });
  }

  close(): Promise<void> {
    return this.flush();
  }

  /** Runs one operation on `subject` (a key), its failure turned into a StorageError. */
  private async translated<T>(operation: string, subject: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw this.failure(operation, subject, err);
    }
  }

  /** The StorageError for a failed operation: its errno, what failed where, and the file system's error as its cause. */
  private failure(operation: string, subject: string, err: unknown): StorageError {
    if (err instanceof StorageError) return err;
    const message = err instanceof Error ? err.message : String(err);
    return new StorageError(errnoOf(err), `${operation} ${subject} failed in ${this.description}: ${message}`, { cause: err, permanent: isPermanent(err) });
  }

  private async *walk(relative: string, prefix: string): AsyncIterable<string> {
    let entries;
    try {
      entries = await readdir(join(this.root, relative), { withFileTypes: true });
    } catch (err) {
      if (isNotFound(err)) return;
      throw err;
    }
    for (const entry of entries) {
      if (entry.name.startsWith(TEMP_PREFIX)) continue;
      const key = relative === '' ? entry.name : `${relative}/${entry.name}`;
      if (entry.isDirectory()) {
        // Only descend where keys with the prefix can be.
        if (prefix.startsWith(`${key}/`) || key.startsWith(prefix)) yield* this.walk(key, prefix);
      } else if (entry.isFile() && key.startsWith(prefix)) {
        yield key;
      }
    }
  }

  private path(key: string): string {
    if (!VALID_KEY.test(key) || key.split('/').some((part) => part === '.' || part === '..')) {
      throw new Error(`invalid object key ${JSON.stringify(key)}`);
    }
    return join(this.root, key.split('/').join(sep));
  }

  private async writeTemp(target: string, data: ObjectBody): Promise<string> {
    const dir = dirname(target);
    await this.ensureDir(dir);
    const temp = join(dir, `${TEMP_PREFIX}${this.tempTag}-${this.tempCounter++}`);
    const handle = await open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, 0o644);
    try {
      await handle.writeFile(data);
      await handle.datasync();
    } catch (err) {
      await handle.close();
      await rm(temp, { force: true });
      throw err;
    }
    await handle.close();
    return temp;
  }

  private async ensureDir(dir: string): Promise<void> {
    if (this.knownDirs.has(dir)) return;
    const created = await mkdir(dir, { recursive: true });
    if (created !== undefined) {
      // Every directory from `created` down to `dir` is new, and is an entry in its parent:
      // those parents must be synced too.
      for (let d = dir; ; d = dirname(d)) {
        this.dirtyDirs.add(dirname(d));
        if (d === created || d === dirname(d)) break;
      }
    }
    this.knownDirs.add(dir);
  }
}

/** Changes whenever the file is replaced (new inode) or rewritten (new mtime or size). */
function tagOf(stats: BigIntStats): string {
  return `${stats.ino}-${stats.mtimeNs}-${stats.size}`;
}

async function currentTag(path: string): Promise<string | undefined> {
  try {
    return tagOf(await stat(path, { bigint: true }));
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

/**
 * The errno an NBD client sees for a file-system failure: EPERM for a refusal, ENOSPC when the
 * disk or quota is full (a condition that passes, not a fault), EIO for anything else. This is
 * exactly the mapping the extent layer applied before the store translated its own errors, so
 * clients see what they saw. EROFS stays EIO: NBD has no EROFS, and a store that turned
 * read-only under a writable volume is a fault of the store, not a refused request.
 */
function errnoOf(err: unknown): 'EPERM' | 'ENOSPC' | 'EIO' {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'EACCES' || code === 'EPERM') return 'EPERM';
  if (code === 'ENOSPC' || code === 'EDQUOT') return 'ENOSPC';
  return 'EIO';
}

/**
 * Refusals no retry gets past until someone changes the directory (its permissions, its
 * mount, a file where a directory should be): the flusher then says so instead of retrying
 * at full speed. A full disk is not among them: it passes as uploads and deletes free space.
 */
function isPermanent(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'EACCES' || code === 'EPERM' || code === 'EROFS' || code === 'ENOTDIR';
}

function isNotFound(err: unknown): boolean {
  return (err as NodeJS.ErrnoException).code === 'ENOENT';
}
