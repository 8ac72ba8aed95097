// SHA-256 of large object bodies on a worker thread, so that the event loop goes on serving
// while a fetched object is checked (ObjectCodec.decode). A cold read is not bound by the CPU
// (the machine is a quarter idle) but by how often the event loop comes round: each turn
// sends the NBD client one socket buffer of replies, and each 1 MiB SHA-256 made a turn
// 0.6 ms longer. Checked here, cold reads went 8% faster (bench/results/cold-read-19.md).
// Encode hashes on the event loop: sequential writes keep both cores busy, and moving their
// hash gained nothing.
//
// The body's memory is moved to the worker and back (a transfer, not a copy): until the
// promise resolves the caller's Buffer is empty, and the caller goes on with the Buffer it
// gets back. Small bodies, bodies that share their memory (a view of a larger buffer: the
// memory store's, Node's pool) and every body once the worker has failed are hashed on this
// thread.

import { createHash } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { StorageError } from '../storage-error.ts';

/** Smaller bodies are hashed here: moving them costs about what hashing them does. */
export const OFF_THREAD_MIN_BYTES = 64 * 1024;
/**
 * A hash not back by then (1 MiB takes under a millisecond) means the thread is stuck: it is
 * stopped and failed, as if it had died, so that no read waits on it for ever.
 */
export const HASH_TIMEOUT_MS = 10_000;

/** The parts of a body its checksum covers: its first `coveredEnd` bytes, `identity`, then from `payloadStart` on. */
export interface HashedParts {
  readonly coveredEnd: number;
  readonly identity: Buffer;
  readonly payloadStart: number;
}

/** The worker: CommonJS evaluated from this string (no file to find once compiled). */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
parentPort.on('message', ({ id, buffer, coveredEnd, identity, payloadStart }) => {
  const bytes = new Uint8Array(buffer);
  const digest = createHash('sha256').update(bytes.subarray(0, coveredEnd)).update(identity).update(bytes.subarray(payloadStart)).digest();
  parentPort.postMessage({ id, buffer, digest }, [buffer]);
});
`;

interface Reply { id: number; buffer: ArrayBuffer; digest: Uint8Array }

/** SHA-256 over the covered parts of `body`, on this thread. */
export function hashHere(body: Buffer, parts: HashedParts): Buffer {
  return hashOf(body.subarray(0, parts.coveredEnd), parts.identity, body.subarray(parts.payloadStart));
}

/** SHA-256 of the covered header bytes, the identity and the payload, held apart (ObjectCodec.encode); on this thread. */
export function hashOf(covered: Buffer, identity: Buffer, payload: Buffer): Buffer {
  return createHash('sha256').update(covered).update(identity).update(payload).digest();
}

/** Exported for tests (a worker from another source); the gateway uses hashOffThread(). */
export class HashWorker {
  private worker: Worker | undefined;
  private failed = false;
  private nextId = 0;
  private readonly pending = new Map<number, { resolve: (reply: Reply) => void; reject: (err: Error) => void }>();
  private readonly source: string;
  private readonly timeoutMs: number;

  constructor(source = WORKER_SOURCE, timeoutMs = HASH_TIMEOUT_MS) {
    this.source = source;
    this.timeoutMs = timeoutMs;
  }

  /** The digest, and the body (its memory back from the worker). */
  async hash(body: Buffer, parts: HashedParts): Promise<{ digest: Buffer; body: Buffer }> {
    if (this.failed || body.length < OFF_THREAD_MIN_BYTES || body.byteOffset !== 0 || body.byteLength !== body.buffer.byteLength
      || !(body.buffer instanceof ArrayBuffer)) {
      return { digest: hashHere(body, parts), body };
    }
    const worker = this.start();
    const id = this.nextId++;
    const reply = new Promise<Reply>((resolve, reject) => this.pending.set(id, { resolve, reject }));
    if (this.pending.size === 1) worker.ref();
    const { buffer } = body;
    worker.postMessage({ id, buffer, coveredEnd: parts.coveredEnd, identity: parts.identity, payloadStart: parts.payloadStart }, [buffer]);
    const timer = setTimeout(() => {
      if (this.worker !== worker) return;
      this.fail(new Error(`no answer in ${this.timeoutMs} ms`));
      void worker.terminate();
    }, this.timeoutMs);
    const done = await reply.finally(() => clearTimeout(timer));
    return { digest: Buffer.from(done.digest.buffer, done.digest.byteOffset, done.digest.byteLength), body: Buffer.from(done.buffer) };
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    const worker = new Worker(this.source, { eval: true });
    worker.unref();
    worker.on('message', (reply: Reply) => {
      const waiter = this.pending.get(reply.id);
      this.pending.delete(reply.id);
      if (this.pending.size === 0) worker.unref();
      waiter?.resolve(reply);
    });
    worker.on('error', (err: Error) => this.fail(err));
    worker.on('exit', (code) => { if (this.pending.size > 0 || !this.failed) this.fail(new Error(`it exited with code ${code}`)); });
    this.worker = worker;
    return worker;
  }

  /**
   * The bodies the thread held are gone with it: their callers get EIO (a read fetches the
   * object again); everything from now on is hashed on this thread.
   */
  private fail(err: Error): void {
    this.failed = true;
    this.worker = undefined;
    for (const waiter of this.pending.values()) waiter.reject(new StorageError('EIO', `the hashing thread failed: ${err.message}`));
    this.pending.clear();
  }
}

const shared = new HashWorker();

/**
 * SHA-256 over the covered parts of `body`, off this thread when it is large and owns its
 * memory. Resolves the digest and the body to go on with: `body` itself may be empty by then.
 */
export function hashOffThread(body: Buffer, parts: HashedParts): Promise<{ digest: Buffer; body: Buffer }> {
  return shared.hash(body, parts);
}
