// Directory trees for the backup-history tests: a first tree T1 of the kind a backup holds
// (nested directories, text, binary, a few large files, an empty file, a symlink), a second
// tree T2 made from it by changing, deleting and adding files, and the SHA-256 of every
// regular file under a directory (the manifest the snapshots are checked against).

import { createHash, randomBytes } from 'node:crypto';
import { cpSync, mkdirSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';

const KiB = 1024;
const MiB = 1024 * KiB;
const WORDS = ['backup', 'volume', 'extent', 'journal', 'snapshot', 'bucket', 'object', 'inode', 'block', 'mount',
  'rsync', 'kernel', 'gateway', 'cache', 'upload', 'restore', 'history', 'checksum', 'tree', 'file'];

/** Lines of words, `bytes` long: text that compresses and differs from file to file. */
function text(bytes: number): string {
  const pick = randomBytes(bytes);
  let out = '';
  for (let i = 0; out.length < bytes; i++) out += WORDS[pick[i % pick.length]! % WORDS.length] + (pick[i % pick.length]! % 9 === 0 ? '\n' : ' ');
  return out.slice(0, bytes);
}

function put(root: string, path: string, body: string | Buffer): void {
  mkdirSync(dirname(join(root, path)), { recursive: true });
  writeFileSync(join(root, path), body);
}

/**
 * T1, about 11 MiB: 3 projects × 4 directories × 12 text files (0 to 60 KB), 24 photos
 * (64 KiB to 600 KiB of random bytes), 2 archives of 2 and 3 MiB, an empty file, a symlink.
 */
export function makeFirstTree(root: string): void {
  for (let p = 0; p < 3; p++) {
    for (let d = 0; d < 4; d++) {
      for (let f = 0; f < 12; f++) put(root, `projects/p${p}/dir${d}/notes-${f}.txt`, text((f * 5003 + d * 977 + p * 131) % 60_000));
    }
  }
  for (let i = 0; i < 24; i++) put(root, `photos/${2020 + (i % 4)}/img-${i}.jpg`, randomBytes(64 * KiB + ((i * 104_729) % (536 * KiB))));
  put(root, 'archives/archive-1.tar', randomBytes(2 * MiB + 17));
  put(root, 'archives/archive-2.tar', randomBytes(3 * MiB + 4099));
  put(root, 'empty', '');
  symlinkSync('archives/archive-1.tar', join(root, 'latest-archive'));
}

/** What T2 changes, deletes and adds, relative to T1 (paths as checksums() names them). */
export const SECOND_TREE = {
  changed: ['projects/p0/dir0/notes-3.txt', 'photos/2021/img-5.jpg', 'archives/archive-1.tar'],
  deleted: ['projects/p2/dir3/notes-0.txt', 'photos/2023/img-7.jpg', 'archives/archive-2.tar'],
  added: ['projects/p3/dir0/notes-0.txt', 'photos/2024/img-100.jpg', 'archives/archive-3.tar'],
} as const;

/**
 * T2: a copy of T1 with a note rewritten, a photo and an archive rewritten, a whole
 * directory (projects/p2/dir3) and a photo and an archive deleted, and a project, a photo and a
 * 4 MiB archive added.
 */
export function makeSecondTree(first: string, root: string): void {
  cpSync(first, root, { recursive: true, verbatimSymlinks: true, preserveTimestamps: true });
  writeFileSync(join(root, SECOND_TREE.changed[0]), `${text(5000)}\n${text(3000)}`);
  writeFileSync(join(root, SECOND_TREE.changed[1]), randomBytes(300 * KiB));
  writeFileSync(join(root, SECOND_TREE.changed[2]), randomBytes(2 * MiB + 8209));
  // rsync skips a file whose size and modification time (in whole seconds) are unchanged, and
  // T1 and T2 are made within a second: a new size, and an hour later.
  const later = new Date(Date.now() + 3600_000);
  for (const path of SECOND_TREE.changed) utimesSync(join(root, path), later, later);
  rmSync(join(root, 'projects/p2/dir3'), { recursive: true });
  rmSync(join(root, SECOND_TREE.deleted[1]));
  rmSync(join(root, SECOND_TREE.deleted[2]));
  for (let d = 0; d < 2; d++) for (let f = 0; f < 10; f++) put(root, `projects/p3/dir${d}/notes-${f}.txt`, text(1000 + f * 3001));
  put(root, SECOND_TREE.added[1], randomBytes(450 * KiB));
  put(root, SECOND_TREE.added[2], randomBytes(4 * MiB));
}

/**
 * path -> sha256 of every regular file under root (paths relative to it, lost+found left
 * out). Asynchronous reads: a test whose event loop blocks stops draining its gateway's log
 * pipe, and the gateway, blocked on it, stops serving the reads.
 */
export async function checksums(root: string): Promise<Map<string, string>> {
  const sums = new Map<string, string>();
  const entries = await readdir(root, { recursive: true, withFileTypes: true });
  for (const entry of entries.sort((a, b) => join(a.parentPath, a.name).localeCompare(join(b.parentPath, b.name)))) {
    if (!entry.isFile()) continue;
    const path = relative(root, join(entry.parentPath, entry.name));
    if (path.startsWith('lost+found')) continue;
    sums.set(path, createHash('sha256').update(await readFile(join(root, path))).digest('hex'));
  }
  return sums;
}

/** The sums as `sha256sum -c` reads them, with ./ paths (what the guest's sums() prints). */
export function sha256sumLines(sums: ReadonlyMap<string, string>): string {
  return [...sums].map(([path, hash]) => `${hash}  ./${path}\n`).join('');
}
