// The admin endpoint (--admin-listen): health, readiness, Prometheus metrics, each volume's live
// status, the admin API of a gateway serving a store prefix, and the status page. It sees the
// gateway only through a GatewayView (gateway-view.ts). Routes and JSON shapes: docs/monitoring.md.
//
// A bad request gets its status code and a JSON error and changes nothing; a handler that
// throws unexpectedly answers 500 and is logged; the server stays up either way. With a token,
// every route but /healthz and the status page's static files wants "Authorization: Bearer".

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { isIP } from 'node:net';
import type { Logger } from 'pino';
import { parseSize } from '../cli/parse.ts';
import type { GatewayView, VolumeView } from './gateway-view.ts';
import { authorized, errorAnswer, httpErrors, readJsonBody, sendJson } from './admin-http.ts';
import { gatewayReadiness } from './readiness-report.ts';
import { sendStatic, STATUS_PAGE_DIR } from './static-files.ts';
import type { AdminConfig } from './admin-config.ts';

/** What /metrics serves (service/metrics.ts). */
export interface MetricsSource {
  readonly contentType: string;
  render(): Promise<string>;
}

export interface AdminServerOptions {
  readonly gateway: GatewayView;
  readonly metrics?: MetricsSource | undefined;
  readonly log: Logger;
  /** `s3nbd --version`'s text. */
  readonly version: string;
  /** Default: the status page beside this module. */
  readonly staticDir?: string;
}

/** Slow clients are cut off: nothing the endpoint answers takes long to ask. */
const REQUEST_TIMEOUT_MS = 30_000;
const HEADERS_TIMEOUT_MS = 10_000;

export class AdminServer {
  readonly address: string;
  private readonly server: Server;

  private constructor(server: Server, address: string) {
    this.server = server;
    this.address = address;
  }

  static async listen(config: AdminConfig, options: AdminServerOptions): Promise<AdminServer> {
    const startedAt = Date.now();
    const server = createServer({ requestTimeout: REQUEST_TIMEOUT_MS, headersTimeout: HEADERS_TIMEOUT_MS }, (req, res) => {
      handle(req, res, config, options, startedAt).catch((err: unknown) => {
        const answer = errorAnswer(err);
        if (!answer) options.log.error({ err, method: req.method, path: (req.url ?? '').split('?')[0] }, 'admin endpoint: request failed');
        if (res.headersSent) {
          res.destroy();
          return;
        }
        const { status, body, headers } = answer ?? { status: 500, body: { error: { code: 'S3NBD_ADMIN_INTERNAL', message: 'internal error (see the gateway log)', fix: 'look at the gateway log' } }, headers: {} };
        // The body of a refused request may not have been read: close the connection after the answer.
        sendJson(res, status, body, { ...headers, connection: 'close' });
      });
    });
    server.keepAliveTimeout = 5_000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(config.port, config.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('clientError', (_err, socket) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
      else socket.destroy();
    });
    const { address, port } = server.address() as AddressInfo;
    return new AdminServer(server, isIP(address) === 6 ? `[${address}]:${port}` : `${address}:${port}`);
  }

  /** Stops listening and ends every connection, idle or not. */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    await closed;
  }
}

const GET = ['GET', 'HEAD'] as const;

function only(req: IncomingMessage, allow: readonly string[]): void {
  if (!allow.includes(req.method ?? '')) throw httpErrors.methodNotAllowed(req.method ?? '', allow);
}

/** Without a token: a Host header other than an IP address or localhost is a DNS-rebinding page's. */
function checkHost(req: IncomingMessage): void {
  const host = req.headers.host ?? '';
  const name = /^\[([^\]]+)\](?::\d+)?$/.exec(host)?.[1] ?? host.replace(/:\d+$/, '');
  if (name !== 'localhost' && isIP(name) === 0) throw httpErrors.badHost(host);
}

function volumeNamed(gateway: GatewayView, name: string): VolumeView {
  const volume = gateway.volumes().find((v) => v.name === name);
  if (!volume) throw httpErrors.noVolume(name);
  return volume;
}

/** A path segment's name; a malformed %-escape is the client's mistake, not a 500. */
function nameOf(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw httpErrors.badField('name', 'in the path is not valid percent-encoding', '/api/volumes/vm1');
  }
}

function sizeField(body: Record<string, unknown>, field: string): number {
  const value = body[field];
  if (typeof value === 'number' && Number.isSafeInteger(value) && value > 0) return value;
  if (typeof value === 'string') return parseSize(`"${field}"`, value);
  throw httpErrors.badField(field, 'must be a size: a number of bytes or a string such as "10G"', `{"${field}": "10G"}`);
}

async function handle(req: IncomingMessage, res: ServerResponse, config: AdminConfig, options: AdminServerOptions, startedAt: number): Promise<void> {
  const { gateway } = options;
  const path = new URL(req.url ?? '/', 'http://admin').pathname;
  if (path === '/healthz') {
    only(req, GET);
    sendJson(res, 200, { status: 'ok' });
    return;
  }
  if (config.token === undefined) checkHost(req);
  // The page's files hold no data; the page asks for the token and sends it with its requests.
  if ((req.method === 'GET' || req.method === 'HEAD') && !path.startsWith('/api/')) {
    const name = path === '/' ? 'index.html' : path.slice(1);
    if (!['readyz', 'metrics'].includes(name) && await sendStatic(res, options.staticDir ?? STATUS_PAGE_DIR, name)) return;
  }
  if (config.token !== undefined && !authorized(req, config.token)) throw httpErrors.unauthorized();
  if (path === '/readyz') {
    only(req, GET);
    const report = await gatewayReadiness(gateway);
    sendJson(res, report.ready ? 200 : 503, report);
    return;
  }
  if (path === '/metrics') {
    only(req, GET);
    if (!options.metrics) throw httpErrors.notFound(path);
    const text = await options.metrics.render();
    res.writeHead(200, { 'content-type': options.metrics.contentType, 'cache-control': 'no-store', 'content-length': Buffer.byteLength(text) });
    res.end(text);
    return;
  }
  if (path === '/api/status') {
    only(req, GET);
    sendJson(res, 200, {
      gateway: { version: options.version, pid: process.pid, startedAt: new Date(startedAt).toISOString(), uptimeSeconds: Math.floor((Date.now() - startedAt) / 1000), admin: gateway.admin !== undefined },
      volumes: await Promise.all(gateway.volumes().map((v) => v.status())),
      skipped: gateway.skipped(),
    });
    return;
  }
  if (path === '/api/volumes') {
    only(req, [...GET, 'POST']);
    if (req.method === 'POST') {
      if (!gateway.admin) throw httpErrors.noAdmin();
      const body = await readJsonBody(req);
      if (typeof body.name !== 'string') throw httpErrors.badField('name', 'must be the new volume\'s name', '{"name": "vm1", "size": "10G"}');
      const status = await gateway.admin.create(body.name, sizeField(body, 'size'), body.extentSize === undefined ? undefined : sizeField(body, 'extentSize'));
      sendJson(res, 201, status);
      return;
    }
    sendJson(res, 200, { volumes: await Promise.all(gateway.volumes().map((v) => v.status())), skipped: gateway.skipped() });
    return;
  }
  const resize = /^\/api\/volumes\/([^/]+)\/resize$/.exec(path);
  if (resize) {
    only(req, ['POST']);
    if (!gateway.admin) throw httpErrors.noAdmin();
    const body = await readJsonBody(req);
    sendJson(res, 200, await gateway.admin.resize(nameOf(resize[1]!), sizeField(body, 'size')));
    return;
  }
  const one = /^\/api\/volumes\/([^/]+)$/.exec(path);
  if (one) {
    const name = nameOf(one[1]!);
    only(req, [...GET, 'DELETE']);
    if (req.method === 'DELETE') {
      if (!gateway.admin) throw httpErrors.noAdmin();
      await gateway.admin.delete(name);
      sendJson(res, 200, { deleted: name });
      return;
    }
    sendJson(res, 200, await volumeNamed(gateway, name).status());
    return;
  }
  throw httpErrors.notFound(path);
}
