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

import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import { Errors } from '../errors.ts';
import { createLogger } from '../log.ts';
import { MAX_STRING_LENGTH } from '../protocol/constants.ts';
import type { ExportRegistry } from '../protocol/handshake.ts';
import { type Endpoint, NbdServer } from '../protocol/server.ts';
import { writeAtomically } from '../storage/cache-dir.ts';
import { MemoryObjectStore } from '../storage/memory-object-store.ts';
import { openStorage, s3ConnectionsFor } from '../storage/stack.ts';
import { bufferBudgetBytes, governMemory, PER_CONNECTION_BYTES } from '../memory-budget.ts';
import { formatBytes, parseFlag, parseListen } from './parse.ts';
import { type StoreOptions, s3OptionsOf } from './store-options.ts';

/** How long a shutdown waits for requests in flight before closing connections anyway (at most the drain timeout). */
const SHUTDOWN_GRACE_MS = 30_000;
/** A shutdown exits at the latest this long after --drain-timeout has run out. */
export const SHUTDOWN_MARGIN_MS = 5_000;
export const EXIT_FENCED = 3;
export const EXIT_JOURNAL_FAILED = 4;
const STATUS_INTERVAL_MS = 2_000;

interface ServeOptions extends StoreOptions {
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
}

export async function runServe(raw: Record<string, unknown>, cmd: Command): Promise<void> {
  const opts = raw as unknown as ServeOptions;
  const log = createLogger(opts.logLevel);
  const readOnly = opts.readOnly ?? parseFlag('S3NBD_READ_ONLY', process.env.S3NBD_READ_ONLY) ?? false;
  const takeOver = opts.takeOver ?? parseFlag('S3NBD_TAKE_OVER', process.env.S3NBD_TAKE_OVER) ?? false;
  if (Buffer.byteLength(opts.exportName) > MAX_STRING_LENGTH) throw Errors.badExportName(opts.exportName);

  // TCP unless only a socket was asked for; both when both were.
  const endpoints: Endpoint[] = [];
  const listenGiven = cmd.getOptionValueSource('listen') !== 'default';
  if (opts.socket !== undefined) endpoints.push({ path: opts.socket });
  if (opts.socket === undefined || listenGiven) endpoints.push(parseListen(opts.listen));

  let stop: (reason: string, exitCode: number) => void = () => undefined;
  let stopping = false;
  // Told at once and stopped soon after (in a later tick: openStorage may still be running),
  // unless a shutdown is already under way (then it only changes the exit status).
  let journalFailed: Error | undefined;
  const storage = await openStorage({
    store: opts.store,
    s3: { ...s3OptionsOf(opts), readTimeoutMs: opts.readTimeout * 1000 },
    volume: { mode: 'open-or-create', size: opts.size, extentSize: opts.extentSize },
    readOnly,
    memoryCacheBytes: opts.memoryCache,
    cache: {
      dir: opts.cacheDir, cacheBytes: opts.cacheSize, maxDirtyBytes: opts.maxDirty, uploadConcurrency: opts.uploadConcurrency,
      flushMode: opts.flushMode, uploadDelayMs: opts.uploadDelay, leaseTtlMs: opts.leaseTtl * 1000, takeOver,
    },
    log,
    onFenced: () => stop('fenced off by another gateway', EXIT_FENCED),
    onJournalFailed: (err) => {
      journalFailed = err;
      setImmediate(() => { if (!stopping) stop('the journal failed', EXIT_JOURNAL_FAILED); });
    },
  });
  const { volume } = storage;

  const exp = {
    name: opts.exportName,
    description: `s3nbd volume ${volume.id}, ${formatBytes(volume.size)}`,
    device: storage.device,
  };
  const exports: ExportRegistry = {
    find: (name) => (name === '' || name === exp.name ? exp : undefined),
    list: () => [exp],
  };
  const server = new NbdServer({ exports, log });
  // Garbage Buffers are collected once all Buffers pass what the options allow (memory-budget.ts).
  const buffers = bufferBudgetBytes({
    memoryCacheBytes: opts.memoryCache, extentSize: volume.extentSize, uploadConcurrency: opts.uploadConcurrency,
    s3Connections: /^s3:\/\//i.test(opts.store) ? s3ConnectionsFor(opts.uploadConcurrency) : 0, inFlightBytes: server.inFlight.limit,
  }) + (storage.objects instanceof MemoryObjectStore ? volume.size : 0); // the volatile store is Buffers too
  governMemory(() => buffers + server.connectionCount * PER_CONNECTION_BYTES, log);
  const addresses: string[] = [];
  for (const endpoint of endpoints) {
    try {
      addresses.push(await server.listen(endpoint));
    } catch (err) {
      await server.shutdown(0);
      await storage.close();
      throw Errors.listenFailed('path' in endpoint ? endpoint.path : `${endpoint.host}:${endpoint.port}`, (err as Error).message);
    }
  }

  // What the gateway is doing, for `s3nbd info --cache-dir`.
  const statusPath = join(opts.cacheDir, 'status.json');
  const statusTimer = storage.cache && setInterval(() => {
    const status = { pid: process.pid, updatedAt: new Date().toISOString(), ...storage.cache!.status() };
    writeAtomically(statusPath, `${JSON.stringify(status)}\n`).catch(() => undefined);
  }, STATUS_INTERVAL_MS);
  statusTimer?.unref();

  // Logged once listening worked, so a failure to listen prints nothing but its one-line error.
  log.info({ store: storage.objects.description, volume: volume.id, size: volume.size, extentSize: volume.extentSize,
    created: storage.created, storedExtents: storage.extents.allocatedCount, addresses, export: exp.name, readOnly,
    writeBack: storage.cache ? { cacheDir: opts.cacheDir, flushMode: opts.flushMode, maxDirty: opts.maxDirty } : false },
  storage.created ? 'volume created' : 'volume opened');

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
        clearInterval(statusTimer);
        const drained = await storage.close(Math.max(0, deadline - Date.now()));
        await rm(statusPath, { force: true });
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
}
