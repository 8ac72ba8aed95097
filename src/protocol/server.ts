// Accepts connections on TCP or a Unix socket and runs handshake then session on each. All
// connections share the devices of the export registry, which is what makes CAN_MULTI_CONN
// true: a FLUSH on any connection flushes the one shared backend.

import { existsSync, lstatSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import type { Logger } from 'pino';
import { LogThrottle } from '../log-throttle.ts';
import { MAX_OPTION_LENGTH } from './constants.ts';
import { ProtocolError } from './errors.ts';
import { type ExportRegistry, Handshake, type TlsOffer } from './handshake.ts';
import { withInPlaceReads } from './in-place-socket.ts';
import { DEFAULT_SERVER_IN_FLIGHT_BYTES, DEFAULT_SESSION_LIMITS, Session, type SessionLimits, SharedBudget } from './session.ts';
import { ConnectionClosed, READER_HIGH_WATER_MARK, SocketReader } from './socket-reader.ts';
import { startTls, TlsHandshakeError, type TlsSettings } from './tls.ts';

/** How long a client must send nothing before a shutting-down server closes its connection. */
const QUIET_MS = 200;
/** At most one line per this interval for each kind of connection or request failure. */
const CONNECTION_LOG_MS = 10_000;

/**
 * How long a connection may take from our greeting to the transmission phase (qemu-nbd's
 * default handshake limit too). Real clients need milliseconds; a connection that idles or
 * trickles in the handshake would otherwise hold its socket and buffers for ever.
 */
export const HANDSHAKE_TIMEOUT_MS = 10_000;

/** Unread input a connection may pile up during the handshake: one option of the largest size. */
export const HANDSHAKE_HIGH_WATER_MARK = 2 * MAX_OPTION_LENGTH;

/**
 * Connections open at once; more are closed as they come. Each may hold a few MiB (its
 * socket reader's high-water mark), so their number is part of the memory bound; real
 * clients open 1 to 16 (nbdfuse 4, nbd-client -C N, nbdcopy).
 */
export const DEFAULT_MAX_CONNECTIONS = 128;
const REFUSED_WARN_EVERY_MS = 60_000;

/**
 * Where to listen: a TCP address, a Unix socket's path, or a socket already listening that the
 * process inherited (systemd socket activation: cli/socket-activation.ts).
 */
export type Endpoint = { readonly host: string; readonly port: number } | { readonly path: string }
  | { readonly fd: number; readonly socketPath?: string | undefined };

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
  /** Default HANDSHAKE_TIMEOUT_MS. */
  readonly handshakeTimeoutMs?: number;
  /** Payloads and pending replies of all connections together; default DEFAULT_SERVER_IN_FLIGHT_BYTES. */
  readonly maxInFlightBytes?: number;
  /** Default DEFAULT_MAX_CONNECTIONS. */
  readonly maxConnections?: number;
  /** TLS on the NBD connection (NBD_OPT_STARTTLS); none: STARTTLS is refused. */
  readonly tls?: TlsSettings;
}

export class NbdServer {
  /** One listener per endpoint (a net.Server listens on one address only). */
  private readonly listeners: net.Server[] = [];
  private readonly bound: Array<net.AddressInfo | string> = [];
  private readonly sockets = new Set<net.Socket>();
  private readonly sessions = new Set<Session>();
  private shuttingDown = false;
  private nextConnectionId = 1;
  private refusedWarnedAt = -Infinity;
  private refused = 0;
  private readonly options: ServerOptions;
  private readonly badClients: LogThrottle;
  private readonly failedSessions: LogThrottle;
  /** Failed TLS handshakes, and clients refused for not starting TLS when it is required. */
  private readonly tlsFailures: LogThrottle;
  private readonly plainRefusals: LogThrottle;
  private readonly tlsOffer: TlsOffer | undefined;
  /** Shared by every session, so that S3 failing every request is one line per interval, not one per connection. */
  private readonly failedRequests: LogThrottle;
  /** Shared by every session: what one connection may hold is also bounded by what all hold. */
  readonly inFlight: SharedBudget;

  constructor(options: ServerOptions) {
    this.options = options;
    this.inFlight = new SharedBudget(options.maxInFlightBytes ?? DEFAULT_SERVER_IN_FLIGHT_BYTES);
    this.badClients = new LogThrottle(options.log, 'warn', { intervalMs: CONNECTION_LOG_MS });
    this.failedSessions = new LogThrottle(options.log, 'error', { intervalMs: CONNECTION_LOG_MS });
    this.tlsFailures = new LogThrottle(options.log, 'warn', { intervalMs: CONNECTION_LOG_MS });
    this.plainRefusals = new LogThrottle(options.log, 'warn', { intervalMs: CONNECTION_LOG_MS });
    const tls = options.tls;
    this.tlsOffer = tls && { required: tls.mode === 'require', start: (socket) => startTls(socket, tls) };
    this.failedRequests = new LogThrottle(options.log, 'error', { intervalMs: CONNECTION_LOG_MS });
  }

  /** Starts listening on one more endpoint; resolves with the address bound (useful with port 0). */
  async listen(endpoint: Endpoint): Promise<string> {
    if ('path' in endpoint) await removeStaleSocket(endpoint.path);
    // Accepted paused, so that withInPlaceReads() can take each connection before any read.
    const listener = net.createServer({ pauseOnConnect: true }, (socket) => void this.handle(withInPlaceReads(socket)));
    await new Promise<void>((resolve, reject) => {
      listener.once('error', reject);
      const done = (): void => {
        listener.off('error', reject);
        resolve();
      };
      if ('path' in endpoint) listener.listen(endpoint.path, done);
      // An inherited socket may hold connections already (systemd starts the service on the
      // first one): accept() takes them as soon as the listener is up.
      else if ('fd' in endpoint) listener.listen({ fd: endpoint.fd }, done);
      else listener.listen(endpoint.port, endpoint.host, done);
    });
    this.listeners.push(listener);
    // Node knows no path for an inherited Unix socket: the caller found it (socket-activation.ts).
    const addr = listener.address() ?? ('fd' in endpoint ? endpoint.socketPath ?? `inherited socket ${endpoint.fd}` : '');
    this.bound.push(addr);
    return typeof addr === 'string' ? addr : `${addr.address}:${addr.port}`;
  }

  /** What each listener is bound to: the TCP address, or a Unix socket's path. */
  boundAddresses(): Array<net.AddressInfo | string> {
    return [...this.bound];
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
    const maxConnections = this.options.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
    if (this.sockets.size >= maxConnections) {
      socket.destroy();
      this.refused++;
      if (Date.now() - this.refusedWarnedAt >= REFUSED_WARN_EVERY_MS) {
        this.refusedWarnedAt = Date.now();
        this.options.log.warn({ maxConnections, refused: this.refused }, 'connection refused: too many connections open');
      }
      return;
    }
    const connectionId = this.nextConnectionId++;
    const log = this.options.log.child({ conn: connectionId });
    this.sockets.add(socket);
    socket.setNoDelay(true);
    socket.on('close', () => this.sockets.delete(socket));
    const remote = socket.remoteAddress === undefined ? 'unix' : `${socket.remoteAddress}:${socket.remotePort}`;
    log.debug({ remote }, 'connection opened');
    const handshake = new Handshake(socket, new SocketReader(socket, HANDSHAKE_HIGH_WATER_MARK), this.options.exports,
      () => this.shuttingDown, this.tlsOffer);
    let timedOut = false;
    let session: Session | undefined;
    let detach: (() => void) | undefined;
    try {
      if (this.options.ready && !(await this.options.ready)) {
        socket.destroy();
        return;
      }
      if (this.shuttingDown || socket.destroyed) {
        socket.destroy();
        return;
      }
      const timeoutMs = this.options.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS;
      // The TLS handshake, if any, is part of this time.
      const timer = setTimeout(() => {
        log.debug({ timeoutMs }, 'handshake not finished in time: closing the connection');
        timedOut = true;
        socket.destroy();
      }, timeoutMs);
      const negotiated = await handshake.run().finally(() => clearTimeout(timer));
      // From here on the connection is the TLS socket if the client started TLS.
      const { socket: connection, socketReader: reader } = handshake;
      if (!negotiated) {
        connection.end();
        return;
      }
      const secure = connection instanceof tls.TLSSocket ? `${connection.getProtocol()} ${connection.getCipher().name}` : false;
      log.debug({ export: negotiated.export.name, structured: negotiated.structuredReplies, tls: secure }, 'transmission started');
      reader.setHighWaterMark(READER_HIGH_WATER_MARK);
      detach = negotiated.export.attach?.(() => connection.destroy());
      session = new Session(connection, reader, negotiated, log, this.options.limits ?? DEFAULT_SESSION_LIMITS, this.inFlight, this.failedRequests);
      this.sessions.add(session);
      if (this.shuttingDown) session.beginShutdown();
      await session.run();
      connection.end();
    } catch (err) {
      // A fuzzer or a broken client can do this hundreds of times a second: one line per
      // interval with a count, the details of each at debug level, stacks only there.
      if (err instanceof TlsHandshakeError) {
        const reason = timedOut ? `not finished within ${this.options.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS} ms` : err.message;
        log.debug({ remote, reason }, 'TLS handshake failed');
        this.tlsFailures.write({ conn: connectionId, remote, reason }, 'TLS handshake failed: connection closed');
      } else if (err instanceof ConnectionClosed) log.debug(err.message);
      else if (err instanceof ProtocolError) {
        log.debug({ reason: err.message }, 'ending session: client broke the protocol');
        // A plain EXPORT_NAME under --tls require has its own line (below).
        if (handshake.refusedWithoutTls === 0) this.badClients.write({ conn: connectionId, reason: err.message }, 'ending session: client broke the protocol');
      } else {
        log.debug({ err }, 'ending session after an unexpected error');
        this.failedSessions.write({ conn: connectionId, error: messageOf(err), code: (err as NodeJS.ErrnoException).code },
          'ending session after an unexpected error');
      }
      socket.destroy();
    } finally {
      if (handshake.refusedWithoutTls > 0 && !handshake.usesTls) {
        this.plainRefusals.write({ conn: connectionId, remote, options: handshake.refusedWithoutTls },
          'client did not start TLS, which this server requires: its options were answered NBD_REP_ERR_TLS_REQD');
      }
      if (session) this.sessions.delete(session);
      detach?.();
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
