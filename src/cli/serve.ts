// `s3nbd serve`: open the storage stack, serve it over NBD, and on SIGINT/SIGTERM stop
// accepting, finish requests in flight, upload dirty data, and exit 0, all within
// --drain-timeout (plus SHUTDOWN_MARGIN_MS at most), whatever S3 does: systemd and
// `docker stop` kill a process that takes longer, and nothing is gained by waiting, since the
// journal keeps what was not uploaded.
//
// Exit statuses: 0 stopped by a signal (everything uploaded, or the drain timed out and the
// journal keeps the rest); 1 an unexpected error; 2 a user error (one line with its code);
// 3 fenced off by another gateway; 4 the journal failed (a failed fsync or a write error of the
// cache disk); 130 a second signal.

import { hostname } from 'node:os';
import type { Command } from 'commander';
import { Errors, type UserError } from '../errors.ts';
import { createLogger } from '../log.ts';
import { MAX_STRING_LENGTH } from '../protocol/constants.ts';
import type { ExportRegistry } from '../protocol/handshake.ts';
import { type Endpoint, NbdServer } from '../protocol/server.ts';
import { loadTls, type TlsMode } from '../protocol/tls.ts';
import { explainLocalError } from '../storage/first-run-errors.ts';
import { governMemory, PER_CONNECTION_BYTES } from '../memory-budget.ts';
import { elasticMemoryTakenBack, resizeElasticMemory } from '../storage/extents/extent-memory.ts';
import { controlSocketPath } from '../control/control-socket.ts';
import { hasRules } from '../storage/snapshots/retention.ts';
import { ServedVolume } from '../service/served-volume.ts';
import { VolumeSet } from '../service/volume-set.ts';
import { adminConfigOf } from '../service/admin-config.ts';
import { listenAdmin } from '../service/admin-start.ts';
import { OpeningGateway, volumeLabel } from '../service/volume-view.ts';
import { realClock } from '../clock.ts';
import { connectHint } from './connect-hint.ts';
import { withDrainProgress } from './drain-progress.ts';
import { activatedEndpoints } from './socket-activation.ts';
import { parseDuration, parseFlag, parseListen } from './parse.ts';
import { policyOf } from './prune.ts';
import { checkSnapshotName } from '../storage/snapshots/manifest.ts';
import { describeObjectSettings } from '../storage/format/object-settings.ts';
import { type ObjectOptions, objectRequestOf, type StoreOptions, s3OptionsOf } from './store-options.ts';

/** How long a shutdown waits for requests in flight before closing connections anyway (at most the drain timeout). */
const SHUTDOWN_GRACE_MS = 30_000;
/** A shutdown exits at the latest this long after --drain-timeout has run out. */
export const SHUTDOWN_MARGIN_MS = 5_000;
export const EXIT_FENCED = 3;
export const EXIT_JOURNAL_FAILED = 4;

interface ServeOptions extends StoreOptions, ObjectOptions {
  /** Serve every volume under this prefix (in place of --store). */
  volumes?: string;
  maxVolumes: number;
  size?: number;
  extentSize?: number;
  listen: string;
  socket?: string;
  exportName: string;
  readOnly?: boolean;
  cacheDir: string;
  cacheSize: number;
  maxDirty: number;
  memoryCache: number;
  uploadConcurrency: number;
  flushMode: 's3' | 'local';
  drainTimeout: number;
  readTimeout: number;
  takeOver?: boolean;
  leaseTtl: number;
  uploadDelay: number;
  logLevel: string;
  logFormat: string;
  snapshot?: string;
  tls: TlsMode;
  tlsCertificates?: string;
  tlsPsk?: string;
  tlsVerifyPeer?: boolean;
  snapshotEvery?: string;
  keepLast?: number;
  keepHourly?: number;
  keepDaily?: number;
  keepWeekly?: number;
  keepMonthly?: number;
  adminListen?: string;
  adminTokenFile?: string;
}

/** The shortest --snapshot-every; S3NBD_TEST_SHORT_SNAPSHOT_EVERY=1 (tests only) allows a second. */
const MIN_SNAPSHOT_EVERY_MS = 60_000;

/** --snapshot-every in ms (undefined: none), refused where it cannot work; before anything is opened. */
function snapshotSchedule(opts: ServeOptions, readOnly: boolean): number | undefined {
  const keeps = hasRules(policyOf(opts));
  if (opts.snapshotEvery === undefined) {
    if (keeps) throw Errors.badSnapshotSchedule('--keep-* options were given without --snapshot-every');
    return undefined;
  }
  const min = process.env.S3NBD_TEST_SHORT_SNAPSHOT_EVERY === '1' ? 1000 : MIN_SNAPSHOT_EVERY_MS;
  const everyMs = parseDuration('--snapshot-every', opts.snapshotEvery, min);
  if (readOnly) throw Errors.badSnapshotSchedule(opts.snapshot !== undefined ? 'serving a snapshot (--snapshot) writes nothing' : '--read-only writes nothing');
  if (opts.store === 'memory:') throw Errors.badSnapshotSchedule('a memory: store keeps no snapshots past the process');
  return everyMs;
}

/**
 * --volumes (or S3NBD_VOLUMES), refused with the options that name one volume: one gateway
 * serves either one volume (--store) or every volume under a prefix. S3NBD_STORE alone is
 * ignored: the container image sets it as its default.
 */
function volumesOf(opts: ServeOptions, cmd: Command): string | undefined {
  if (opts.volumes === undefined) return undefined;
  const given = (name: string): boolean => cmd.getOptionValueSource(name) !== undefined && cmd.getOptionValueSource(name) !== 'default';
  if (cmd.getOptionValueSource('store') === 'cli') throw Errors.conflictingOptions('--volumes', '--store');
  for (const [name, flag] of [['size', '--size'], ['snapshot', '--snapshot'], ['exportName', '--export-name']] as const) {
    if (given(name)) throw Errors.conflictingOptions('--volumes', flag);
  }
  return opts.volumes;
}

export async function runServe(raw: Record<string, unknown>, cmd: Command): Promise<void> {
  const opts = raw as unknown as ServeOptions;
  const volumesUrl = volumesOf(opts, cmd);
  const log = createLogger(opts.logLevel, opts.logFormat);
  // A snapshot is served alone and read-only: no cache directory, no lease.
  if (opts.snapshot !== undefined) checkSnapshotName(opts.snapshot);
  const readOnly = opts.snapshot !== undefined || (opts.readOnly ?? parseFlag('S3NBD_READ_ONLY', process.env.S3NBD_READ_ONLY) ?? false);
  const takeOver = opts.takeOver ?? parseFlag('S3NBD_TAKE_OVER', process.env.S3NBD_TAKE_OVER) ?? false;
  if (Buffer.byteLength(opts.exportName) > MAX_STRING_LENGTH) throw Errors.badExportName(opts.exportName);
  // The key is read (and S3NBD_PASSPHRASE dropped from the environment) before anything else.
  const objectRequest = await objectRequestOf(opts);
  // Credentials are read and checked before anything listens or touches the store.
  const verifyPeer = opts.tlsVerifyPeer ?? parseFlag('S3NBD_TLS_VERIFY_PEER', process.env.S3NBD_TLS_VERIFY_PEER) ?? false;
  const tls = await loadTls({
    mode: opts.tls, modeGiven: cmd.getOptionValueSource('tls') !== 'default', certificates: opts.tlsCertificates, psk: opts.tlsPsk, verifyPeer,
  });
  if (tls?.auth === 'psk' && (opts.tlsCertificates !== undefined || verifyPeer)) {
    log.warn('--tls-psk overrides --tls-certificates and --tls-verify-peer (as in nbdkit): clients authenticate with a pre-shared key');
  }
  const snapshotEveryMs = snapshotSchedule(opts, readOnly);
  // The admin endpoint's address and token are checked before anything listens.
  const adminConfig = await adminConfigOf(opts.adminListen, opts.adminTokenFile, process.env);

  // The sockets systemd passed (socket activation); else TCP unless only a socket was asked
  // for, both when both were.
  const listenGiven = cmd.getOptionValueSource('listen') !== 'default';
  const endpoints: Endpoint[] = activatedEndpoints(explicitListenOptions(cmd));
  if (endpoints.length === 0 && opts.socket !== undefined) endpoints.push({ path: opts.socket });
  if (endpoints.length === 0 || (opts.socket !== undefined && listenGiven)) endpoints.push(parseListen(opts.listen));

  // Listening comes first: a start refused because the address or socket cannot be used then
  // has touched no storage (no volume created, no lease taken). Connections that arrive while
  // the storage opens wait for their greeting until it is ready.
  // Until the storage is open, no export; then the volume's and its snapshots' (GatewayExports),
  // or with --volumes every volume's (VolumeSet).
  const served: { exports?: ExportRegistry } = {};
  const exports: ExportRegistry = {
    find: (name) => served.exports?.find(name),
    list: () => served.exports?.list() ?? [],
  };
  let ready: (ok: boolean) => void = () => undefined;
  const server = new NbdServer({ exports, log, tls, ready: new Promise<boolean>((resolve) => { ready = resolve; }) });
  const addresses: string[] = [];
  for (const endpoint of endpoints) {
    try {
      addresses.push(await server.listen(endpoint));
    } catch (err) {
      ready(false);
      await server.shutdown(0);
      throw await listenError(endpoint, err);
    }
  }
  // The admin endpoint listens now too, and shows the volume (or the prefix) as opening until it is open.
  const label = volumeLabel(opts.snapshot === undefined ? opts.exportName : `${opts.exportName}@${opts.snapshot}`);
  const view = new OpeningGateway(volumesUrl ?? label);
  // prom-client is loaded only for the admin endpoint: about 20 MiB of resident memory otherwise unused.
  const metrics = adminConfig && new (await import('../service/metrics.ts')).Metrics({ gateway: view });
  let admin: Awaited<ReturnType<typeof listenAdmin>> | undefined;
  try {
    admin = adminConfig && await listenAdmin(adminConfig, { gateway: view, metrics, log });
  } catch (err) {
    ready(false);
    await server.shutdown(0);
    throw err;
  }

  let stop: (reason: string, exitCode: number) => void = () => undefined;
  let stopping = false;
  // Told at once and stopped soon after (in a later tick: openStorage may still be running),
  // unless a shutdown is already under way (then it only changes the exit status).
  let journalFailed: Error | undefined;
  const s3 = { ...s3OptionsOf(opts), readTimeoutMs: opts.readTimeout * 1000 };
  const cache = { flushMode: opts.flushMode, uploadDelayMs: opts.uploadDelay, leaseTtlMs: opts.leaseTtl * 1000, takeOver };
  const totals = { memoryCacheBytes: opts.memoryCache, cacheBytes: opts.cacheSize, maxDirtyBytes: opts.maxDirty, uploadConcurrency: opts.uploadConcurrency };
  const autoSnapshots = snapshotEveryMs !== undefined ? { everyMs: snapshotEveryMs, policy: policyOf(opts) } : undefined;
  let gateway: ServedVolume | VolumeSet;
  try {
    if (volumesUrl !== undefined) {
      // Each volume's cache directory is volumes/<name> in --cache-dir; the gateway's control socket is in it.
      gateway = await VolumeSet.open({
        url: volumesUrl, s3, objects: objectRequest, readOnly, totals, maxVolumes: opts.maxVolumes, cacheDir: opts.cacheDir, cache, autoSnapshots, log, metrics,
      });
    } else {
      gateway = await ServedVolume.open({
        name: opts.exportName, store: opts.store, s3, volume: { mode: 'open-or-create', size: opts.size, extentSize: opts.extentSize },
        objects: objectRequest, readOnly, snapshot: opts.snapshot, budgets: totals, cache: { ...cache, dir: opts.cacheDir }, answersDefault: true, autoSnapshots, log,
        telemetry: metrics?.forVolume(label),
        onFenced: () => stop('fenced off by another gateway', EXIT_FENCED),
        onJournalFailed: (err) => {
          journalFailed = err;
          setImmediate(() => { if (!stopping) stop('the journal failed', EXIT_JOURNAL_FAILED); });
        },
      });
    }
  } catch (err) {
    ready(false);
    await server.shutdown(0);
    await admin?.close();
    throw err;
  }
  served.exports = gateway.exports;
  const opened = gateway;
  view.opened(opened instanceof VolumeSet ? opened : { volumes: () => [opened], skipped: () => [] });
  // Garbage Buffers are collected once all Buffers pass what the options allow, or what keeps
  // RSS near --memory-cache + its headroom, and the memory caches give room to live ones
  // (memory-budget.ts).
  governMemory(() => opened.bufferBytes(server.inFlight.limit) + server.connectionCount * PER_CONNECTION_BYTES, log, undefined,
    { cacheBytes: () => opened.memoryCacheBytes(), resize: resizeElasticMemory, takenBack: elasticMemoryTakenBack });
  ready(true);
  // Commands (snapshot create, ...) ask this gateway, which holds the volume, to act; serve
  // --snapshot-every takes snapshots of its own; status.json tells `s3nbd info --cache-dir`.
  if (gateway instanceof ServedVolume) await gateway.start();

  stop = (reason: string, exitCode: number): void => {
    if (stopping) {
      log.warn({ reason }, 'second signal: exiting without waiting (dirty data stays in the journal)');
      process.exit(130);
    }
    stopping = true;
    // Fenced off: another gateway writes the volume now, so nothing may be uploaded. Otherwise
    // the drain gets what is left of --drain-timeout after the requests in flight.
    const drainMs = exitCode === EXIT_FENCED ? 0 : opts.drainTimeout * 1000;
    const deadline = Date.now() + drainMs;
    log.info({ reason, connections: server.connectionCount, drainTimeoutMs: drainMs }, 'shutting down: finishing requests in flight');
    // However the steps below fare (a hung S3, a stuck request), the process ends in time.
    setTimeout(() => {
      log.error({ reason, drainTimeoutMs: drainMs }, 'shutdown took longer than the drain timeout allows: exiting now (the journal keeps what was not uploaded)');
      log.flush(() => process.exit(journalFailed ? EXIT_JOURNAL_FAILED : exitCode));
    }, drainMs + SHUTDOWN_MARGIN_MS).unref();
    void (async () => {
      try {
        await server.shutdown(Math.min(SHUTDOWN_GRACE_MS, Math.max(drainMs, 1000)));
        const drained = await withDrainProgress({ clock: realClock, dirtyBytes: () => opened.dirtyBytes(), log },
          () => opened.close(Math.max(0, deadline - Date.now())));
        // Last: monitoring can watch the drain until it ends (/readyz says "shutting down").
        await admin?.close();
        const code = journalFailed ? EXIT_JOURNAL_FAILED : exitCode;
        log.info({ exitCode: code, drained }, 'stopped');
        process.exitCode = code;
      } catch (err) {
        log.error({ err }, 'shutdown failed');
        process.exitCode = 1;
      }
      log.flush();
    })();
  };
  process.on('SIGINT', () => stop('SIGINT', 0));
  process.on('SIGTERM', () => stop('SIGTERM', 0));

  // Logged once listening worked, so a failure to listen prints nothing but its one-line error;
  // and once the signal handlers are in place: the line can reach a watcher (pino writes it from
  // the thread pool) before the next statement runs, and a SIGTERM sent on seeing it must drain.
  const adminUrl = admin ? { admin: `http://${admin.address}/` } : {};
  const connect = (exportName: string): void => {
    const hint = connectHint({ addresses: server.boundAddresses(), exportName, tls, hostname: hostname() });
    log.info({ connect: { export: hint.export, uris: hint.uris, nbdClient: hint.nbdClient } }, hint.message);
  };
  if (gateway instanceof VolumeSet) {
    log.info({ volumes: volumesUrl, addresses, ...adminUrl, exports: gateway.volumes().map((v) => v.name), skipped: gateway.skipped().map((v) => v.name),
      maxVolumes: opts.maxVolumes, perVolume: gateway.shares, readOnly, tls: tls ? { mode: tls.mode, auth: tls.auth, verifyPeer: tls.verifyPeer } : 'off',
      controlSocket: controlSocketPath(opts.cacheDir) }, 'volumes opened');
    for (const volume of gateway.volumes()) connect(volume.main.name);
    return;
  }
  const { storage } = gateway;
  const { volume } = storage;
  log.info({ store: storage.objects.description, volume: volume.id, size: volume.size, extentSize: volume.extentSize, objects: describeObjectSettings(volume.objects),
    created: storage.created, storedExtents: storage.extents.allocatedCount, addresses, export: gateway.main.name, readOnly, ...adminUrl,
    ...opts.snapshot !== undefined ? { snapshot: opts.snapshot } : {},
    tls: tls ? { mode: tls.mode, auth: tls.auth, verifyPeer: tls.verifyPeer } : 'off',
    writeBack: storage.cache ? { cacheDir: opts.cacheDir, flushMode: opts.flushMode, maxDirty: opts.maxDirty } : false },
  storage.created ? 'volume created' : 'volume opened');
  connect(gateway.main.name);
}

/** --listen and --socket where the user set them (flag or variable), by the name they used. */
function explicitListenOptions(cmd: Command): string[] {
  return (['listen', 'socket'] as const).flatMap((option) => {
    const source = cmd.getOptionValueSource(option);
    if (source === 'cli') return [`--${option}`];
    return source === 'env' ? [`S3NBD_${option.toUpperCase()}`] : [];
  });
}

/** A listen() failure as the user should read it: what is wrong with the address or socket, and the fix. */
async function listenError(endpoint: Endpoint, err: unknown): Promise<UserError> {
  const code = (err as NodeJS.ErrnoException).code;
  const message = err instanceof Error ? err.message : String(err);
  if ('fd' in endpoint) return Errors.socketActivation(`cannot listen on inherited file descriptor ${endpoint.fd}: ${message}`, 'check the ListenStream= lines of the .socket unit');
  if ('path' in endpoint) {
    if (code === 'EADDRINUSE') return Errors.listenFailed(endpoint.path, 'another server is listening on it');
    if (code === 'EEXIST') return Errors.listenFailed(endpoint.path, 'it exists and is not a socket', 'move the file away, or pick another --socket path');
    return await explainLocalError(err, [{ option: '--socket', path: endpoint.path }], endpoint.path) ?? Errors.listenFailed(endpoint.path, message);
  }
  const where = `${endpoint.host}:${endpoint.port}`;
  if (code === 'EADDRINUSE') return Errors.listenFailed(where, 'another server is listening on it');
  if (code === 'EACCES') return Errors.listenFailed(where, 'ports below 1024 need root (EACCES)', 'pick a port above 1023, e.g. --listen 127.0.0.1:10809');
  if (code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
    return Errors.listenFailed(where, `${endpoint.host} is not an address of this machine (${code})`,
      'use one of this machine\'s addresses, 127.0.0.1, or 0.0.0.0 for all of them');
  }
  return Errors.listenFailed(where, message);
}
