// `s3nbd create` and `s3nbd info`.

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pino } from 'pino';
import { openStorage } from '../storage/stack.ts';
import { formatBytes } from './parse.ts';
import { type StoreOptions, s3OptionsOf } from './store-options.ts';

const quiet = pino({ level: 'silent' });

export async function runCreate(raw: Record<string, unknown>): Promise<void> {
  const opts = raw as unknown as StoreOptions & { size: number; extentSize?: number };
  const storage = await openStorage({
    store: opts.store, s3: s3OptionsOf(opts), log: quiet,
    volume: { mode: 'create', size: opts.size, extentSize: opts.extentSize },
    readOnly: true, memoryCacheBytes: 0,
  });
  await storage.close();
  const { volume } = storage;
  process.stdout.write(`created volume ${volume.id}: ${formatBytes(volume.size)} in ${formatBytes(volume.extentSize)} extents, ${storage.objects.description}\n`);
}

export async function runInfo(raw: Record<string, unknown>): Promise<void> {
  const opts = raw as unknown as StoreOptions & { json?: boolean; cacheDir?: string };
  const storage = await openStorage({ store: opts.store, s3: s3OptionsOf(opts), log: quiet, volume: { mode: 'open' }, readOnly: true, memoryCacheBytes: 0 });
  const { volume } = storage;
  const stored = storage.extents.allocatedCount;
  await storage.close();
  // The running gateway writes its status into its cache directory every few seconds.
  const gateway = opts.cacheDir
    ? await readFile(join(opts.cacheDir, 'status.json'), 'utf8').then((t) => JSON.parse(t) as Record<string, number | string>, () => undefined)
    : undefined;
  const info = {
    store: storage.objects.description,
    id: volume.id,
    size: volume.size,
    extentSize: volume.extentSize,
    extents: Math.ceil(volume.size / volume.extentSize),
    storedExtents: stored,
    storedBytes: stored * volume.extentSize,
    createdAt: volume.createdAt,
    ...(gateway ? { gateway } : {}),
  };
  if (opts.json) {
    process.stdout.write(`${JSON.stringify(info, null, 2)}\n`);
    return;
  }
  const lines = [
    `store:            ${info.store}`,
    `volume id:        ${info.id}`,
    `size:             ${formatBytes(info.size)} (${info.size} bytes)`,
    `extent size:      ${formatBytes(info.extentSize)}`,
    `stored extents:   ${info.storedExtents} of ${info.extents} (${formatBytes(info.storedBytes)})`,
    `created:          ${info.createdAt}`,
  ];
  if (gateway) {
    lines.push(
      `gateway:          pid ${gateway.pid}, status of ${gateway.updatedAt}`,
      `dirty:            ${formatBytes(Number(gateway.dirtyBytes))} in ${gateway.dirtyExtents} extents, ${gateway.pendingDeletes} deletes pending`,
      `uploads:          ${gateway.uploadsInFlight} in flight, ${gateway.uploadedExtents} done, ${gateway.uploadFailures} failed attempts`,
      `disk cache:       ${gateway.cachedExtents} of ${gateway.cacheSlots} slots used`,
      `journal:          ${formatBytes(Number(gateway.journalBytes))}`,
    );
  } else if (opts.cacheDir) {
    lines.push(`gateway:          no status in ${opts.cacheDir} (not running, or never ran there)`);
  }
  process.stdout.write(`${lines.join('\n')}\n`);
}
