// A small gateway serving every volume under a directory prefix, for the end-to-end tests of
// the runtime volume operations (`s3nbd volume …` through the control socket, Storage.grow on
// a live device) independently of `serve --volumes`: each volume is opened with its own cache
// directory (<cache-dir>/volumes/<name>), served as export <name> on one Unix socket, and the
// control socket <cache-dir>/control.sock answers the volume.* requests through a VolumeAdmin
// made of openStorage, Storage.grow and the store-level operations. Run as a process:
//
//   node test/helpers/volume-gateway.ts VOLUMES_DIR CACHE_DIR SOCKET
//
// It writes one line `{"msg":"ready",...}` to stderr once it listens, and stops on SIGTERM.

import { join } from 'node:path';
import { pino } from 'pino';
import { listenControl } from '../../src/control/control-socket.ts';
import { formatBytes } from '../../src/cli/parse.ts';
import type { Export } from '../../src/protocol/handshake.ts';
import { NbdServer } from '../../src/protocol/server.ts';
import type { VolumeAdmin, VolumeStatus } from '../../src/service/gateway-view.ts';
import { volumeControl } from '../../src/service/volume-control.ts';
import { checkDeletable, createVolume, deleteVolume, listVolumes, openVolumePrefix } from '../../src/service/volume-ops.ts';
import { type Storage, openStorage } from '../../src/storage/stack.ts';

const [volumesDir, cacheDir, socket] = process.argv.slice(2) as [string, string, string];
const log = pino({ level: 'info' }, pino.destination(2));
const prefix = openVolumePrefix(volumesDir, {}, log);
const served = new Map<string, Storage>();

async function serveVolume(name: string): Promise<Storage> {
  const storage = await openStorage({
    store: prefix.url(name), volume: { mode: 'open' }, readOnly: false, memoryCacheBytes: 64 << 20, log,
    cache: {
      dir: join(cacheDir, 'volumes', name), cacheBytes: 256 << 20, maxDirtyBytes: 64 << 20, uploadConcurrency: 4,
      // Nothing is uploaded before a FLUSH asks: what a test writes without one is only in the
      // journal when it kills the gateway, so the restart must replay it.
      flushMode: 's3', uploadDelayMs: 600_000, leaseTtlMs: 30_000, takeOver: false,
    },
  });
  served.set(name, storage);
  return storage;
}

function statusOf(name: string, storage: Storage): VolumeStatus {
  const { volume } = storage;
  return {
    name, volumeId: volume.id, store: storage.objects.description, size: volume.size, extentSize: volume.extentSize, readOnly: false,
    lease: 'held', connections: 0, storedExtents: storage.extents.allocatedCount, reads: { memory: 0, disk: 0, miss: 0 },
    s3: { requests: 0, errors: 0, retries: 0 }, snapshots: [],
  };
}

const admin: VolumeAdmin = {
  async create(name, size, extentSize) {
    await createVolume(prefix, name, { size, extentSize });
    return statusOf(name, await serveVolume(name));
  },
  async resize(name, size) {
    const storage = served.get(name);
    if (!storage) throw new Error(`volume ${name} is not served`);
    await storage.grow(size);
    log.info({ volume: name, size }, 'volume grown');
    return statusOf(name, storage);
  },
  async delete(name, options) {
    await checkDeletable(prefix, name, options ?? {});
    const storage = served.get(name);
    served.delete(name);
    await storage?.close(10_000);
    await deleteVolume(prefix, name, { log, withSnapshots: options?.withSnapshots });
  },
};

const exportOf = (name: string, storage: Storage): Export => ({
  name, description: `s3nbd volume ${storage.volume.id}, ${formatBytes(storage.volume.size)}`, device: storage.device,
});
const server = new NbdServer({
  log,
  exports: {
    find: (name) => {
      const storage = served.get(name);
      return storage && exportOf(name, storage);
    },
    list: () => [...served].map(([name, storage]) => exportOf(name, storage)),
  },
});
for (const { name, state } of await listVolumes(prefix)) if (state === 'ok') await serveVolume(name);
await server.listen({ path: socket });
const closeControl = await listenControl(cacheDir, volumeControl(admin, () => listVolumes(prefix)), log);
process.on('SIGTERM', () => {
  void (async () => {
    await server.shutdown(1000);
    await closeControl?.();
    for (const storage of served.values()) await storage.close(10_000);
    log.info('stopped');
    log.flush();
  })();
});
log.info({ volumes: [...served.keys()] }, 'ready');
