// Deleting a volume's objects, once no gateway serves it (VolumeSet.delete closes it first).
//
// TODO(issue 18, volumeops helper): the store-level delete of `s3nbd volume delete` replaces
// this, with whatever it does about snapshots, clones and Object Lock; VolumeSet calls only
// this function, so the swap is here.

import type { Logger } from 'pino';
import { openObjectStore, type S3Options } from '../storage/objects/store-url.ts';
import { VOLUME_KEY } from '../storage/volume/volume.ts';

const BATCH = 1000;

/**
 * Deletes every object of the volume at `store`, its metadata last: a deletion cut short
 * leaves a volume that is found again at the next start and can be deleted again.
 */
export async function deleteVolumeObjects(store: string, s3: S3Options, log: Logger): Promise<number> {
  const objects = openObjectStore(store, s3, log);
  try {
    let batch: string[] = [];
    let deleted = 0;
    for await (const key of objects.list('')) {
      if (key === VOLUME_KEY) continue;
      batch.push(key);
      if (batch.length === BATCH) {
        await objects.deleteMany(batch);
        deleted += batch.length;
        batch = [];
      }
    }
    await objects.deleteMany([...batch, VOLUME_KEY]);
    await objects.flush();
    return deleted + batch.length + 1;
  } finally {
    await objects.close();
  }
}
