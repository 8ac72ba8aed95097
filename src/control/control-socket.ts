// The running gateway's control socket: `<cache-dir>/control.sock`, a Unix socket only its
// user may open (mode 0600), through which commands such as `s3nbd snapshot create` ask the
// gateway that holds the volume to act, rather than taking the volume from it.
//
// One request per connection: a line of JSON {"op": "...", ...}, answered by a line of JSON,
// {"ok": true, "result": ...} or {"ok": false, "code": "S3NBD_...", "message": "...", "fix": "..."}
// (a UserError, re-thrown as one by the caller), then the connection is closed. A request
// line is at most MAX_REQUEST_BYTES; an op may take long (a snapshot waits for its uploads),
// so the caller waits as long as it takes, and a gateway that stops answers it with an error.

import { chmod, rm } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { Errors, UserError } from '../errors.ts';

export const CONTROL_SOCKET = 'control.sock';
const MAX_REQUEST_BYTES = 64 * 1024;
/** Unix socket paths longer than this do not fit sockaddr_un on Linux. */
const MAX_SOCKET_PATH = 107;

export interface ControlRequest {
  readonly op: string;
  readonly [field: string]: unknown;
}

export type ControlHandler = (request: ControlRequest) => Promise<unknown>;

export function controlSocketPath(cacheDir: string): string {
  return join(cacheDir, CONTROL_SOCKET);
}

/**
 * Listens on the cache directory's control socket; returns its close(), or undefined when the
 * path is too long for a Unix socket (logged: commands then fall back to the idle path).
 * Call only while holding the cache directory's lock: a socket left by a killed gateway is
 * removed first.
 */
export async function listenControl(cacheDir: string, handler: ControlHandler, log: Logger): Promise<(() => Promise<void>) | undefined> {
  const path = controlSocketPath(cacheDir);
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH) {
    log.warn({ path }, 'no control socket: the cache directory\'s path is too long for a Unix socket; snapshot commands cannot reach this gateway');
    return undefined;
  }
  await rm(path, { force: true });
  const open = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    open.add(socket);
    socket.on('close', () => open.delete(socket));
    serve(socket, handler, log);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve());
  });
  await chmod(path, 0o600);
  return async () => {
    // A request still waiting (a snapshot's uploads) is cut off: its caller hears the gateway stopped.
    for (const socket of open) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await rm(path, { force: true });
  };
}

function serve(socket: net.Socket, handler: ControlHandler, log: Logger): void {
  let input = '';
  socket.setEncoding('utf8');
  socket.on('error', () => undefined); // the caller went away: nothing to answer
  socket.on('data', (chunk: string) => {
    input += chunk;
    const end = input.indexOf('\n');
    if (end < 0 && input.length <= MAX_REQUEST_BYTES) return;
    socket.removeAllListeners('data');
    void answer(end < 0 ? undefined : input.slice(0, end), handler, log).then((reply) => socket.end(`${JSON.stringify(reply)}\n`));
  });
}

async function answer(line: string | undefined, handler: ControlHandler, log: Logger): Promise<unknown> {
  let request: ControlRequest;
  try {
    request = JSON.parse(line ?? '') as ControlRequest;
    if (typeof request.op !== 'string') throw new Error('no op');
  } catch {
    return { ok: false, message: 'not a control request (one line of JSON with an "op")' };
  }
  try {
    return { ok: true, result: await handler(request) };
  } catch (err) {
    if (err instanceof UserError) return { ok: false, code: err.code, message: err.message, fix: err.fix };
    log.error({ err, op: request.op }, 'control request failed');
    return { ok: false, message: err instanceof Error ? err.message : String(err) };
  }
}

/**
 * Asks the gateway on `cacheDir` to carry out `request`; resolves its result. Resolves
 * undefined when no gateway listens there (no socket, or one left by a gateway that is gone).
 */
export async function callGateway(cacheDir: string, request: ControlRequest): Promise<unknown> {
  const path = controlSocketPath(cacheDir);
  const reply = await new Promise<string | undefined>((resolve, reject) => {
    const socket = net.connect(path);
    let output = '';
    let connected = false;
    socket.setEncoding('utf8');
    socket.on('connect', () => {
      connected = true;
      socket.write(`${JSON.stringify(request)}\n`);
    });
    socket.on('data', (chunk: string) => { output += chunk; });
    socket.on('end', () => resolve(output));
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (connected) reject(Errors.gatewayStopped(path));
      else if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') resolve(undefined);
      else reject(err);
    });
  });
  if (reply === undefined) return undefined;
  let parsed: { ok?: boolean; result?: unknown; code?: string; message?: string; fix?: string };
  try {
    parsed = JSON.parse(reply) as typeof parsed;
  } catch {
    throw Errors.gatewayStopped(path);
  }
  if (parsed.ok === true) return parsed.result;
  if (parsed.code !== undefined) throw new UserError(parsed.code, parsed.message ?? '', parsed.fix ?? '');
  throw new Error(`the gateway refused the request: ${parsed.message ?? 'no reason given'}`);
}
