// The storage stack, assembled in one place, bottom to top:
//
//   ObjectStore         where bytes live: a local directory, memory (and S3 later)
//   ObjectExtentStore   one object per extent; zero extents not stored; read-modify-write
//   ExtentDevice        the byte-addressed BlockDevice the NBD server serves
//
// Each layer implements one small interface (object-store.ts, extent-store.ts, and the
// protocol's block-device.ts), so a new layer (a write-back cache) slots in between.

import type { BlockDevice } from '../protocol/block-device.ts';
import { ExtentDevice } from './extent-device.ts';
import { ObjectExtentStore } from './object-extent-store.ts';
import type { ObjectStore } from './object-store.ts';
import { openObjectStore } from './store-url.ts';
import { type Volume, type VolumeRequest, extentCountOf, openVolume } from './volume.ts';

export interface StorageConfig {
  readonly store: string;
  readonly volume: VolumeRequest;
  readonly readOnly: boolean;
  /** Bytes of extents kept in memory. */
  readonly memoryCacheBytes: number;
}

export interface Storage {
  readonly objects: ObjectStore;
  readonly volume: Volume;
  readonly created: boolean;
  readonly extents: ObjectExtentStore;
  readonly device: BlockDevice;
  close(): Promise<void>;
}

export const DEFAULT_MEMORY_CACHE = 256 * 1024 * 1024;

export async function openStorage(config: StorageConfig): Promise<Storage> {
  const objects = await openObjectStore(config.store);
  try {
    const { volume, created } = await openVolume(objects, config.volume);
    const extents = await ObjectExtentStore.open(objects, {
      extentSize: volume.extentSize,
      extentCount: extentCountOf(volume),
      cacheBytes: config.memoryCacheBytes,
    });
    const device = new ExtentDevice(extents, volume.size, config.readOnly);
    return {
      objects, volume, created, extents, device,
      async close() {
        await extents.close();
        await objects.close();
      },
    };
  } catch (err) {
    await objects.close();
    throw err;
  }
}
