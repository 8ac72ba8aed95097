// A VolumeAdmin made of the store-level volume operations alone (service/volume-ops.ts), for
// tests of what calls one (volumeControl, the CLI through a control socket) without a gateway
// serving --volumes: the status it answers is the volume's metadata, with nothing served.

import type { Logger } from 'pino';
import type { VolumeAdmin, VolumeStatus } from '../../src/service/gateway-view.ts';
import { type VolumePrefix, checkDeletable, createVolume, deleteVolume, resizeVolume } from '../../src/service/volume-ops.ts';
import type { Volume } from '../../src/storage/volume/volume.ts';

function statusOf(prefix: VolumePrefix, name: string, volume: Volume): VolumeStatus {
  return {
    name, volumeId: volume.id, store: prefix.url(name), size: volume.size, extentSize: volume.extentSize, readOnly: false,
    lease: 'none', connections: 0, storedExtents: 0, reads: { memory: 0, disk: 0, miss: 0 }, s3: { requests: 0, errors: 0, retries: 0 }, snapshots: [],
  };
}

export function storeVolumeAdmin(prefix: VolumePrefix, log: Logger): VolumeAdmin & { readonly calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    async create(name, size, extentSize) {
      calls.push(`create ${name}`);
      return statusOf(prefix, name, await createVolume(prefix, name, { size, extentSize }));
    },
    async resize(name, size) {
      calls.push(`resize ${name}`);
      return statusOf(prefix, name, await resizeVolume(prefix, name, size, { log }));
    },
    async delete(name, options) {
      calls.push(`delete ${name}`);
      await checkDeletable(prefix, name, options ?? {});
      await deleteVolume(prefix, name, { log, withSnapshots: options?.withSnapshots });
    },
  };
}
