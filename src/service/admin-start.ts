// Starting the admin endpoint for `s3nbd serve`: its listen failures as one-line errors naming
// --admin-listen, and its address in the start line.

import type { Logger } from 'pino';
import { Errors } from '../errors.ts';
import { versionText } from '../cli/version.ts';
import type { AdminConfig } from './admin-config.ts';
import { AdminServer, type MetricsSource } from './admin-server.ts';
import type { GatewayView } from './gateway-view.ts';

export async function listenAdmin(config: AdminConfig, options: { gateway: GatewayView; metrics?: MetricsSource; log: Logger }): Promise<AdminServer> {
  try {
    return await AdminServer.listen(config, { ...options, version: versionText() });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const where = `${config.host}:${config.port} (--admin-listen)`;
    const fix = 'pick another --admin-listen port, or stop the server using it';
    if (code === 'EADDRINUSE') throw Errors.listenFailed(where, 'another server is listening on it', fix);
    if (code === 'EACCES') throw Errors.listenFailed(where, 'ports below 1024 need root (EACCES)', 'pick a port above 1023, e.g. --admin-listen 9101');
    if (code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
      throw Errors.listenFailed(where, `${config.host} is not an address of this machine (${code})`, 'use 127.0.0.1, or an address of this machine with --admin-token-file');
    }
    throw Errors.listenFailed(where, err instanceof Error ? err.message : String(err), fix);
  }
}
