// `s3nbd create` and `s3nbd info`.
//
// `info --cache-dir` prints what the cache directory says first (the volume and gateway it
// belongs to, the running gateway's status, the journal), without asking S3: it is what one
// looks at exactly when S3 is the problem. The store's part follows, bounded by a short first
// contact. If the store cannot be read, the local part is still printed, the store's error is
// the usual one line on stderr, and the exit status is 2.

import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { pino } from 'pino';
import { UserError } from '../errors.ts';
import { openStorage } from '../storage/stack.ts';
import { describeObjectSettings } from '../storage/format/object-settings.ts';
import { formatBytes } from './parse.ts';
import { type ObjectOptions, objectRequestOf, type StoreOptions, s3OptionsOf } from './store-options.ts';

const quiet = pino({ level: 'silent' });
/** `info` waits this long for S3 before it says S3 is unreachable. */
const INFO_CONTACT_MS = 5_000;

export async function runCreate(raw: Record<string, unknown>): Promise<void> {
  const opts = raw as unknown as StoreOptions & ObjectOptions & { size: number; extentSize?: number };
  const storage = await openStorage({
    store: opts.store, s3: s3OptionsOf(opts), log: quiet, objects: await objectRequestOf(opts),
    volume: { mode: 'create', size: opts.size, extentSize: opts.extentSize },
    readOnly: true, memoryCacheBytes: 0,
  });
  await storage.close();
  const { volume } = storage;
  const o = describeObjectSettings(volume.objects);
  process.stdout.write(`created volume ${volume.id}: ${formatBytes(volume.size)} in ${formatBytes(volume.extentSize)} extents, compression ${o.compression}, encryption ${o.encryption}${o.key ? ` (${o.key})` : ''}, ${storage.objects.description}\n`);
}

interface LocalState {
  dir: string;
  exists: boolean;
  /** cache.json: which volume and gateway the directory belongs to. */
  identity?: Record<string, unknown>;
  /** status.json of a gateway, and whether its process is alive. */
  gateway?: Record<string, number | string | boolean>;
  journal: { segments: number; bytes: number };
  /** Space the disk cache's sparse file takes on disk. */
  diskCacheBytes: number;
}

async function readJson(path: string): Promise<Record<string, unknown> | undefined> {
  return readFile(path, 'utf8').then((t) => JSON.parse(t) as Record<string, unknown>, () => undefined);
}

function alive(pid: unknown): boolean {
  if (typeof pid !== 'number') return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function localState(dir: string): Promise<LocalState> {
  const exists = await stat(dir).then((s) => s.isDirectory(), () => false);
  const identity = await readJson(join(dir, 'cache.json'));
  // The running gateway writes its status every few seconds and removes it on a clean stop.
  const status = await readJson(join(dir, 'status.json')) as Record<string, number | string> | undefined;
  const journal = { segments: 0, bytes: 0 };
  for (const name of await readdir(join(dir, 'journal')).catch(() => [] as string[])) {
    if (!name.endsWith('.log') || name.startsWith('spare-')) continue;
    journal.segments++;
    journal.bytes += await stat(join(dir, 'journal', name)).then((s) => s.size, () => 0);
  }
  const diskCacheBytes = await stat(join(dir, 'extents.cache')).then((s) => s.blocks * 512, () => 0);
  return {
    dir, exists, journal, diskCacheBytes,
    ...identity ? { identity } : {},
    ...status ? { gateway: { ...status, running: alive(status.pid) } } : {},
  };
}

function localLines(s: LocalState): string[] {
  if (!s.exists) return [`cache dir:        ${s.dir} does not exist (no gateway has run there)`];
  const lines = [`cache dir:        ${s.dir}`];
  if (s.identity) {
    lines.push(`  volume id:      ${String(s.identity.volume)}`, `  gateway id:     ${String(s.identity.gateway)}`);
  } else {
    lines.push('  volume id:      none (no cache.json: no gateway has served from here)');
  }
  lines.push(`  journal:        ${formatBytes(s.journal.bytes)} in ${s.journal.segments} segments`,
    `  disk cache:     ${formatBytes(s.diskCacheBytes)} on disk`);
  const g = s.gateway;
  if (g) {
    lines.push(
      `  gateway:        pid ${g.pid}, ${g.running ? 'running' : 'NOT running (killed or crashed: the next start replays the journal)'}, status of ${g.updatedAt}`,
      `  dirty:          ${formatBytes(Number(g.dirtyBytes))} in ${g.dirtyExtents} extents, ${g.pendingDeletes} deletes pending`,
      `  uploads:        ${g.uploadsInFlight} in flight, ${g.uploadedExtents} done, ${g.uploadFailures} failed attempts`,
      `  cache slots:    ${g.cachedExtents} of ${g.cacheSlots} used`,
    );
  } else {
    lines.push('  gateway:        no status (not running, or stopped cleanly: nothing dirty)');
  }
  return lines;
}

export async function runInfo(raw: Record<string, unknown>): Promise<void> {
  const opts = raw as unknown as StoreOptions & { json?: boolean; cacheDir?: string };
  const local = opts.cacheDir === undefined ? undefined : await localState(opts.cacheDir);
  if (local && !opts.json) process.stdout.write(`${localLines(local).join('\n')}\n`);

  let storeInfo: Record<string, unknown> | undefined;
  let failure: unknown;
  try {
    const storage = await openStorage({
      store: opts.store, s3: s3OptionsOf(opts), log: quiet, volume: { mode: 'open' }, readOnly: true, memoryCacheBytes: 0,
      firstContactMs: INFO_CONTACT_MS,
    });
    const { volume } = storage;
    const stored = storage.extents.allocatedCount;
    await storage.close();
    storeInfo = {
      store: storage.objects.description,
      id: volume.id,
      size: volume.size,
      extentSize: volume.extentSize,
      extents: Math.ceil(volume.size / volume.extentSize),
      storedExtents: stored,
      storedBytes: stored * volume.extentSize,
      createdAt: volume.createdAt,
      objects: describeObjectSettings(volume.objects),
      // A clone: the snapshot it reads what it has not written from (its stored extents count those).
      ...volume.origin ? { origin: volume.origin } : {},
    };
  } catch (err) {
    // Without a cache dir there is nothing else to show: the error is all there is.
    if (!local) throw err;
    failure = err;
  }

  if (opts.json) {
    const storeError = failure instanceof UserError ? { code: failure.code, message: failure.message }
      : failure !== undefined ? { message: String((failure as Error).message ?? failure) } : undefined;
    const json = { ...storeInfo, ...local ? { cacheDir: local } : {}, ...storeError ? { storeError } : {} };
    // The old shape kept the gateway's status at the top level.
    if (local?.gateway) Object.assign(json, { gateway: local.gateway });
    process.stdout.write(`${JSON.stringify(json, null, 2)}\n`);
  } else if (storeInfo) {
    const info = storeInfo as { store: string; id: string; size: number; extentSize: number; extents: number; storedExtents: number; storedBytes: number; createdAt: string;
      objects: ReturnType<typeof describeObjectSettings>; origin?: { store: string; volumeId: string; snapshot: string } };
    const o = info.objects;
    const lines = [
      `store:            ${info.store}`,
      `volume id:        ${info.id}${local?.identity && local.identity.volume !== info.id ? ' (NOT the volume of the cache dir above)' : ''}`,
      `size:             ${formatBytes(info.size)} (${info.size} bytes)`,
      `extent size:      ${formatBytes(info.extentSize)}`,
      `stored extents:   ${info.storedExtents} of ${info.extents} (${formatBytes(info.storedBytes)})`,
      `created:          ${info.createdAt}`,
      ...info.origin ? [`clone of:         snapshot ${info.origin.snapshot} of volume ${info.origin.volumeId} in ${info.origin.store}`] : [],
      `format:           ${o.format}${o.format === 1 ? ' (raw extents, no object header or checksum)' : ` (object header, ${o.checksum} checksum)`}`,
      `compression:      ${o.compression}`,
      `encryption:       ${o.encryption}${o.key ? `, data key wrapped by a ${o.key}` : ''}`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  }
  if (failure !== undefined) throw failure as Error;
}
