// `s3nbd serve`: open the storage stack, serve it over NBD, and on SIGINT/SIGTERM stop
// accepting, finish requests in flight, flush, and exit 0.

import type { Command } from 'commander';
import { Errors } from '../errors.ts';
import { createLogger } from '../log.ts';
import type { ExportRegistry } from '../protocol/handshake.ts';
import { type Endpoint, NbdServer } from '../protocol/server.ts';
import { openStorage } from '../storage/stack.ts';
import { MAX_STRING_LENGTH } from '../protocol/constants.ts';
import { formatBytes, parseFlag, parseListen } from './parse.ts';

/** How long a shutdown waits for requests in flight before closing connections anyway. */
const SHUTDOWN_GRACE_MS = 30_000;

interface ServeOptions {
  store: string;
  size?: number;
  extentSize?: number;
  listen: string;
  socket?: string;
  exportName: string;
  readOnly?: boolean;
  memoryCache: number;
  logLevel: string;
}

export async function runServe(raw: Record<string, unknown>, cmd: Command): Promise<void> {
  const opts = raw as unknown as ServeOptions;
  const log = createLogger(opts.logLevel);
  const readOnly = opts.readOnly ?? parseFlag('S3NBD_READ_ONLY', process.env.S3NBD_READ_ONLY) ?? false;
  if (Buffer.byteLength(opts.exportName) > MAX_STRING_LENGTH) throw Errors.badExportName(opts.exportName);

  // TCP unless only a socket was asked for; both when both were.
  const endpoints: Endpoint[] = [];
  const listenGiven = cmd.getOptionValueSource('listen') !== 'default';
  if (opts.socket !== undefined) endpoints.push({ path: opts.socket });
  if (opts.socket === undefined || listenGiven) endpoints.push(parseListen(opts.listen));

  const storage = await openStorage({
    store: opts.store,
    volume: { mode: 'open-or-create', size: opts.size, extentSize: opts.extentSize },
    readOnly,
    memoryCacheBytes: opts.memoryCache,
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

  // Logged once listening worked, so a failure to listen prints nothing but its one-line error.
  log.info({ store: storage.objects.description, volume: volume.id, size: volume.size, extentSize: volume.extentSize,
    created: storage.created, storedExtents: storage.extents.allocatedCount, addresses, export: exp.name, readOnly },
  storage.created ? 'volume created' : 'volume opened');

  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) {
      log.warn({ signal }, 'second signal: exiting without waiting');
      process.exit(130);
    }
    stopping = true;
    log.info({ signal, connections: server.connectionCount }, 'shutting down: finishing requests in flight');
    void (async () => {
      try {
        await server.shutdown(SHUTDOWN_GRACE_MS);
        await storage.close();
        log.info('stopped cleanly');
        log.flush();
        process.exitCode = 0;
      } catch (err) {
        log.error({ err }, 'shutdown failed');
        log.flush();
        process.exitCode = 1;
      }
    })();
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}
