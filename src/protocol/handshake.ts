// Fixed newstyle negotiation: the server greets, the client sends options until one of them
// (EXPORT_NAME or GO) moves the connection to the transmission phase. Every option we do not
// know is answered NBD_REP_ERR_UNSUP rather than by hanging up, as the spec requires.
//
// Memory: an option's data is at most MAX_OPTION_LENGTH (a longer one is answered
// NBD_REP_ERR_TOO_BIG and the connection closed, which the spec allows), and no option is
// read while more than MAX_QUEUED_REPLY_BYTES of replies wait to leave the process. A client
// that sends options and never reads the answers used to make us queue them without end (60 MB
// of NBD_OPT_INFO grew the gateway by 3 GB); now TCP holds it back, as in the transmission
// phase. How long a handshake may take at all is the server's business (server.ts).
//
// TLS (NBD_OPT_STARTTLS): with a TlsOffer the server runs the spec's FORCEDTLS mode when TLS
// is required (every option but STARTTLS and ABORT is answered NBD_REP_ERR_TLS_REQD, so no
// export name or size leaks in plain text; EXPORT_NAME, which cannot be refused, ends the
// session), or lets the client choose when it is not. After the upgrade the option haggling
// starts again: what was negotiated in plain text is forgotten, as the spec asks.

import type { Socket } from 'node:net';
import type { BlockDevice } from './block-device.ts';
import type { VolumeTelemetry } from '../telemetry.ts';
import {
  BASE_ALLOCATION, BASE_ALLOCATION_ID, FLAG_C_FIXED_NEWSTYLE, FLAG_C_NO_ZEROES, FLAG_CAN_MULTI_CONN,
  FLAG_FIXED_NEWSTYLE, FLAG_HAS_FLAGS, FLAG_NO_ZEROES, FLAG_READ_ONLY, FLAG_SEND_CACHE, FLAG_SEND_DF,
  FLAG_SEND_FAST_ZERO, FLAG_SEND_FLUSH, FLAG_SEND_FUA, FLAG_SEND_TRIM, FLAG_SEND_WRITE_ZEROES, IHAVEOPT,
  Info, MAX_OPTION_LENGTH, MAX_REQUEST_SIZE, MAX_STRING_LENGTH, NBDMAGIC, Opt, OPTION_REPLY_MAGIC, Rep,
} from './constants.ts';
import { ProtocolError } from './errors.ts';
import { ConnectionClosed, SocketReader } from './socket-reader.ts';

export interface Export {
  readonly name: string;
  readonly description: string;
  readonly device: BlockDevice;
  /** Told of every request answered (the admin endpoint's metrics); none by default. */
  readonly telemetry?: VolumeTelemetry;
  /**
   * Called when a connection starts transmission on it, with a function that drops that
   * connection; returns what to call when the connection ends. (serve --volumes counts each
   * volume's clients, and drops them when the volume is deleted by force.)
   */
  readonly attach?: (drop: () => void) => () => void;
}

/** An export as NBD_OPT_LIST shows it. */
export type ExportListing = Pick<Export, 'name' | 'description'>;

/**
 * Finds exports by name; the empty name "" must resolve to the default export. Either answer
 * may come later (a promise): an export may have to be looked up, or opened, on first use.
 */
export interface ExportRegistry {
  find(name: string): Export | undefined | Promise<Export | undefined>;
  list(): readonly ExportListing[] | Promise<readonly ExportListing[]>;
}

/** What the client and server agreed on for the transmission phase. */
export interface Negotiated {
  readonly export: Export;
  readonly structuredReplies: boolean;
  /** The client selected base:allocation and may send BLOCK_STATUS. */
  readonly baseAllocation: boolean;
}

/** How the handshake offers TLS; without one it runs in the spec's NOTLS mode. */
export interface TlsOffer {
  /** Every option before STARTTLS (but ABORT) is refused with NBD_REP_ERR_TLS_REQD. */
  readonly required: boolean;
  /** Runs the TLS handshake on the paused socket after our ACK; resolves with the encrypted socket. */
  start(socket: Socket): Promise<Socket>;
}

/** Smallest I/O the server accepts: any byte; the storage does read-modify-write itself. */
export const MINIMUM_BLOCK_SIZE = 1;

export function transmissionFlags(device: BlockDevice, structuredReplies: boolean): number {
  let flags = FLAG_HAS_FLAGS | FLAG_SEND_FLUSH | FLAG_SEND_CACHE | FLAG_CAN_MULTI_CONN;
  if (structuredReplies) flags |= FLAG_SEND_DF;
  if (device.readOnly) flags |= FLAG_READ_ONLY;
  else flags |= FLAG_SEND_FUA | FLAG_SEND_TRIM | FLAG_SEND_WRITE_ZEROES | FLAG_SEND_FAST_ZERO;
  return flags;
}

function u32(value: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(value);
  return b;
}

function u16(value: number): Buffer {
  const b = Buffer.allocUnsafe(2);
  b.writeUInt16BE(value);
  return b;
}

function u64(value: number | bigint): Buffer {
  const b = Buffer.allocUnsafe(8);
  b.writeBigUInt64BE(BigInt(value));
  return b;
}

/** Parses option payloads, turning any overrun into an NBD_REP_ERR_INVALID answer. */
class OptionData {
  private pos = 0;
  private readonly data: Buffer;
  constructor(data: Buffer) {
    this.data = data;
  }
  u32(): number {
    if (this.pos + 4 > this.data.length) throw new InvalidOption('option data too short');
    const v = this.data.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  u16(): number {
    if (this.pos + 2 > this.data.length) throw new InvalidOption('option data too short');
    const v = this.data.readUInt16BE(this.pos);
    this.pos += 2;
    return v;
  }
  string(length: number): string {
    if (length > MAX_STRING_LENGTH) throw new InvalidOption('string longer than 4096 bytes');
    if (this.pos + length > this.data.length) throw new InvalidOption('option data too short');
    const s = this.data.toString('utf8', this.pos, this.pos + length);
    this.pos += length;
    return s;
  }
  end(): void {
    if (this.pos !== this.data.length) throw new InvalidOption('unexpected trailing option data');
  }
}

class InvalidOption extends Error {}

/** Replies queued in our process beyond this stop the reading of options until they drain. */
export const MAX_QUEUED_REPLY_BYTES = 64 * 1024;

export class Handshake {
  private structuredReplies = false;
  private baseAllocation = false;
  private metaContextExport: string | undefined;
  private noZeroes = false;
  private secured = false;
  /** Options refused with NBD_REP_ERR_TLS_REQD (or an EXPORT_NAME refused by hanging up). */
  private refusedPlain = 0;
  private _socket: Socket;
  private reader: SocketReader;
  private readonly exports: ExportRegistry;
  private readonly shuttingDown: () => boolean;
  private readonly tls: TlsOffer | undefined;

  constructor(socket: Socket, reader: SocketReader, exports: ExportRegistry, shuttingDown: () => boolean, tls?: TlsOffer) {
    this._socket = socket;
    this.reader = reader;
    this.exports = exports;
    this.shuttingDown = shuttingDown;
    this.tls = tls;
  }

  /** The connection as it is now: the TLS socket and its reader once STARTTLS succeeded. */
  get socket(): Socket {
    return this._socket;
  }

  get socketReader(): SocketReader {
    return this.reader;
  }

  get usesTls(): boolean {
    return this.secured;
  }

  /** How many options were refused because TLS is required and the client had not started it. */
  get refusedWithoutTls(): number {
    return this.refusedPlain;
  }

  /** Runs the negotiation; resolves undefined when the client aborted it. */
  async run(): Promise<Negotiated | undefined> {
    this.socket.write(Buffer.concat([u64(NBDMAGIC), u64(IHAVEOPT), u16(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES)]));
    const clientFlags = (await this.reader.read(4)).readUInt32BE(0);
    if ((clientFlags & ~(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES)) !== 0) {
      throw new ProtocolError(`unknown client flags 0x${clientFlags.toString(16)}`);
    }
    this.noZeroes = (clientFlags & FLAG_C_NO_ZEROES) !== 0;

    for (;;) {
      await this.drained();
      const header = await this.reader.read(16);
      if (header.readBigUInt64BE(0) !== IHAVEOPT) throw new ProtocolError('bad option magic');
      const option = header.readUInt32BE(8);
      const length = header.readUInt32BE(12);
      if (length > MAX_OPTION_LENGTH) {
        // Skipping the data would mean reading up to 4 GiB for nothing: say why, then hang up.
        this.reply(option, Rep.ERR_TOO_BIG, `option data longer than ${MAX_OPTION_LENGTH} bytes`);
        throw new ProtocolError(`option ${option} data too long (${length} bytes)`);
      }
      const data = length > 0 ? await this.reader.read(length) : Buffer.alloc(0);

      if (option === Opt.ABORT) {
        this.reply(option, Rep.ACK);
        return undefined;
      }
      if (this.tls?.required && !this.secured && option !== Opt.STARTTLS) {
        this.refusedPlain++;
        // EXPORT_NAME has no error reply: the spec says to end the session.
        if (option === Opt.EXPORT_NAME) throw new ProtocolError('NBD_OPT_EXPORT_NAME without TLS, which this server requires');
        this.reply(option, Rep.ERR_TLS_REQD, 'this server requires TLS: send NBD_OPT_STARTTLS first');
        continue;
      }
      if (option === Opt.EXPORT_NAME) return await this.exportName(data);
      if (this.shuttingDown()) {
        this.reply(option, Rep.ERR_SHUTDOWN, 'server is shutting down');
        continue;
      }
      if (option === Opt.STARTTLS && this.tls) {
        if (this.secured) this.reply(option, Rep.ERR_INVALID, 'TLS is already on');
        else if (data.length !== 0) this.reply(option, Rep.ERR_INVALID, 'NBD_OPT_STARTTLS takes no data');
        else await this.startTls(this.tls);
        continue;
      }
      try {
        const negotiated = await this.option(option, data);
        if (negotiated) return negotiated;
      } catch (err) {
        if (!(err instanceof InvalidOption)) throw err;
        this.reply(option, Rep.ERR_INVALID, err.message);
      }
    }
  }

  /** Handles one option; returns the result when it ends the negotiation (GO). */
  private async option(option: number, data: Buffer): Promise<Negotiated | undefined> {
    switch (option) {
      case Opt.LIST:
        if (data.length !== 0) throw new InvalidOption('NBD_OPT_LIST takes no data');
        for (const exp of await this.exports.list()) {
          const name = Buffer.from(exp.name);
          this.reply(option, Rep.SERVER, Buffer.concat([u32(name.length), name, Buffer.from(exp.description)]));
        }
        this.reply(option, Rep.ACK);
        return undefined;
      case Opt.STRUCTURED_REPLY:
        if (data.length !== 0) throw new InvalidOption('NBD_OPT_STRUCTURED_REPLY takes no data');
        this.structuredReplies = true;
        this.reply(option, Rep.ACK);
        return undefined;
      case Opt.INFO:
      case Opt.GO:
        return await this.infoOrGo(option, data);
      case Opt.LIST_META_CONTEXT:
      case Opt.SET_META_CONTEXT:
        await this.metaContext(option, data);
        return undefined;
      case Opt.STARTTLS:
        // The spec's NOTLS mode: POLICY, since the server could but is told not to.
        this.reply(option, Rep.ERR_POLICY, 'TLS is off on this server');
        return undefined;
      default:
        this.reply(option, Rep.ERR_UNSUP, `option ${option} is not supported`);
        return undefined;
    }
  }

  private async exportName(data: Buffer): Promise<Negotiated> {
    const name = data.toString('utf8');
    const exp = await this.exports.find(name);
    // The spec gives EXPORT_NAME no way to report an error: hanging up is the answer.
    if (!exp || this.shuttingDown()) throw new ProtocolError(`no export named ${JSON.stringify(name)}`);
    const parts = [u64(exp.device.size), u16(transmissionFlags(exp.device, this.structuredReplies))];
    if (!this.noZeroes) parts.push(Buffer.alloc(124));
    this.socket.write(Buffer.concat(parts));
    return this.negotiated(exp);
  }

  private async infoOrGo(option: number, data: Buffer): Promise<Negotiated | undefined> {
    const d = new OptionData(data);
    const name = d.string(d.u32());
    const count = d.u16();
    const requested = new Set<number>();
    for (let i = 0; i < count; i++) requested.add(d.u16());
    d.end();
    const exp = await this.exports.find(name);
    if (!exp) {
      this.reply(option, Rep.ERR_UNKNOWN, `no export named ${JSON.stringify(name)}`);
      return undefined;
    }
    const device = exp.device;
    const flags = transmissionFlags(device, this.structuredReplies);
    this.reply(option, Rep.INFO, Buffer.concat([u16(Info.EXPORT), u64(device.size), u16(flags)]));
    if (requested.has(Info.NAME)) this.reply(option, Rep.INFO, Buffer.concat([u16(Info.NAME), Buffer.from(exp.name)]));
    if (requested.has(Info.DESCRIPTION) && exp.description !== '') {
      this.reply(option, Rep.INFO, Buffer.concat([u16(Info.DESCRIPTION), Buffer.from(exp.description)]));
    }
    const preferred = Math.min(Math.max(device.preferredBlockSize, 512), MAX_REQUEST_SIZE);
    this.reply(option, Rep.INFO,
      Buffer.concat([u16(Info.BLOCK_SIZE), u32(MINIMUM_BLOCK_SIZE), u32(preferred), u32(MAX_REQUEST_SIZE)]));
    this.reply(option, Rep.ACK);
    return option === Opt.GO ? this.negotiated(exp) : undefined;
  }

  private async metaContext(option: number, data: Buffer): Promise<void> {
    if (!this.structuredReplies) throw new InvalidOption('negotiate NBD_OPT_STRUCTURED_REPLY first');
    const d = new OptionData(data);
    const exportName = d.string(d.u32());
    const count = d.u32();
    const queries: string[] = [];
    for (let i = 0; i < count; i++) queries.push(d.string(d.u32()));
    d.end();
    if (!await this.exports.find(exportName)) {
      this.reply(option, Rep.ERR_UNKNOWN, `no export named ${JSON.stringify(exportName)}`);
      return;
    }
    const listing = option === Opt.LIST_META_CONTEXT;
    // LIST may ask for everything (no query) or a whole namespace ("base:"); SET needs exact names.
    const matches = (listing && queries.length === 0)
      || queries.some((q) => q === BASE_ALLOCATION || (listing && q === 'base:'));
    if (matches) this.reply(option, Rep.META_CONTEXT, Buffer.concat([u32(listing ? 0 : BASE_ALLOCATION_ID), Buffer.from(BASE_ALLOCATION)]));
    if (!listing) {
      this.baseAllocation = matches;
      this.metaContextExport = exportName;
    }
    this.reply(option, Rep.ACK);
  }

  /** ACK, then the TLS handshake; the haggling starts again over TLS with nothing negotiated. */
  private async startTls(tls: TlsOffer): Promise<void> {
    // Its errors are seen as the close that follows; until the TLS layer takes the socket, no
    // other listener would catch them.
    this._socket.on('error', () => undefined);
    const early = this.reader.detach();
    // A client must wait for our ACK before it starts the TLS handshake.
    if (early > 0) throw new ProtocolError(`${early} bytes sent after NBD_OPT_STARTTLS before its answer`);
    const ack = optionReply(Opt.STARTTLS, Rep.ACK, Buffer.alloc(0));
    // The ACK must have left through the plain socket before TLS wraps it.
    await new Promise<void>((resolve, reject) => {
      this._socket.write(ack, (err) => (err ? reject(new ConnectionClosed(`connection failed: ${err.message}`)) : resolve()));
    });
    const secure = await tls.start(this._socket);
    this._socket = secure;
    this.reader = new SocketReader(secure, this.reader.highWaterMark);
    this.secured = true;
    this.structuredReplies = false;
    this.baseAllocation = false;
    this.metaContextExport = undefined;
  }

  private async negotiated(exp: Export): Promise<Negotiated> {
    // Contexts chosen for another export do not carry over to this one.
    const sameExport = this.metaContextExport !== undefined && await this.exports.find(this.metaContextExport) === exp;
    return { export: exp, structuredReplies: this.structuredReplies, baseAllocation: this.baseAllocation && sameExport };
  }

  /** Waits while the replies we owe are still queued in our process (the client is not reading). */
  private async drained(): Promise<void> {
    while (this.socket.writableLength > MAX_QUEUED_REPLY_BYTES && !this.socket.destroyed) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          this.socket.off('drain', done);
          this.socket.off('close', done);
          resolve();
        };
        this.socket.on('drain', done);
        this.socket.on('close', done);
      });
    }
    if (this.socket.destroyed) throw new ConnectionClosed('connection closed');
  }

  private reply(option: number, type: number, payload: Buffer | string = Buffer.alloc(0)): void {
    this._socket.write(optionReply(option, type, typeof payload === 'string' ? Buffer.from(payload) : payload));
  }
}

function optionReply(option: number, type: number, data: Buffer): Buffer {
  return Buffer.concat([u64(OPTION_REPLY_MAGIC), u32(option), u32(type), u32(data.length), data]);
}
