// The volume operations a gateway serving a store prefix (`serve --volumes`) answers on its
// control socket (src/control/control-socket.ts), so that `s3nbd volume create|resize|delete`
// change what it serves at once instead of acting on the store behind its back. The requests:
//
//   {"op":"volume.create","name":"db","size":10737418240,"extentSize":1048576}  → VolumeStatus
//   {"op":"volume.resize","name":"db","size":21474836480}                       → VolumeStatus
//   {"op":"volume.delete","name":"db","withSnapshots":false,"force":false}      → null
//   {"op":"volume.list"}                                                        → VolumeListing[]
//
// Every field is checked here; a bad one is a UserError, which the caller prints as one line.

import type { ControlHandler, ControlRequest } from '../control/control-socket.ts';
import { Errors } from '../errors.ts';
import { checkGeometry } from '../storage/volume/volume.ts';
import type { VolumeAdmin } from './gateway-view.ts';
import { checkVolumeName } from '../storage/volume/volume-names.ts';
import type { VolumeListing } from './volume-ops.ts';

/**
 * `list`: the volumes under the prefix (listVolumes); `next` answers every other op (the
 * gateway's own, e.g. hello), or it is refused as unknown.
 */
export function volumeControl(admin: VolumeAdmin, list: () => Promise<readonly VolumeListing[]>, next?: ControlHandler): ControlHandler {
  return async (request) => {
    switch (request.op) {
      case 'volume.create': {
        const size = sizeOf(request, 'size');
        const extentSize = request.extentSize === undefined ? undefined : sizeOf(request, 'extentSize');
        checkGeometry(size, extentSize);
        return await admin.create(nameOf(request), size, extentSize);
      }
      case 'volume.resize': {
        const size = sizeOf(request, 'size');
        checkGeometry(size, undefined);
        return await admin.resize(nameOf(request), size);
      }
      case 'volume.delete':
        await admin.delete(nameOf(request), { withSnapshots: request.withSnapshots === true, force: request.force === true });
        return null;
      case 'volume.list':
        return await list();
      default:
        if (next) return await next(request);
        throw new Error(`unknown control request ${JSON.stringify(request.op)}`);
    }
  };
}

function nameOf(request: ControlRequest): string {
  return checkVolumeName(typeof request.name === 'string' ? request.name : String(request.name));
}

function sizeOf(request: ControlRequest, field: 'size' | 'extentSize'): number {
  const value = request[field];
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) throw Errors.badSize(field === 'size' ? '--size' : '--extent-size', String(value));
  return value;
}
