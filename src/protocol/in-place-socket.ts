// Accepted connections whose reads can land straight in the buffer a reader is filling. A
// 1 MiB NBD write otherwise arrives as sixteen 64 KiB buffers that Node allocates and pushes
// through its stream machinery, and that SocketReader then copies into the payload: half of
// the CPU of receiving it (0.63 against 0.32 CPU-s per GiB over a Unix socket:
// bench/results/nbd-in-place-19.md).
//
// net.connect takes an `onread` option for this (the S3 client's GETs use it: http1.ts), but
// a net.Server's accepted sockets cannot have it. withInPlaceReads() moves the handle of a
// socket accepted with `pauseOnConnect` (nothing read yet) into a new Socket that has it, and
// destroys the accepted Socket without its handle: the net.Server then no longer counts the
// connection, which Server.shutdown() does not need (it tracks and closes its sockets
// itself). Socket's `handle` option and `_handle` field are what Node's own cluster and
// child_process use, but they are not documented: where they are missing, the accepted socket
// is used as it is, resumed, and its bytes are copied as before.
//
// Each read goes where the socket's ReadSink (SocketReader) says: a window that is exactly
// what it wants next, or else this socket's slab, 64 KiB filled one read after another (a
// read never lands on bytes handed on before it, so the views handed on stay valid).

import net from 'node:net';

export interface ReadSink {
  /** Where the next read may land directly: exactly the bytes wanted next, never more. Or undefined. */
  window(): Buffer | undefined;
  /** `n` bytes landed at the start of the window given last. */
  filledInPlace(n: number): void;
  /** Bytes that landed in the socket's slab: a view the sink may keep. */
  received(chunk: Buffer): void;
}

const SLAB_BYTES = 64 * 1024;
/** A slab with less room than this is replaced: reads into a sliver would be small reads. */
const MIN_SLAB_ROOM = 16 * 1024;

interface Slot {
  sink: ReadSink | undefined;
  /** Bytes read while no sink was set (none, if the socket was paused first): kept for the next one. */
  readonly early: Buffer[];
}

/** The slot of each socket made by withInPlaceReads(), whose sink its reader sets. */
const slots = new WeakMap<net.Socket, Slot>();

/**
 * Tells the socket where its reads go from now on: `sink`, or nowhere (undefined; pause the
 * socket first). False for a socket without in-place reads: its bytes come as 'data' events.
 */
export function setReadSink(socket: net.Socket, sink: ReadSink | undefined): boolean {
  const slot = slots.get(socket);
  if (!slot) return false;
  slot.sink = sink;
  if (sink) for (const chunk of slot.early.splice(0)) sink.received(chunk);
  return true;
}

/** The socket accepted by a net.Server with `pauseOnConnect`, as a paused Socket that reads in place where it can. */
export function withInPlaceReads(accepted: net.Socket): net.Socket {
  const internal = accepted as unknown as { _handle?: unknown };
  const handle = internal._handle;
  if (handle === null || typeof handle !== 'object') return accepted.resume();
  const slot: Slot = { sink: undefined, early: [] };
  let slab = Buffer.allocUnsafe(SLAB_BYTES);
  let used = 0;
  let inWindow = false;
  const next = (): Buffer => {
    const window = slot.sink?.window();
    inWindow = window !== undefined && window.length > 0;
    if (inWindow) return window!;
    if (slab.length - used < MIN_SLAB_ROOM) {
      slab = Buffer.allocUnsafe(SLAB_BYTES);
      used = 0;
    }
    return slab.subarray(used);
  };
  // `handle` and `pauseOnCreate` are what net.Server passes for the sockets it accepts.
  const options: net.SocketConstructorOpts & { pauseOnCreate: boolean } = {
    handle: handle as net.SocketConstructorOpts['handle'], readable: true, writable: true, pauseOnCreate: true,
    onread: {
      buffer: next,
      callback: (n) => {
        if (inWindow) {
          slot.sink!.filledInPlace(n);
          return true;
        }
        const chunk = slab.subarray(used, used + n);
        used += n;
        if (slot.sink) slot.sink.received(chunk);
        else slot.early.push(chunk);
        return true;
      },
    },
  };
  let socket: net.Socket;
  try {
    socket = new net.Socket(options);
  } catch {
    return accepted.resume();
  }
  internal._handle = null;
  accepted.destroy();
  slots.set(socket, slot);
  return socket;
}
