// `s3nbd volume create|list|resize|delete`: the volumes under a store prefix (--volumes URL,
// docs/volumes.md). When a gateway serving that prefix answers on --cache-dir's control socket,
// it carries the command out (service/volume-control.ts), so it starts or stops serving the
// volume at once and a resize reaches its live device; otherwise the command acts on the
// store (service/volume-ops.ts), holding the volume's lease for a resize or a delete, which a
// gateway that holds it but does not answer makes it refuse (S3NBD_VOLUME_IN_USE).

import { pino } from 'pino';
import { type ControlRequest, callGateway } from '../control/control-socket.ts';
import { Errors, UserError } from '../errors.ts';
import type { VolumeStatus } from '../service/gateway-view.ts';
import {
  type VolumeListing, type VolumePrefix, createVolume, deleteVolume, listVolumes, openVolumePrefix, resizeVolume,
} from '../service/volume-ops.ts';
import { openObjectStore } from '../storage/objects/store-url.ts';
import { explain } from '../storage/stack.ts';
import { checkGeometry } from '../storage/volume/volume.ts';
import { checkVolumeName } from '../storage/volume/volume-names.ts';
import { formatBytes } from './parse.ts';
import { type ObjectOptions, type StoreOptions, objectRequestOf, s3OptionsOf } from './store-options.ts';

const quiet = pino({ level: 'silent' });

interface VolumeOptions extends Omit<StoreOptions, 'store'>, ObjectOptions {
  volumes: string;
  cacheDir: string;
  leaseTtl: number;
  size?: number;
  extentSize?: number;
  json?: boolean;
  withSnapshots?: boolean;
  force?: boolean;
}

/** The gateway on --cache-dir's answer, or undefined when none listens there. */
async function viaGateway<T>(opts: VolumeOptions, request: ControlRequest): Promise<T | undefined> {
  try {
    return await callGateway(opts.cacheDir, request) as T | undefined;
  } catch (err) {
    // A gateway serving one volume (--store) knows no volume.* requests.
    if (!(err instanceof UserError) && err instanceof Error && /unknown control request/.test(err.message)) throw Errors.notVolumesGateway(opts.cacheDir);
    throw err;
  }
}

/** Runs `work` on the store prefix, and explains what fails there as serve would (credentials, endpoint, …). */
async function onPrefix<T>(opts: VolumeOptions, work: (prefix: VolumePrefix) => Promise<T>): Promise<T> {
  const s3 = s3OptionsOf({ ...opts, store: opts.volumes });
  const prefix = openVolumePrefix(opts.volumes, s3, quiet);
  try {
    return await work(prefix);
  } catch (err) {
    throw await explain(err, { store: opts.volumes, s3 }, openObjectStore(opts.volumes, s3), false);
  } finally {
    await prefix.close();
  }
}

function sizeOf(opts: VolumeOptions): number {
  if (opts.size === undefined) throw Errors.badSize('--size', '');
  checkGeometry(opts.size, opts.extentSize);
  return opts.size;
}

function say(opts: VolumeOptions, json: unknown, text: string): void {
  process.stdout.write(opts.json ? `${JSON.stringify(json)}\n` : `${text}\n`);
}

export async function runVolumeCreate(name: string, raw: Record<string, unknown>): Promise<void> {
  const opts = raw as unknown as VolumeOptions;
  checkVolumeName(name);
  const size = sizeOf(opts);
  const request = { op: 'volume.create', name, size, ...opts.extentSize === undefined ? {} : { extentSize: opts.extentSize } };
  const status = await viaGateway<VolumeStatus>(opts, request);
  if (status) {
    say(opts, status, `created volume ${name}: ${formatBytes(status.size)}, id ${status.volumeId}, served by the gateway on ${opts.cacheDir}`);
    return;
  }
  const objects = await objectRequestOf(opts);
  const volume = await onPrefix(opts, (prefix) => createVolume(prefix, name, { size, extentSize: opts.extentSize, objects }));
  say(opts, { name, volumeId: volume.id, size: volume.size, extentSize: volume.extentSize },
    `created volume ${name}: ${formatBytes(volume.size)}, id ${volume.id} (no gateway on ${opts.cacheDir} serves it yet)`);
}

export async function runVolumeResize(name: string, raw: Record<string, unknown>): Promise<void> {
  const opts = raw as unknown as VolumeOptions;
  checkVolumeName(name);
  const size = sizeOf(opts);
  const status = await viaGateway<VolumeStatus>(opts, { op: 'volume.resize', name, size });
  if (status) {
    say(opts, status, `volume ${name} is ${formatBytes(status.size)} (${status.size} bytes); new connections see the new size`);
    return;
  }
  const volume = await onPrefix(opts, (prefix) => resizeVolume(prefix, name, size, { log: quiet, leaseTtlMs: opts.leaseTtl * 1000 }));
  say(opts, { name, volumeId: volume.id, size: volume.size, extentSize: volume.extentSize }, `volume ${name} is ${formatBytes(volume.size)} (${volume.size} bytes)`);
}

export async function runVolumeDelete(name: string, raw: Record<string, unknown>): Promise<void> {
  const opts = raw as unknown as VolumeOptions;
  checkVolumeName(name);
  const withSnapshots = opts.withSnapshots === true;
  const asked = await viaGateway<unknown>(opts, { op: 'volume.delete', name, withSnapshots, force: opts.force === true });
  if (asked !== undefined) {
    say(opts, { name, deleted: true }, `deleted volume ${name} (the gateway on ${opts.cacheDir} stopped serving it)`);
    return;
  }
  const s3 = s3OptionsOf({ ...opts, store: opts.volumes });
  const objects = await onPrefix(opts, (prefix) => deleteVolume(prefix, name, { log: quiet, leaseTtlMs: opts.leaseTtl * 1000, withSnapshots, s3 }));
  say(opts, { name, deleted: true, objects }, `deleted volume ${name} (${objects} objects)`);
}

export async function runVolumeList(raw: Record<string, unknown>): Promise<void> {
  const opts = raw as unknown as VolumeOptions;
  const volumes = await viaGateway<VolumeListing[]>(opts, { op: 'volume.list' }) ?? await onPrefix(opts, listVolumes);
  if (opts.json) {
    process.stdout.write(`${JSON.stringify(volumes)}\n`);
    return;
  }
  if (volumes.length === 0) {
    process.stdout.write(`no volumes in ${opts.volumes}\n`);
    return;
  }
  const rows = volumes.map((v) => [
    v.name, v.size === undefined ? '-' : formatBytes(v.size), v.id ?? '-', v.snapshots === undefined ? '-' : String(v.snapshots),
    v.lease ? `${v.lease.owner} on ${v.lease.host}` : '-', v.state === 'ok' ? '' : v.error ?? v.state,
  ]);
  const header = ['NAME', 'SIZE', 'ID', 'SNAPSHOTS', 'LEASE HELD BY', ''];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  for (const row of [header, ...rows]) process.stdout.write(`${row.map((cell, i) => cell.padEnd(widths[i]!)).join('  ').trimEnd()}\n`);
}
