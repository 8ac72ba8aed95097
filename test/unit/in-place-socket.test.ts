// Accepted connections with in-place reads (src/protocol/in-place-socket.ts) under a
// SocketReader: frames of every size sent in pieces of every size arrive whole, in order and
// in their own buffers (canaries on both sides of each target stay untouched), also when the
// reader is slow and bytes of many reads wait in it; large fills that wait for their bytes
// are read by the socket straight into their target; a reader that stops reading holds back at
// most its high-water mark and a slab; a socket that cannot be re-wrapped is used as it is.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { setReadSink, withInPlaceReads } from '../../src/protocol/in-place-socket.ts';
import { SocketReader } from '../../src/protocol/socket-reader.ts';

const MiB = 1024 * 1024;

/** A server whose one connection is handed, re-wrapped, to `serve`; resolves with a connected client. */
async function pair(serve: (socket: net.Socket) => Promise<void>): Promise<{ client: net.Socket; served: Promise<void>; close: () => void }> {
  let served!: Promise<void>;
  const accepted = new Promise<void>((resolve) => {
    const server = net.createServer({ pauseOnConnect: true }, (socket) => {
      served = serve(withInPlaceReads(socket));
      server.close();
      resolve();
    });
    server.listen(0, '127.0.0.1', () => {
      client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    });
  });
  let client!: net.Socket;
  await accepted;
  return { client, served, close: () => client.destroy() };
}

/** Lengths of every kind: empty, tiny, around the slab and the socket's reads, an extent, more. */
function frameLengths(): number[] {
  const lengths = [0, 1, 27, 4096, 65535, 65536, 65537, MiB, MiB + 1, 3 * MiB];
  for (let i = 0; i < 40; i++) lengths.push(Math.random() < 0.5 ? Math.floor(Math.random() * 8192) : Math.floor(Math.random() * 2 * MiB));
  return lengths;
}

/**
 * Sends the frames (a 4-byte length, then the bytes) in pieces of random sizes to a SocketReader
 * on an accepted, re-wrapped socket, which checks each; a slow reader waits now and then, so
 * that the bytes of several reads wait in it. Resolves with the bytes read in place.
 */
async function sendFrames(frames: Buffer[], slow: boolean): Promise<number> {
  const canary = 0xa5;
  let inPlace = 0;
  const { client, served, close } = await pair(async (socket) => {
    const reader = new SocketReader(socket);
    for (const [i, expected] of frames.entries()) {
      const length = (await reader.read(4)).readUInt32BE(0);
      assert.equal(length, expected.length, `frame ${i}: its length`);
      // The target sits between two canaries: a read past either end would change them.
      const room = Buffer.alloc(length + 64, canary);
      const target = room.subarray(32, 32 + length);
      await reader.readInto(target);
      assert.ok(target.equals(expected), `frame ${i} (${length} bytes) arrives whole`);
      assert.ok(room.subarray(0, 32).every((b) => b === canary) && room.subarray(32 + length).every((b) => b === canary), `frame ${i}: nothing written outside it`);
      if (slow && i % 3 === 0) await sleep(5);
    }
    inPlace = reader.bytesInPlace;
    socket.end();
  });
  const send = async (): Promise<void> => {
    const stream = Buffer.concat(frames.flatMap((f) => {
      const head = Buffer.alloc(4);
      head.writeUInt32BE(f.length);
      return [head, f];
    }));
    for (let at = 0; at < stream.length;) {
      const piece = Math.random() < 0.3 ? 1 + Math.floor(Math.random() * 100) : 1 + Math.floor(Math.random() * 300_000);
      const ok = client.write(stream.subarray(at, at + piece));
      at += piece;
      if (!ok) await new Promise((resolve) => client.once('drain', resolve));
      if (Math.random() < 0.05) await sleep(1);
    }
  };
  try {
    await Promise.all([served, send()]);
  } finally {
    close();
  }
  return inPlace;
}

describe('in-place reads', () => {
  it('frames of every size, sent in pieces of every size, arrive whole and in their own buffers', { timeout: 60_000 }, async () => {
    await sendFrames(frameLengths().map((length) => randomBytes(length)), true);
  });

  it('a fill that waits for its bytes gets most of them read straight into it', { timeout: 60_000 }, async () => {
    const frames = frameLengths().map((length) => randomBytes(length));
    const inPlace = await sendFrames(frames, false);
    const large = frames.filter((f) => f.length >= MiB).reduce((sum, f) => sum + f.length, 0);
    assert.ok(inPlace > large / 2, `${inPlace} of ${large} bytes of frames of 1 MiB or more read in place`);
  });

  it('a reader that stops taking bytes holds back at most its high-water mark and a slab', { timeout: 30_000 }, async () => {
    const highWaterMark = MiB;
    let reader!: SocketReader;
    const { client, close } = await pair(async (socket) => {
      reader = new SocketReader(socket, highWaterMark);
      assert.equal((await reader.read(4)).length, 4);
    });
    try {
      let sent = 0;
      const piece = Buffer.alloc(256 * 1024, 1);
      // Sends until the socket stays full: the kernel's buffers fill, then the writes wait.
      for (let stalled = 0; stalled < 3 && sent < 256 * MiB;) {
        if (client.write(piece)) sent += piece.length;
        else {
          sent += piece.length;
          const drained = await Promise.race([new Promise((resolve) => client.once('drain', () => resolve(true))), sleep(200).then(() => false)]);
          if (!drained) stalled++;
        }
      }
      assert.ok(sent < 256 * MiB, 'the sender was held back');
      assert.ok(reader.bufferedBytes <= highWaterMark + 64 * 1024, `${reader.bufferedBytes} bytes buffered`);
    } finally {
      close();
    }
  });

  it('hands bytes read before a reader was attached to that reader', { timeout: 10_000 }, async () => {
    const early = randomBytes(10_000);
    let got: Buffer | undefined;
    const { client, served, close } = await pair(async (socket) => {
      socket.resume(); // reading, with no reader yet
      await sleep(200);
      got = await new SocketReader(socket).read(early.length);
    });
    try {
      client.write(early);
      await served;
      assert.ok(got?.equals(early));
    } finally {
      close();
    }
  });

  it('uses a socket it cannot re-wrap as it is, which then delivers its bytes as data events', () => {
    const unconnected = new net.Socket();
    assert.equal(withInPlaceReads(unconnected), unconnected);
    assert.equal(setReadSink(unconnected, undefined), false);
  });
});
