// `s3nbd create` and `s3nbd info`.

import { openStorage } from '../storage/stack.ts';
import { formatBytes } from './parse.ts';

export async function runCreate(opts: { store: string; size: number; extentSize?: number }): Promise<void> {
  const storage = await openStorage({
    store: opts.store,
    volume: { mode: 'create', size: opts.size, extentSize: opts.extentSize },
    readOnly: true,
    memoryCacheBytes: 0,
  });
  await storage.close();
  const { volume } = storage;
  process.stdout.write(`created volume ${volume.id}: ${formatBytes(volume.size)} in ${formatBytes(volume.extentSize)} extents, ${storage.objects.description}\n`);
}

export async function runInfo(opts: { store: string; json?: boolean }): Promise<void> {
  const storage = await openStorage({ store: opts.store, volume: { mode: 'open' }, readOnly: true, memoryCacheBytes: 0 });
  const { volume } = storage;
  const stored = storage.extents.allocatedCount;
  await storage.close();
  const info = {
    store: storage.objects.description,
    id: volume.id,
    size: volume.size,
    extentSize: volume.extentSize,
    extents: Math.ceil(volume.size / volume.extentSize),
    storedExtents: stored,
    storedBytes: stored * volume.extentSize,
    createdAt: volume.createdAt,
  };
  if (opts.json) {
    process.stdout.write(`${JSON.stringify(info, null, 2)}\n`);
    return;
  }
  process.stdout.write([
    `store:          ${info.store}`,
    `volume id:      ${info.id}`,
    `size:           ${formatBytes(info.size)} (${info.size} bytes)`,
    `extent size:    ${formatBytes(info.extentSize)}`,
    `stored extents: ${info.storedExtents} of ${info.extents} (${formatBytes(info.storedBytes)})`,
    `created:        ${info.createdAt}`,
  ].join('\n') + '\n');
}
