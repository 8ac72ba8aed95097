// The NBD server driven over a real socket by a raw client, for what real clients never send:
// unknown options, bad magic, oversized payloads, unknown commands. The server must answer
// by the spec and stay up for the next connection.

import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { Cmd, NbdErrno, Opt, Rep, STRUCTURED_REPLY_MAGIC } from '../../src/protocol/constants.ts';
import type { Export } from '../../src/protocol/handshake.ts';
import { NbdServer } from '../../src/protocol/server.ts';
import { RawClient } from '../helpers/raw-client.ts';
import { openStorage, type Storage } from '../../src/storage/stack.ts';

describe('NBD server protocol edge cases', () => {
  let storage: Storage;
  let server: NbdServer;
  let port = 0;
  let readsStarted = 0;

  before(async () => {
    storage = await openStorage({ log: pino({ level: 'silent' }), store: 'memory:', volume: { mode: 'open-or-create', size: 16 << 20, extentSize: 1 << 16 }, readOnly: false, memoryCacheBytes: 1 << 20 });
    const device = storage.device;
    const counting = Object.assign(Object.create(device) as typeof device, {
      read: (offset: number, length: number) => {
        readsStarted++;
        return device.read(offset, length);
      },
    });
    const exp: Export = { name: 'disk', description: 'test disk', device: counting };
    server = new NbdServer({
      exports: { find: (n) => (n === '' || n === 'disk' ? exp : undefined), list: () => [exp] },
      log: pino({ level: 'silent' }),
    });
    port = Number((await server.listen({ host: '127.0.0.1', port: 0 })).split(':').pop());
  });
  after(async () => {
    await server.shutdown(1000);
    await storage.close();
  });

  it('answers unknown options with ERR_UNSUP, STARTTLS without --tls with ERR_POLICY, and carries on', async () => {
    const c = await RawClient.connect(port);
    c.sendOption(42, Buffer.from('whatever'));
    assert.equal((await c.optionReply()).type, Rep.ERR_UNSUP);
    c.sendOption(Opt.STARTTLS);
    assert.equal((await c.optionReply()).type, Rep.ERR_POLICY, "the spec's NOTLS mode");
    c.sendOption(Opt.LIST);
    const listed = await c.optionReply();
    assert.equal(listed.type, Rep.SERVER);
    assert.equal(listed.data.toString('utf8', 4, 4 + listed.data.readUInt32BE(0)), 'disk');
    assert.equal((await c.optionReply()).type, Rep.ACK);
    c.sendOption(Opt.LIST, Buffer.from('x'));
    assert.equal((await c.optionReply()).type, Rep.ERR_INVALID);
    c.sendOption(Opt.SET_META_CONTEXT, Buffer.alloc(8));
    assert.equal((await c.optionReply()).type, Rep.ERR_INVALID, 'meta contexts need structured replies first');
    const info = Buffer.alloc(4 + 7 + 2);
    info.writeUInt32BE(7, 0);
    info.write('missing', 4);
    c.sendOption(Opt.INFO, info);
    assert.equal((await c.optionReply()).type, Rep.ERR_UNKNOWN);
    c.sendOption(Opt.INFO, Buffer.from([0, 0, 0, 99]));
    assert.equal((await c.optionReply()).type, Rep.ERR_INVALID, 'truncated INFO data');
    c.sendOption(Opt.ABORT);
    assert.equal((await c.optionReply()).type, Rep.ACK);
    await c.closed();
  });

  it('answers bad requests with the spec errno and keeps the session', async () => {
    const c = await RawClient.connect(port);
    const flags = await c.go();
    assert.ok(flags & (1 << 8), 'CAN_MULTI_CONN');
    const size = 16 << 20;
    c.request(Cmd.READ, size - 10, 20, 0, 1);
    assert.deepEqual(await c.simpleReply(), { errno: NbdErrno.EINVAL, handle: 1 });
    c.request(Cmd.WRITE, size - 2, 4, 0, 2, Buffer.from('abcd'));
    assert.deepEqual(await c.simpleReply(), { errno: NbdErrno.ENOSPC, handle: 2 });
    c.request(Cmd.TRIM, size, 1, 0, 3);
    assert.deepEqual(await c.simpleReply(), { errno: NbdErrno.ENOSPC, handle: 3 });
    c.request(99, 0, 0, 0, 4);
    assert.deepEqual(await c.simpleReply(), { errno: NbdErrno.EINVAL, handle: 4 });
    c.request(Cmd.WRITE, 0, 4, 1 << 9, 5, Buffer.from('abcd'));
    assert.deepEqual(await c.simpleReply(), { errno: NbdErrno.EINVAL, handle: 5 }, 'unknown flag');
    c.request(Cmd.READ, 0, 512, 1 << 2, 6);
    assert.deepEqual(await c.simpleReply(), { errno: NbdErrno.EINVAL, handle: 6 }, 'DF without structured replies');
    c.request(Cmd.BLOCK_STATUS, 0, 512, 0, 7);
    assert.deepEqual(await c.simpleReply(), { errno: NbdErrno.EINVAL, handle: 7 }, 'no meta context negotiated');
    c.request(Cmd.FLUSH, 5, 0, 0, 8);
    assert.deepEqual(await c.simpleReply(), { errno: NbdErrno.EINVAL, handle: 8 });
    c.request(Cmd.READ, 2 ** 52, 512, 0, 9);
    assert.deepEqual(await c.simpleReply(), { errno: NbdErrno.EINVAL, handle: 9 }, 'huge offset');
    c.request(Cmd.WRITE, 0, 4, 0, 10, Buffer.from('abcd'));
    assert.deepEqual(await c.simpleReply(), { errno: 0, handle: 10 });
    c.request(Cmd.READ, 0, 4, 0, 11);
    assert.deepEqual(await c.simpleReply(), { errno: 0, handle: 11 });
    assert.equal((await c.reader.read(4)).toString(), 'abcd');
    c.request(Cmd.DISC, 0, 0);
    await c.closed();
  });

  it('ends only the offending session on a malformed request', async () => {
    const bad = await RawClient.connect(port);
    await bad.go();
    bad.socket.write(Buffer.alloc(28, 0xee)); // bad magic
    await bad.closed();
    const huge = await RawClient.connect(port);
    await huge.go();
    huge.request(Cmd.WRITE, 0, 64 << 20, 0, 1); // payload beyond the 32 MiB maximum
    await huge.closed();
    const good = await RawClient.connect(port);
    await good.go();
    good.request(Cmd.FLUSH, 0, 0, 0, 3);
    assert.deepEqual(await good.simpleReply(), { errno: 0, handle: 3 });
    good.socket.destroy();
  });

  it('sends an error chunk, not a simple reply, for a failed read with structured replies', async () => {
    const c = await RawClient.connect(port);
    c.sendOption(Opt.STRUCTURED_REPLY);
    assert.equal((await c.optionReply()).type, Rep.ACK);
    await c.go();
    c.request(Cmd.READ, 16 << 20, 512, 0, 7);
    const h = await c.reader.read(20);
    assert.equal(h.readUInt32BE(0), STRUCTURED_REPLY_MAGIC);
    assert.equal(h.readUInt16BE(4), 1, 'DONE');
    assert.equal(h.readUInt16BE(6), 0x8001, 'NBD_REPLY_TYPE_ERROR');
    const payload = await c.reader.read(h.readUInt32BE(16));
    assert.equal(payload.readUInt32BE(0), NbdErrno.EINVAL);
    c.socket.destroy();
  });

  it('sends the replies of requests that finish in the same turn in one write, in any order', async () => {
    const c = await RawClient.connect(port);
    await c.go();
    // Every socket write of the process from here on: only the server writes until the replies are in.
    const proto = net.Socket.prototype as unknown as Record<'_write' | '_writev', (...args: unknown[]) => unknown>;
    const original = { _write: proto._write, _writev: proto._writev };
    let writes = 0;
    c.socket.cork();
    for (let i = 0; i < 32; i++) c.request(Cmd.FLUSH, 0, 0, 0, 100 + i);
    c.socket.uncork();
    for (const name of ['_write', '_writev'] as const) {
      proto[name] = function (this: unknown, ...args: unknown[]) {
        writes++;
        return original[name].apply(this, args);
      };
    }
    try {
      const handles = new Set<number>();
      for (let i = 0; i < 32; i++) {
        const r = await c.simpleReply();
        assert.equal(r.errno, 0);
        handles.add(r.handle);
      }
      assert.equal(handles.size, 32, 'every request answered once');
      // One request arriving per read from the socket would take 32; a reply per write as well.
      assert.ok(writes <= 4, `${writes} socket writes for 32 replies`);
    } finally {
      Object.assign(proto, original);
      c.socket.destroy();
    }
  });

  it('bounds the bytes a connection holds in flight', async () => {
    const c = await RawClient.connect(port);
    await c.go();
    // 200 reads of 1 MiB that we do not read back: the server must stop taking requests
    // once its in-flight budget is spent, instead of buffering 200 MiB of replies.
    c.socket.pause();
    const before = readsStarted;
    for (let i = 0; i < 200; i++) c.request(Cmd.READ, 0, 1 << 20, 0, i);
    await new Promise((r) => setTimeout(r, 500));
    // 64 MiB of budget, plus what the kernel's socket buffers swallowed before it filled.
    const started = readsStarted - before;
    assert.ok(started >= 64 && started < 120, `${started} reads started while the client was not reading`);
    c.socket.resume();
    let received = 0;
    for (let i = 0; i < 200; i++) {
      const r = await c.simpleReply();
      assert.equal(r.errno, 0);
      await c.reader.read(1 << 20);
      received++;
    }
    assert.equal(received, 200);
    c.socket.destroy();
  });
});
