// Accepts connections on TCP or a Unix socket and runs handshake then session on each. All
// connections share the devices of the export registry, which is what makes CAN_MULTI_CONN
// true: a FLUSH on any connection flushes the one shared backend.

import { existsSync, lstatSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import type { Logger } from 'pino';
import { ProtocolError } from './errors.ts';
import { type ExportRegistry, Handshake } from './handshake.ts';
import { DEFAULT_SESSION_LIMITS, Session, type SessionLimits } from './session.ts';
import { ConnectionClosed, SocketReader } from './socket-reader.ts';

export type Endpoint = { readonly host: string; readonly port: number } | { readonly path: string };

export interface ServerOptions {
  readonly exports: ExportRegistry;
  readonly log: Logger;
  readonly limits?: SessionLimits;
}

export class NbdServer {
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  private readonly sessions = new Set<Session>();
  private shuttingDown = false;
  private nextConnectionId = 1;
  private readonly options: ServerOptions;

  constructor(options: ServerOptions) {
    this.options = options;
    this.server = net.createServer((socket) => void this.handle(socket));
  }

  /** Starts listening; resolves with the address actually bound (useful with port 0). */
  async listen(endpoint: Endpoint): Promise<string> {
    if ('path' in endpoint) await removeStaleSocket(endpoint.path);
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      const done = (): void => {
        this.server.off('error', reject);
        resolve();
      };
      if ('path' in endpoint) this.server.listen(endpoint.path, done);
      else this.server.listen(endpoint.port, endpoint.host, done);
    });
    const addr = this.server.address();
    return typeof addr === 'string' || addr === null ? String(addr) : `${addr.address}:${addr.port}`;
  }

  get connectionCount(): number {
    return this.sockets.size;
  }

  /**
   * Stops accepting connections, answers new requests with ESHUTDOWN, and waits up to
   * `graceMs` for requests in flight to finish before closing every connection.
   */
  async shutdown(graceMs: number): Promise<void> {
    this.shuttingDown = true;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const session of this.sessions) session.beginShutdown();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => { timer = setTimeout(resolve, graceMs); });
    await Promise.race([Promise.all([...this.sessions].map((s) => s.drained())), timeout]);
    clearTimeout(timer);
    for (const socket of this.sockets) socket.destroy();
    await closed;
  }

  private async handle(socket: net.Socket): Promise<void> {
    const log = this.options.log.child({ conn: this.nextConnectionId++ });
    this.sockets.add(socket);
    socket.setNoDelay(true);
    socket.on('close', () => this.sockets.delete(socket));
    log.debug({ remote: socket.remoteAddress ?? 'unix' }, 'connection opened');
    const reader = new SocketReader(socket);
    let session: Session | undefined;
    try {
      if (this.shuttingDown) {
        socket.destroy();
        return;
      }
      const negotiated = await new Handshake(socket, reader, this.options.exports, () => this.shuttingDown).run();
      if (!negotiated) {
        socket.end();
        return;
      }
      log.debug({ export: negotiated.export.name, structured: negotiated.structuredReplies }, 'transmission started');
      session = new Session(socket, reader, negotiated, log, this.options.limits ?? DEFAULT_SESSION_LIMITS);
      this.sessions.add(session);
      if (this.shuttingDown) session.beginShutdown();
      await session.run();
      socket.end();
    } catch (err) {
      if (err instanceof ConnectionClosed) log.debug(err.message);
      else if (err instanceof ProtocolError) log.warn({ reason: err.message }, 'ending session: client broke the protocol');
      else log.error({ err }, 'ending session after an unexpected error');
      socket.destroy();
    } finally {
      if (session) this.sessions.delete(session);
      log.debug('connection closed');
    }
  }
}

/** A socket file left by a killed server blocks listen(); remove it unless someone answers on it. */
async function removeStaleSocket(path: string): Promise<void> {
  if (!existsSync(path)) return;
  if (!lstatSync(path).isSocket()) {
    throw Object.assign(new Error(`${path} exists and is not a socket`), { code: 'EEXIST' });
  }
  const alive = await new Promise<boolean>((resolve) => {
    const probe = net.connect(path);
    probe.once('connect', () => { probe.destroy(); resolve(true); });
    probe.once('error', () => resolve(false));
  });
  if (alive) throw Object.assign(new Error(`another server is listening on ${path}`), { code: 'EADDRINUSE' });
  unlinkSync(path);
}
