// The in-flight budget shared by all connections: each connection may hold 64 MiB of payloads
// and pending replies, and all of them together no more than the server's budget, so N clients
// that do not read their replies cannot make the server hold N x 64 MiB.

import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { until } from '../helpers/manual-clock.ts';
import { Cmd, IHAVEOPT, Opt, Rep } from '../../src/protocol/constants.ts';
import type { Export } from '../../src/protocol/handshake.ts';
import { NbdServer } from '../../src/protocol/server.ts';
import { SocketReader } from '../../src/protocol/socket-reader.ts';
import { encodeRequest } from '../../src/protocol/wire.ts';
import { openStorage, type Storage } from '../../src/storage/stack.ts';

const MiB = 1 << 20;

/** A connection in the transmission phase (NBD_OPT_GO, simple replies). */
async function transmitting(port: number): Promise<{ socket: net.Socket; reader: SocketReader }> {
  const socket = net.connect(port, '127.0.0.1');
  await new Promise((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  const reader = new SocketReader(socket);
  await reader.read(18);
  const go = Buffer.alloc(22);
  go.writeBigUInt64BE(IHAVEOPT, 0);
  go.writeUInt32BE(Opt.GO, 8);
  go.writeUInt32BE(6, 12);
  socket.write(Buffer.concat([Buffer.from([0, 0, 0, 3]), go]));
  for (;;) {
    const h = await reader.read(20);
    await reader.read(h.readUInt32BE(16));
    if (h.readUInt32BE(12) === Rep.ACK) return { socket, reader };
  }
}

describe('in-flight budget across connections', () => {
  let storage: Storage;
  let server: NbdServer;
  let port = 0;
  let readsStarted = 0;

  before(async () => {
    storage = await openStorage({ log: pino({ level: 'silent' }), store: 'memory:', volume: { mode: 'open-or-create', size: 32 * MiB, extentSize: MiB }, readOnly: false, memoryCacheBytes: MiB });
    const device = storage.device;
    const counting = Object.assign(Object.create(device) as typeof device, {
      read: (offset: number, length: number) => {
        readsStarted++;
        return device.read(offset, length);
      },
    });
    const exp: Export = { name: '', description: '', device: counting };
    server = new NbdServer({ exports: { find: () => exp, list: () => [exp] }, log: pino({ level: 'silent' }), maxInFlightBytes: 8 * MiB });
    port = Number((await server.listen({ host: '127.0.0.1', port: 0 })).split(':').pop());
  });
  after(async () => {
    await server.shutdown(1000);
    await storage.close();
  });

  it('stops taking requests from every connection once their replies hold the shared budget, and serves them all once read', async () => {
    const clients = await Promise.all([0, 1, 2, 3].map(() => transmitting(port)));
    const handle = Buffer.alloc(8);
    for (const c of clients) {
      c.socket.pause();
      for (let i = 0; i < 20; i++) c.socket.write(encodeRequest({ flags: 0, type: Cmd.READ, handle, offset: i * MiB, length: MiB }));
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
    // Old code: 64 MiB per connection, so all 80 reads of 1 MiB ran and waited in memory.
    // The kernel's socket buffers take a reply or two of each connection beyond the budget.
    assert.ok(readsStarted <= 8 + 4 * 4, `${readsStarted} reads of 1 MiB started with an 8 MiB budget`);
    await Promise.all(clients.map(async (c) => {
      c.socket.resume();
      for (let i = 0; i < 20; i++) {
        assert.equal((await c.reader.read(16)).readUInt32BE(4), 0);
        await c.reader.read(MiB);
      }
      c.socket.destroy();
    }));
    assert.equal(readsStarted, 80);
    assert.equal(server.inFlight.inUse, 0);
  });

  it('counts a write payload at the size of its pooled buffer (a power of two)', async () => {
    let writesStarted = 0;
    let open: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => { open = resolve; });
    const device = storage.device;
    const blocking = Object.assign(Object.create(device) as typeof device, {
      write: async (offset: number, data: Buffer, fua: boolean) => {
        writesStarted++;
        await gate;
        return device.write(offset, data, fua);
      },
    });
    const exp: Export = { name: '', description: '', device: blocking };
    const writing = new NbdServer({ exports: { find: () => exp, list: () => [exp] }, log: pino({ level: 'silent' }), limits: { maxInFlightBytes: 64 * MiB, maxInFlightRequests: 256 } });
    const writePort = Number((await writing.listen({ host: '127.0.0.1', port: 0 })).split(':').pop());
    const c = await transmitting(writePort);
    try {
      // 16 MiB + 1 byte each: the payload takes a 32 MiB buffer. Old code counted 16 MiB + 1,
      // so three (96 MiB of buffers) fitted in a 64 MiB budget.
      const length = 16 * MiB + 1;
      for (let i = 0; i < 3; i++) {
        c.socket.write(encodeRequest({ flags: 0, type: Cmd.WRITE, handle: Buffer.alloc(8), offset: 0, length }));
        c.socket.write(Buffer.alloc(length, i));
      }
      // Two start, and the third still waits for budget a while later. (A fixed 500 ms was not
      // always enough for two 16 MiB payloads to arrive on a loaded machine.)
      await until(() => writesStarted >= 2, 'two writes started', 30_000);
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.equal(writesStarted, 2);
      open();
      for (let i = 0; i < 3; i++) assert.equal((await c.reader.read(16)).readUInt32BE(4), 0);
      assert.equal(writesStarted, 3);
    } finally {
      open();
      c.socket.destroy();
      await writing.shutdown(1000);
    }
  });
});
