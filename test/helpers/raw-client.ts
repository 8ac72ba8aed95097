// A raw NBD client for the server's unit tests, for what real clients never send: unknown
// options, bad magic, oversized payloads, unknown commands, options around NBD_OPT_STARTTLS.
// It speaks through the server's own SocketReader and encoders (test/helpers/nbd-raw.ts is the
// fuzzer's independent one).

import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { IHAVEOPT, Opt, Rep, SIMPLE_REPLY_MAGIC } from '../../src/protocol/constants.ts';
import { SocketReader } from '../../src/protocol/socket-reader.ts';
import { encodeRequest } from '../../src/protocol/wire.ts';

export class RawClient {
  socket: net.Socket;
  reader: SocketReader;
  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.reader = new SocketReader(socket);
  }

  /** Connects (TCP port on 127.0.0.1, or a Unix socket path), reads the greeting, sends the client flags. */
  static async connect(where: number | string): Promise<RawClient> {
    const socket = typeof where === 'number' ? net.connect(where, '127.0.0.1') : net.connect(where);
    await new Promise((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    const client = new RawClient(socket);
    const greeting = await client.reader.read(18);
    assert.equal(greeting.toString('latin1', 0, 8), 'NBDMAGIC');
    assert.equal(greeting.readUInt16BE(16), 3, 'FIXED_NEWSTYLE | NO_ZEROES');
    socket.write(Buffer.from([0, 0, 0, 3]));
    return client;
  }

  sendOption(option: number, data: Buffer = Buffer.alloc(0)): void {
    const h = Buffer.alloc(16);
    h.writeBigUInt64BE(IHAVEOPT, 0);
    h.writeUInt32BE(option, 8);
    h.writeUInt32BE(data.length, 12);
    this.socket.write(Buffer.concat([h, data]));
  }

  async optionReply(): Promise<{ option: number; type: number; data: Buffer }> {
    const h = await this.reader.read(20);
    const length = h.readUInt32BE(16);
    return { option: h.readUInt32BE(8), type: h.readUInt32BE(12), data: length ? await this.reader.read(length) : Buffer.alloc(0) };
  }

  /** NBD_OPT_GO for the default export with no info requests; returns the transmission flags. */
  async go(): Promise<number> {
    this.sendOption(Opt.GO, Buffer.from([0, 0, 0, 0, 0, 0]));
    let flags = -1;
    for (;;) {
      const r = await this.optionReply();
      if (r.type === Rep.INFO && r.data.readUInt16BE(0) === 0) flags = r.data.readUInt16BE(10);
      if (r.type === Rep.ACK) return flags;
      assert.equal(r.type, Rep.INFO);
    }
  }

  /**
   * NBD_OPT_STARTTLS, its ACK, then the client side of the TLS handshake over the same
   * socket; later options go over TLS. Rejects if the handshake fails.
   */
  async startTls(options: tls.ConnectionOptions): Promise<tls.TLSSocket> {
    this.sendOption(Opt.STARTTLS);
    const ack = await this.optionReply();
    assert.equal(ack.type, Rep.ACK, 'STARTTLS is acknowledged');
    assert.equal(this.reader.detach(), 0);
    const secure = tls.connect({ ...options, socket: this.socket });
    await new Promise((resolve, reject) => secure.once('secureConnect', resolve).once('error', reject));
    this.socket = secure;
    this.reader = new SocketReader(secure);
    return secure;
  }

  request(type: number, offset: number, length: number, flags = 0, handle = 1, payload?: Buffer): void {
    const h = Buffer.alloc(8);
    h.writeUInt32BE(handle, 4);
    this.socket.write(encodeRequest({ flags, type, handle: h, offset, length }));
    if (payload) this.socket.write(payload);
  }

  async simpleReply(): Promise<{ errno: number; handle: number }> {
    const r = await this.reader.read(16);
    assert.equal(r.readUInt32BE(0), SIMPLE_REPLY_MAGIC);
    return { errno: r.readUInt32BE(4), handle: r.readUInt32BE(12) };
  }

  closed(): Promise<void> {
    return new Promise((resolve) => {
      if (this.socket.destroyed) resolve();
      else this.socket.once('close', () => resolve());
    });
  }
}
