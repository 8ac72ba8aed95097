// Accepts connections on TCP or a Unix socket and runs handshake then session on each. All
// connections share the devices of the export registry, which is what makes CAN_MULTI_CONN
// true: a FLUSH on any connection flushes the one shared backend.

import { existsSync, lstatSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import type { Logger } from 'pino';
import { LogThrottle } from '../log-throttle.ts';
import { ProtocolError } from './errors.ts';
import { type ExportRegistry, Handshake } from './handshake.ts';
import { DEFAULT_SESSION_LIMITS, Session, type SessionLimits } from './session.ts';
import { ConnectionClosed, SocketReader } from './socket-reader.ts';

/** How long a client must send nothing before a shutting-down server closes its connection. */
const QUIET_MS = 200;
/** At most one line per this interval for each kind of connection or request failure. */
const CONNECTION_LOG_MS = 10_000;

export type Endpoint = { readonly host: string; readonly port: number } | { readonly path: string };

export interface ServerOptions {
  readonly exports: ExportRegistry;
  readonly log: Logger;
  readonly limits?: SessionLimits;
  /**
   * Resolves true once the exports can be served. Until then connections are accepted but wait
   * for their greeting, so that the server can listen before its storage opens (a start whose
   * listen fails then touches no storage); false closes them.
   */
  readonly ready?: Promise<boolean>;
}

export class NbdServer {
  /** One listener per endpoint (a net.Server listens on one address only). */
  private readonly listeners: net.Server[] = [];
  private readonly sockets = new Set<net.Socket>();
  private readonly sessions = new Set<Session>();
  private shuttingDown = false;
  private nextConnectionId = 1;
  private readonly options: ServerOptions;
  private readonly badClients: LogThrottle;
  private readonly failedSessions: LogThrottle;
  /** Shared by every session, so that S3 failing every request is one line per interval, not one per connection. */
  private readonly failedRequests: LogThrottle;

  constructor(options: ServerOptions) {
    this.options = options;
    this.badClients = new LogThrottle(options.log, 'warn', { intervalMs: CONNECTION_LOG_MS });
    this.failedSessions = new LogThrottle(options.log, 'error', { intervalMs: CONNECTION_LOG_MS });
    this.failedRequests = new LogThrottle(options.log, 'error', { intervalMs: CONNECTION_LOG_MS });
  }

  /** Starts listening on one more endpoint; resolves with the address bound (useful with port 0). */
  async listen(endpoint: Endpoint): Promise<string> {
    if ('path' in endpoint) await removeStaleSocket(endpoint.path);
    const listener = net.createServer((socket) => void this.handle(socket));
    await new Promise<void>((resolve, reject) => {
      listener.once('error', reject);
      const done = (): void => {
        listener.off('error', reject);
        resolve();
      };
      if ('path' in endpoint) listener.listen(endpoint.path, done);
      else listener.listen(endpoint.port, endpoint.host, done);
    });
    this.listeners.push(listener);
    const addr = listener.address();
    return typeof addr === 'string' || addr === null ? String(addr) : `${addr.address}:${addr.port}`;
  }

  get connectionCount(): number {
    return this.sockets.size;
  }

  /**
   * Stops accepting connections and answers new requests with ESHUTDOWN. Connections close
   * once their requests in flight are answered and the client has gone quiet (sent nothing
   * for QUIET_MS, so no request of its is left unread), or when `graceMs` runs out.
   */
  async shutdown(graceMs: number): Promise<void> {
    this.shuttingDown = true;
    const closed = Promise.all(this.listeners.map((l) => new Promise<void>((resolve) => l.close(() => resolve()))));
    for (const session of this.sessions) session.beginShutdown();
    const deadline = Date.now() + graceMs;
    while (Date.now() < deadline && ![...this.sessions].every((s) => s.quietFor(QUIET_MS))) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    for (const socket of this.sockets) socket.destroy();
    await closed;
  }

  private async handle(socket: net.Socket): Promise<void> {
    const connectionId = this.nextConnectionId++;
    const log = this.options.log.child({ conn: connectionId });
    this.sockets.add(socket);
    socket.setNoDelay(true);
    socket.on('close', () => this.sockets.delete(socket));
    log.debug({ remote: socket.remoteAddress ?? 'unix' }, 'connection opened');
    const reader = new SocketReader(socket);
    let session: Session | undefined;
    try {
      if (this.options.ready && !(await this.options.ready)) {
        socket.destroy();
        return;
      }
      if (this.shuttingDown || socket.destroyed) {
        socket.destroy();
        return;
      }
      const negotiated = await new Handshake(socket, reader, this.options.exports, () => this.shuttingDown).run();
      if (!negotiated) {
        socket.end();
        return;
      }
      log.debug({ export: negotiated.export.name, structured: negotiated.structuredReplies }, 'transmission started');
      session = new Session(socket, reader, negotiated, log, this.options.limits ?? DEFAULT_SESSION_LIMITS, this.failedRequests);
      this.sessions.add(session);
      if (this.shuttingDown) session.beginShutdown();
      await session.run();
      socket.end();
    } catch (err) {
      // A fuzzer or a broken client can do this hundreds of times a second: one line per
      // interval with a count, the details of each at debug level, stacks only there.
      if (err instanceof ConnectionClosed) log.debug(err.message);
      else if (err instanceof ProtocolError) {
        log.debug({ reason: err.message }, 'ending session: client broke the protocol');
        this.badClients.write({ conn: connectionId, reason: err.message }, 'ending session: client broke the protocol');
      } else {
        log.debug({ err }, 'ending session after an unexpected error');
        this.failedSessions.write({ conn: connectionId, error: messageOf(err), code: (err as NodeJS.ErrnoException).code },
          'ending session after an unexpected error');
      }
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

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
