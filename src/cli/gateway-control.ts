// What a running gateway does when a command asks it through its control socket
// (src/control/control-socket.ts): the snapshot commands and gc, carried out by the process
// that holds the volume, so that a snapshot includes what only its journal holds yet.

import type { Logger } from 'pino';
import type { ControlHandler } from '../control/control-socket.ts';
import { Errors } from '../errors.ts';
import type { S3Options } from '../storage/objects/store-url.ts';
import { missingClones } from '../storage/snapshots/clone.ts';
import { checkSnapshotName, summaryOf } from '../storage/snapshots/manifest.ts';
import type { Storage } from '../storage/stack.ts';

/** `s3`: the gateway's S3 options, to look for the clones a deletion may forget. */
export function gatewayControl(storage: Storage, log: Logger, s3: S3Options = {}): ControlHandler {
  const { extents, snapshots, objects } = storage;
  return async (request) => {
    switch (request.op) {
      case 'snapshot.create': {
        const name = checkSnapshotName(String(request.name));
        if (await snapshots.load(name)) throw Errors.snapshotExists(objects.description, name);
        const cache = storage.cache;
        if (!cache) throw new Error('only a gateway with a write-back cache listens for control requests');
        const started = Date.now();
        // The cut: every acknowledged write so far, none after; writes go on meanwhile.
        const refs = await cache.snapshot();
        try {
          const references = [...refs].sort(([a], [b]) => a - b).map(([index, generation]) => ({ index, generation }));
          const manifest = await snapshots.create(extents, name, references);
          log.info({ snapshot: name, extents: refs.size, ms: Date.now() - started }, 'snapshot created');
          return summaryOf(manifest);
        } finally {
          cache.releaseSnapshot(refs); // the registry keeps its own count of the objects
        }
      }
      case 'hello':
        return { pid: process.pid };
      case 'snapshot.delete': {
        const name = checkSnapshotName(String(request.name));
        const before = extents.garbage.deleted;
        await snapshots.delete(extents, name, request.forgetMissingClones === true ? (clones) => missingClones(clones, s3, log) : undefined);
        log.info({ snapshot: name }, 'snapshot deleted');
        return extents.garbage.deleted - before;
      }
      case 'gc': {
        const before = extents.garbage.deleted;
        await extents.collectGarbage();
        return { deleted: extents.garbage.deleted - before, tombstonesKept: !extents.knowsEveryObject };
      }
      default:
        throw new Error(`unknown control request ${JSON.stringify(request.op)}`);
    }
  };
}
